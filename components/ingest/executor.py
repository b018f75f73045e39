"""Ingest: a CSV or Parquet table -> train/eval GZIP TFRecords of tf.train.Example."""
import hashlib
import json
import math
import os
from typing import Dict, List, Sequence

from kfx_components.common import io

PROBLEM_TYPES = ("binary", "multiclass", "regression")
EXPRESSION_LABEL_KEY = "label"
_READERS = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet"}
INT64, FLOAT, BYTES = "int64", "float", "bytes"


def _reader_for(path: str) -> str:
    lower = path.lower()
    for ext, kind in _READERS.items():
        if lower.endswith(ext):
            return kind
    raise ValueError(f"data_path {path}: unsupported file type (expected one of {', '.join(_READERS)})")


def _resolve_data_path(data_path: str) -> str:
    """The data file; a directory holding exactly one supported file is accepted too
    (a runner may hand over an artifact directory)."""
    if os.path.isdir(data_path):
        found = [f for f in sorted(os.listdir(data_path))
                 if not f.startswith(".") and any(f.lower().endswith(e) for e in _READERS)]
        if len(found) != 1:
            raise ValueError(f"data_path {data_path} is a directory holding {len(found)} CSV/Parquet files; expected one")
        return os.path.join(data_path, found[0])
    if not os.path.isfile(data_path):
        raise ValueError(f"data_path {data_path}: file not found")
    return data_path


def _read(path: str):
    import pandas as pd
    kind = _reader_for(path)
    try:
        return pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError as e:
        raise ValueError(f"data_path {path}: no data ({e})") from e


def _canon(value) -> str:
    """A value's text, identical for CSV and Parquet reads and across machines."""
    if value is None:
        return ""
    try:
        import pandas as pd
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "true" if value else "false"
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        f = float(value)
        return str(int(f)) if f.is_integer() and abs(f) < 2 ** 63 else repr(f)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _canon_column(series) -> List[str]:
    """_canon for a whole column, with a fast path for float columns."""
    from pandas.api import types
    if types.is_float_dtype(series.dtype):
        out = []
        for f in series.tolist():
            if f != f:
                out.append("")
            elif f.is_integer() and abs(f) < 2 ** 63:
                out.append(str(int(f)))
            else:
                out.append(repr(f))
        return out
    if types.is_integer_dtype(series.dtype) and not series.isna().any():
        return [str(v) for v in series.tolist()]
    return [_canon(v) for v in series.tolist()]


def _is_eval(key: str, eval_ratio: float) -> bool:
    # md5 of the canonical text: stable across processes and machines (unlike hash()).
    digest = hashlib.md5(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < eval_ratio


def _column_type(series) -> str:
    import pandas as pd
    from pandas.api import types
    if types.is_bool_dtype(series) and not series.isna().any():
        return INT64
    if types.is_integer_dtype(series):
        return INT64
    if types.is_float_dtype(series):
        # pandas reads an integer column with missing cells as float; keep such codes
        # (census tracts, ids) int64, since float32 would merge codes above 2**24.
        present = series.dropna()
        if len(present) and (present == present.round()).all() and present.abs().max() < 2 ** 63:
            return INT64
        return FLOAT
    if types.is_numeric_dtype(series) and not types.is_complex_dtype(series):
        return FLOAT
    if isinstance(series.dtype, pd.BooleanDtype):  # nullable boolean with missing cells
        return FLOAT
    return BYTES


def _label_text(value) -> str:
    return _canon(value)


def _sort_key(value):
    # Numbers sort numerically (class 10 after class 2), everything else as text.
    if isinstance(value, (bool, int, float)) or type(value).__name__.startswith(("int", "float", "bool")):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _label(df, label: str, drop_columns: Sequence[str]):
    """(label_key, label Series) for a column name or a DataFrame.eval expression."""
    import pandas as pd
    if label in df.columns:
        return label, df[label]
    if label.isidentifier():
        raise ValueError(f"label: column {label!r} not found (columns: {', '.join(map(str, df.columns))})")
    try:
        values = df.eval(label)
    except pd.errors.UndefinedVariableError as e:
        raise ValueError(f"label expression {label!r}: {e} (columns: {', '.join(map(str, df.columns))})") from e
    except Exception as e:  # pandas raises many kinds for a malformed expression
        raise ValueError(f"label expression {label!r} cannot be evaluated: {e}") from e
    if not isinstance(values, pd.Series) or len(values) != len(df):
        raise ValueError(f"label expression {label!r} does not give one value per row")
    if EXPRESSION_LABEL_KEY in df.columns and EXPRESSION_LABEL_KEY not in drop_columns:
        raise ValueError(f"label expression {label!r} is stored as feature {EXPRESSION_LABEL_KEY!r}, "
                         f"but the data already has a column of that name: add it to drop_columns")
    return EXPRESSION_LABEL_KEY, values


def _feature(value, kind: str):
    import tensorflow as tf
    if kind == INT64:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
    if kind == FLOAT:
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
    data = value if isinstance(value, bytes) else _canon(value).encode("utf-8")
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))


