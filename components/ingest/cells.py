"""A cell's value: its canonical text (what the split hashes), as a number, as a tf.train.Feature."""
import hashlib
from typing import List

INT64, FLOAT, BYTES = "int64", "float", "bytes"
TRUE_TEXT, FALSE_TEXT = frozenset(["True", "TRUE", "true"]), frozenset(["False", "FALSE", "false"])


def canonical(value) -> str:
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


def canonical_column(series) -> List[str]:
    """canonical for a whole column, with a fast path for float columns."""
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
    return [canonical(v) for v in series.tolist()]


def digest(text: str) -> int:
    # md5 of the canonical text: stable across processes and machines (unlike hash()).
    return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:8], "big")


def number(text: str):
    """(is_int, float value) of a cell's text that reads as a number, None for text."""
    if "_" in text:   # int() and float() take '1_000'; a CSV reader does not
        return None
    try:
        return True, float(int(text))
    except ValueError:
        pass
    try:
        return False, float(text)
    except ValueError:
        return None


def feature(value, kind: str):
    """One cell as a tf.train.Feature of its column's type: a value pandas read, or a cell's text."""
    import tensorflow as tf
    if kind == INT64:
        if isinstance(value, str):
            value = 1 if value in TRUE_TEXT else 0 if value in FALSE_TEXT else _int(value)
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
    if kind == FLOAT:
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
    data = value if isinstance(value, bytes) else canonical(value).encode("utf-8")
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:   # '3.0' in an integer column
        return int(float(text))