def run(data_path: str, examples_dir: str, label: str, problem_type: str, eval_ratio: float = 0.2,
        drop_columns: Sequence[str] = (), split_key: str = "") -> dict:
    """Read the table, encode the label, split by a stable hash, write GZIP TFRecords."""
    import pandas as pd

    # Parameters first: nothing is read or written for a bad call.
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"problem_type {problem_type!r}: expected one of {', '.join(PROBLEM_TYPES)}")
    try:
        eval_ratio = float(eval_ratio)
    except (TypeError, ValueError) as e:
        raise ValueError(f"eval_ratio {eval_ratio!r}: not a number") from e
    if not 0.0 < eval_ratio < 1.0 or math.isnan(eval_ratio):
        raise ValueError(f"eval_ratio {eval_ratio}: must be in (0, 1)")
    if not label or not str(label).strip():
        raise ValueError("label: empty")
    drop_columns = list(drop_columns or ())
    path = _resolve_data_path(data_path)
    df = _read(path)
    if len(df) == 0 or len(df.columns) == 0:
        raise ValueError(f"data_path {path}: no rows")
    df.columns = [str(c) for c in df.columns]

    unknown = [c for c in drop_columns if c not in df.columns]
    if unknown:
        raise ValueError(f"drop_columns: unknown column(s) {', '.join(map(repr, unknown))} in {path}")
    if split_key and split_key not in df.columns:
        raise ValueError(f"split_key: unknown column {split_key!r} in {path}")

    label_key, y = _label(df, label, drop_columns)
    keep = y.notna()
    dropped_rows = int((~keep).sum())
    if not keep.any():
        raise ValueError(f"label {label!r}: every row's label is missing in {path}")

    if problem_type == "regression":
        if not pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y):
            raise ValueError(f"label {label!r}: regression needs a numeric label, got {y.dtype}")
        vocabulary: List[str] = []
        encoded = y.astype("float64")
    else:
        distinct = sorted(y[keep].unique().tolist(), key=_sort_key)
        vocabulary = [_label_text(v) for v in distinct]
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError(f"label {label!r}: class values collide as text: {vocabulary}")
        if problem_type == "binary" and len(vocabulary) != 2:
            raise ValueError(f"label {label!r}: binary needs exactly 2 classes, found {len(vocabulary)}: {vocabulary[:10]}")
        if problem_type == "multiclass" and len(vocabulary) < 2:
            raise ValueError(f"label {label!r}: multiclass needs at least 2 classes, found {vocabulary}")
        index = {v: i for i, v in enumerate(vocabulary)}
        encoded = y.map(lambda v: index[_label_text(v)] if pd.notna(v) else None)

    feature_columns = [c for c in df.columns if c not in drop_columns and c != label_key]
    types: Dict[str, str] = {c: _column_type(df.loc[keep, c]) for c in feature_columns}
    types[label_key] = FLOAT if problem_type == "regression" else INT64

    # Split on the full raw row (or the split key), so the split does not move
    # when drop_columns or the label change.
    key_columns = [_canon_column(df[c]) for c in ([split_key] if split_key else df.columns)]
    is_eval = [_is_eval("\x1f".join(row), eval_ratio) for row in zip(*key_columns)]

    import tensorflow as tf
    records = {io.TRAIN: [], io.EVAL: []}
    columns = {c: df[c].tolist() for c in feature_columns}
    missing = {c: df[c].isna().tolist() for c in feature_columns}
    labels = encoded.tolist()
    kept = keep.tolist()
    for i in range(len(df)):
        if not kept[i]:
            continue
        feats = {}
        for c in feature_columns:
            if missing[c][i]:
                continue  # a missing cell is an absent feature
            feats[c] = _feature(columns[c][i], types[c])
        feats[label_key] = _feature(labels[i], types[label_key])
        ex = tf.train.Example(features=tf.train.Features(feature=feats))
        records[io.EVAL if is_eval[i] else io.TRAIN].append(ex.SerializeToString())

    for split, recs in records.items():
        if not recs:
            raise ValueError(f"eval_ratio {eval_ratio}: the {split} split of {path} is empty "
                             f"({len(df) - dropped_rows} rows); use more data or another ratio")

    with io.Staging() as stage:
        staging = stage.dir(examples_dir)
        for split, recs in records.items():
            io.write_records(io.split_file(staging, split), recs)
        with open(os.path.join(staging, io.COLUMNS_FILE), "w", encoding="utf-8") as f:
            json.dump(types, f, indent=1, sort_keys=True)

    return {
        "label_key": label_key,
        "problem_type": problem_type,
        "num_classes": len(vocabulary),
        "label_vocabulary": vocabulary,
        "rows": len(records[io.TRAIN]) + len(records[io.EVAL]),
        "rows_train": len(records[io.TRAIN]),
        "rows_eval": len(records[io.EVAL]),
        "columns": types,
        "source": str(data_path),
        "dropped_rows": dropped_rows,
    }
