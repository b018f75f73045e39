"""Ingest: a CSV or Parquet table -> train/eval/test GZIP TFRecords of tf.train.Example.

Bad input is refused before anything is written, with a ValueError whose
message is one line: the file, where it applies the line (CSV, counting the
header as line 1) or row (Parquet), the column or parameter, and what to do.
Problems that do not stop the run (a column empty in every row, labels
missing in some rows, small classes) are named warnings: printed to the step
log and returned in the facts under ``warnings``.
"""
import ast
import codecs
import collections
import csv
import dataclasses
import hashlib
import io as _io
import json
import math
import os
import re
import sys
from typing import Dict, List, Optional, Sequence

from kfx_components.common import io, problem

EXPRESSION_LABEL_KEY = "label"
_READERS = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet"}
INT64, FLOAT, BYTES = "int64", "float", "bytes"
# A class needs a row in each of the three splits to be spread over them.
MIN_CLASS_ROWS = len(io.SPLITS)
# Delimiters a mis-saved "CSV" commonly uses instead of commas.
_OTHER_DELIMITERS = (";", "\t", "|")
_SNIFF_BYTES = 16 * 1024
# An object column whose present cells are at least this share numbers is a
# numeric column with stray text (a typo, a unit, a placeholder), not a text column.
NUMERIC_SHARE = 0.9
# Fewer test rows than this give a metric too uncertain to trust on its own.
SMALL_TEST_ROWS = 100
_REGRESSION_BINS = 10
_ROWS_PER_BIN = 50


class IngestError(ValueError):
    """Bad input; the message is always one line (a person reads it in a terminal)."""

    def __init__(self, message: str):
        super().__init__(_one_line(message))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _names(values, limit: int = 20) -> str:
    values = [str(v) for v in values]
    shown = ", ".join(values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _did_you_mean(name: str, columns) -> str:
    import difflib
    close = difflib.get_close_matches(name, [str(c) for c in columns], n=1, cutoff=0.6)
    lowered = [str(c) for c in columns if str(c).lower() == name.lower()]
    match = (lowered or close or [None])[0]
    return f" (did you mean {match!r}?)" if match else ""


def _warn(warnings: List[str], path: str, message: str) -> None:
    # The step's stdout/stderr is its log: the warning is seen there and in the facts
    # (there without the path: the facts' `source` names the file).
    warnings.append(message)
    print(f"warning: {path}: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ reading
def _reader_for(path: str) -> str:
    lower = path.lower()
    for ext, kind in _READERS.items():
        if lower.endswith(ext):
            return kind
    ext = os.path.splitext(path)[1] or "(none)"
    raise IngestError(f"{path}: unsupported file type {ext} (expected {', '.join(_READERS)}); "
                      f"save the table as CSV or Parquet with one of those extensions")


def _resolve_data_path(data_path: str) -> str:
    """The data file; a directory holding exactly one supported file is accepted too
    (a runner may hand over an artifact directory)."""
    if os.path.isdir(data_path):
        found = [f for f in sorted(os.listdir(data_path))
                 if not f.startswith(".") and any(f.lower().endswith(e) for e in _READERS)]
        if len(found) != 1:
            listed = f" ({_names(found)})" if found else ""
            raise IngestError(f"{data_path}: a directory holding {len(found)} CSV/Parquet files{listed}; "
                              f"expected exactly one: point the data at a single file")
        return os.path.join(data_path, found[0])
    if not os.path.isfile(data_path):
        raise IngestError(f"{data_path}: file not found; check the path given as the data")
    return data_path


class Table:
    """A read table and where each of its rows came from in the file."""

    def __init__(self, df, path: str, lines: Optional[List[int]], kind: str):
        self.df, self.path, self.lines, self.kind = df, path, lines, kind

    def where(self, row: int) -> str:
        """'line N' of a CSV file (header = line 1), else 'row N' (1-based data row)."""
        if self.lines is not None:
            return f"line {self.lines[row]}"
        return f"row {row + 1}"


def _read(path: str) -> Table:
    kind = _reader_for(path)
    return _read_csv(path) if kind == "csv" else _read_parquet(path)


def _read_parquet(path: str) -> Table:
    import pandas as pd
    check_parquet_file(path)
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several kinds for a damaged file
        raise IngestError(f"{path}: cannot read the Parquet file ({type(err).__name__}: {err}); "
                          f"export the table again") from err
    check_unique_names(path, [str(c) for c in df.columns])
    if len(df) == 0:
        raise IngestError(f"{path}: the table has columns ({_names(map(str, df.columns))}) but no rows; "
                          f"export the data again")
    return Table(df, path, None, "parquet")


def check_parquet_file(path: str) -> None:
    """Not empty, and the PAR1 marker at both ends (the Beam path reads no further before its passes)."""
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 4))
        tail = f.read(4)
    if size == 0:
        raise IngestError(f"{path}: the file is empty (0 bytes); export the table again")
    if head != b"PAR1" or tail != b"PAR1":
        hint = ""
        with open(path, "rb") as f:
            sample = f.read(4096)
        try:
            if "," in sample.decode("utf-8"):
                hint = " it looks like CSV text: rename it .csv"
        except UnicodeDecodeError:
            pass
        raise IngestError(f"{path}: not a Parquet file (no PAR1 marker at its start and end);"
                          f"{hint or ' export the table again as Parquet, or as CSV'}")


def check_named(path: str, names: List[str], where: str = "the table") -> None:
    """Every column has a name: any non-blank text is taken as it is (keywords, punctuation, unicode;
    components/common/names.py), but a blank one names nothing a request or a parameter could use."""
    blank = [i for i, n in enumerate(names) if not str(n).strip()]
    if blank:
        i = blank[0]
        place = f"after {names[i - 1]!r}" if i else "the first one"
        more = f" (and {len(blank) - 1} more)" if len(blank) > 1 else ""
        raise IngestError(f"{path}: column {i + 1} of {where} ({place}) has no name{more}; name it, or if it "
                          f"is a saved row index leave it out (pandas: to_csv(..., index=False))")


def check_unique_names(path: str, names: List[str]) -> None:
    """Parquet column names: each named, none twice."""
    check_named(path, names)
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise IngestError(f"{path}: column name(s) {_names(map(repr, duplicated))} appear more than once; "
                          f"rename the columns so that each name is unique")


def _decode(raw: bytes, path: str) -> str:
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise IngestError(f"{path}: the file is UTF-16, not UTF-8; save it as UTF-8 CSV") from err
        if raw[:4] == b"PAR1":
            raise IngestError(f"{path}: this is a Parquet file, not CSV; rename it .parquet") from err
        line = raw.count(b"\n", 0, err.start) + 1
        bad = raw[err.start:err.start + 1].hex()
        # Why not guess latin-1: any byte decodes as latin-1, so a wrong guess would
        # silently turn text into different categories; the person knows the encoding.
        raise IngestError(f"{path}: line {line} is not UTF-8 (byte 0x{bad}); save the file as UTF-8, "
                          f"e.g. iconv -f latin1 -t utf-8 (if it is latin-1)") from err


def _check_delimiter(text: str, header: List[str], path: str) -> None:
    """A ';', tab or '|' separated file read as CSV has one column whose name holds them all."""
    sample = text[:_SNIFF_BYTES]
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters="," + "".join(_OTHER_DELIMITERS)).delimiter
    except csv.Error:  # no consistent delimiter in the sample: fall back to counting in the header
        sniffed = max(_OTHER_DELIMITERS, key=lambda d: header[0].count(d)) if len(header) == 1 else ","
    if sniffed == ",":
        return
    first_line = sample.splitlines()[0] if sample else ""
    split = next(csv.reader([first_line], delimiter=sniffed), [])
    if len(split) > len(header):
        shown = {"\t": "a tab"}.get(sniffed, repr(sniffed))
        raise IngestError(f"{path}: the delimiter looks like {shown}, not ',' (the header splits into "
                          f"{len(split)} columns on {shown} but {len(header)} on ','); "
                          f"save the file comma-separated")


def _read_csv(path: str) -> Table:
    import gzip
    import pandas as pd
    try:
        if path.lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise IngestError(f"{path}: cannot read the file ({err}); check that it is a complete CSV"
                          f"{' gzip' if path.lower().endswith('.gz') else ''} file") from err
    if not raw.strip():
        raise IngestError(f"{path}: the file is empty; it needs a header line and data rows")
    text = _decode(raw, path)
    del raw

    # One pass of the csv module: the header, then every record's first line, so a
    # ragged row is named by its line (pandas fills short rows with NaN silently).
    reader = csv.reader(_io.StringIO(text))
    try:
        header = next(reader)
        while not any(h.strip() for h in header):   # leading blank lines, as pandas skips them
            header = next(reader)
        header_line = reader.line_num
        _check_delimiter(text, header, path)
        names = [h.strip() for h in header]
        check_named(path, names, f"line {header_line} (the header)")
        seen: Dict[str, List[int]] = collections.defaultdict(list)
        for position, name in enumerate(names, start=1):
            seen[name].append(position)
        duplicated = {n: p for n, p in seen.items() if len(p) > 1}
        if duplicated:
            # pandas would silently rename the second one to 'x.1'.
            detail = "; ".join(f"{n!r} at positions {', '.join(map(str, p))}" for n, p in duplicated.items())
            raise IngestError(f"{path}: line {header_line} (the header) repeats column name(s): {detail}; "
                              f"rename the columns so that each name is unique")
        lines: List[int] = []
        previous = header_line
        for record in reader:
            start, previous = previous + 1, reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # a blank line: pandas skips it too
            if len(record) != len(header):
                raise IngestError(f"{path}: line {start} has {len(record)} fields but the header has "
                                  f"{len(header)}; fix that row (a missing or extra comma, or an unquoted "
                                  f"comma inside a value)")
            lines.append(start)
    except StopIteration:
        raise IngestError(f"{path}: the file is empty; it needs a header line and data rows") from None
    except csv.Error as err:
        raise IngestError(f"{path}: line {reader.line_num}: not valid CSV ({err}); fix that line") from err
    if not lines:
        raise IngestError(f"{path}: the file has a header ({_names(names)}) but no data rows; "
                          f"add rows below the header")
    try:
        df = pd.read_csv(_io.StringIO(text), skipinitialspace=False)
    except Exception as err:  # pandas' parser disagrees with the csv module: rare, still one line
        raise IngestError(f"{path}: cannot parse the CSV ({type(err).__name__}: {err}); fix the line it names") from err
    df.columns = names   # as written, minus stray spaces around them
    if len(df) != len(lines):   # a record pandas reads differently: line numbers would be off
        lines = None
    return Table(df, path, lines, "csv")


# ------------------------------------------------------------------ values
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


def _digest(text: str) -> int:
    # md5 of the canonical text: stable across processes and machines (unlike hash()).
    return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:8], "big")


# ------------------------------------------------------------------ column types (both engines)
TRUE_TEXT, FALSE_TEXT = frozenset(["True", "TRUE", "true"]), frozenset(["False", "FALSE", "false"])


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


@dataclasses.dataclass
class ColumnCounts:
    """A column's non-missing cells, counted: all its type depends on (``column_type``). The pandas
    path counts a read column (``_column_counts``); the Beam path counts cell by cell and merges."""
    present: int = 0       # non-missing cells
    numbers: int = 0       # cells that read as numbers
    bools: int = 0         # true / false cells
    whole: bool = True     # every number integer-valued
    max_abs: float = 0.0   # the largest |number|
    declared_text: bool = False   # a Parquet string column: its writer said text (codes such as '02134')


def column_type(path: str, name: str, counts: ColumnCounts, warnings: List[str], first_text) -> str:
    """The one typing rule of both engines. All true/false: int64 (0/1). All numbers: int64 when each
    is whole and int64 holds it (codes, ids: float32 would merge codes above 2**24; pandas reads an
    integer column with missing cells as float), else float. Mostly text, or declared text: bytes.
    Empty in every row:
    float, with a warning. Numbers but for a few text cells (at most 1 - NUMERIC_SHARE): an
    IngestError naming the first, ``first_text()`` = (where, value)."""
    if counts.present == 0:
        _warn(warnings, path, f"column {name!r} is empty in every row; it carries no information "
                              f"(add it to drop_columns to silence this warning)")
        return FLOAT
    if counts.declared_text:
        return BYTES
    if counts.bools == counts.present:
        return INT64
    n_text = counts.present - counts.numbers
    if n_text == 0:
        return INT64 if counts.whole and counts.max_abs < 2 ** 63 else FLOAT
    if n_text <= (1 - NUMERIC_SHARE) * counts.present:
        where, value = first_text()
        raise IngestError(f"{path}: column {name!r} is numeric except {n_text} cell(s), first at "
                          f"{where}: {value!r}; fix or empty those cells (an empty cell "
                          f"is a missing value), or add {name!r} to drop_columns")
    return BYTES


def _column_counts(series, parquet: bool):
    """(ColumnCounts, position of the first text cell or None) of a column pandas read: its dtype
    says what a typed column holds; the cells of a text (object) column are read one by one."""
    import pandas as pd
    from pandas.api import types
    present = series.dropna()
    n = len(present)
    dtype = series.dtype
    if n == 0 or types.is_complex_dtype(dtype):
        return ColumnCounts(present=n), (0 if n else None)
    if parquet and (types.is_string_dtype(dtype) and isinstance(present.iloc[0], str)):
        return ColumnCounts(present=n, declared_text=True), None
    if types.is_bool_dtype(dtype) or isinstance(dtype, pd.BooleanDtype):
        return ColumnCounts(present=n, bools=n), None
    if types.is_numeric_dtype(dtype):
        values = present.astype("float64")
        return ColumnCounts(present=n, numbers=n, whole=bool((values == values.round()).all()),
                            max_abs=float(values.abs().max())), None
    counts, first = ColumnCounts(present=n), None
    for position, value in zip(range(len(series)), series.tolist()):
        if value is None or value is pd.NA or (isinstance(value, float) and value != value):
            continue
        if isinstance(value, bool) or type(value).__name__ == "bool_" or \
                (isinstance(value, str) and (value in TRUE_TEXT or value in FALSE_TEXT)):
            counts.bools += 1
        parsed = number(value if isinstance(value, str) else _canon(value)) \
            if not isinstance(value, bool) else None
        if parsed is None:
            first = position if first is None else first
            continue
        counts.numbers += 1
        counts.whole = counts.whole and parsed[1].is_integer()
        counts.max_abs = max(counts.max_abs, abs(parsed[1]))
    return counts, first


def _stray_text(series):
    """(count, first row position, value) of text cells in a mostly numeric text column, else None."""
    import pandas as pd
    from pandas.api import types
    if not types.is_object_dtype(series.dtype):
        return None
    present = series.dropna()
    if present.empty or not all(isinstance(v, str) for v in present.head(1000)):
        return None
    numbers = pd.to_numeric(present, errors="coerce")
    text = numbers.isna()
    n_text = int(text.sum())
    if n_text == 0 or n_text > (1 - NUMERIC_SHARE) * len(present):
        return None
    first = text.idxmax()
    return n_text, series.index.get_loc(first), present[first]


def _sort_key(value):
    # Numbers sort numerically (class 10 after class 2), everything else as text.
    if isinstance(value, (bool, int, float)) or type(value).__name__.startswith(("int", "float", "bool")):
        return (0, float(value), "")
    return (1, 0.0, str(value))


# ------------------------------------------------------------------ label
_ALLOWED_NODES = (ast.Expression, ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Name, ast.Load,
                  ast.Constant, ast.List, ast.Tuple, ast.Call, ast.operator, ast.cmpop, ast.boolop,
                  ast.unaryop)
_BACKTICKED = re.compile(r"`([^`]*)`")


def _math_functions() -> set:
    try:
        from pandas.core.computation.ops import MATHOPS
        return set(MATHOPS)
    except ImportError:  # pragma: no cover - pandas moved it
        return {"sin", "cos", "exp", "log", "sqrt", "abs"}


def _check_expression(label: str, columns: Sequence[str], path: str) -> None:
    """Only column names, constants, arithmetic, comparisons and pandas' math functions.

    pandas.eval allows attribute access (`x.__class__`); a label is data, so it
    gets nothing beyond what a label needs.
    """
    placeholders = {}

    def hide(match):   # `a column name` is pandas' quoting; Python cannot parse it
        name = f"__kfx_col{len(placeholders)}"
        placeholders[name] = match.group(1)
        return name

    source = _BACKTICKED.sub(hide, label)
    listed = f"(columns: {_names(columns)})"
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as err:
        raise IngestError(f"{path}: label {label!r} is neither a column nor an expression that parses "
                          f"({err.msg}); give a column name or an expression such as 'amount > 100' "
                          f"(quote names with spaces in backticks) {listed}") from None
    functions = _math_functions()
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise IngestError(f"{path}: label expression {label!r} uses {type(node).__name__}; only column "
                              f"names, numbers, strings, arithmetic, comparisons and and/or/not are allowed")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in functions
                                               and not node.keywords):
            raise IngestError(f"{path}: label expression {label!r} calls a function other than "
                              f"{_names(sorted(functions))}")
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)}
    unknown = [placeholders.get(n.id, n.id) for n in ast.walk(tree)
               if isinstance(n, ast.Name) and n.id not in called and n.id not in ("True", "False")
               and placeholders.get(n.id, n.id) not in columns]
    if unknown:
        raise IngestError(f"{path}: label expression {label!r} names unknown column(s) "
                          f"{_names(map(repr, dict.fromkeys(unknown)))}{_did_you_mean(unknown[0], columns)} "
                          f"{listed}; fix the column name")


def _label(table: Table, label: str, drop_columns: Sequence[str]):
    """(label_key, label Series) for a column name or a DataFrame.eval expression."""
    import pandas as pd
    df, path = table.df, table.path
    if label in df.columns:
        return label, df[label]
    listed = f"(columns: {_names(df.columns)})"
    if label.strip() in df.columns:
        raise IngestError(f"{path}: label {label!r} has stray spaces; the column is {label.strip()!r}")
    if label.isidentifier():
        raise IngestError(f"{path}: label column {label!r} not found{_did_you_mean(label, df.columns)} "
                          f"{listed}; give one of these or an expression over them")
    _check_expression(label, list(df.columns), path)
    try:
        values = df.eval(label)
    except Exception as err:  # pandas raises many kinds for an expression it cannot evaluate
        raise IngestError(f"{path}: label expression {label!r} cannot be evaluated "
                          f"({type(err).__name__}: {err}); check the column types {listed}") from err
    if not isinstance(values, pd.Series) or len(values) != len(df):
        raise IngestError(f"{path}: label expression {label!r} does not give one value per row; "
                          f"compare or combine columns, e.g. 'amount > 100'")
    if EXPRESSION_LABEL_KEY in df.columns and EXPRESSION_LABEL_KEY not in drop_columns:
        raise IngestError(f"{path}: label expression {label!r} is stored as feature {EXPRESSION_LABEL_KEY!r}, "
                          f"but the data already has a column of that name: add it to drop_columns")
    return EXPRESSION_LABEL_KEY, values


def _feature(value, kind: str):
    """One cell as a tf.train.Feature of its column's type: a value pandas read, or a cell's text."""
    import tensorflow as tf
    if kind == INT64:
        if isinstance(value, str):
            value = 1 if value in TRUE_TEXT else 0 if value in FALSE_TEXT else _int(value)
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
    if kind == FLOAT:
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
    data = value if isinstance(value, bytes) else _canon(value).encode("utf-8")
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:   # '3.0' in an integer column
        return int(float(text))


# ------------------------------------------------------------------ split
def _round(x: float) -> int:
    # Half up, not Python's half-to-even: the counts are what the docs promise.
    return int(math.floor(x + 0.5))


def _take(n: int, eval_ratio: float, test_ratio: float):
    """(test, eval) rows of a stratum of n >= MIN_CLASS_ROWS rows: at least one each, train keeps one."""
    n_test, n_eval = max(1, _round(n * test_ratio)), max(1, _round(n * eval_ratio))
    while n_test + n_eval > n - 1:
        if n_test >= n_eval:
            n_test -= 1
        else:
            n_eval -= 1
    return n_test, n_eval


def _assign_ranked(order: List[int], n_test: int, n_eval: int, split_of: List[Optional[str]]) -> None:
    for rank, i in enumerate(order):
        split_of[i] = io.TEST if rank < n_test else io.EVAL if rank < n_test + n_eval else io.TRAIN


def _split(rows: List[int], digests: List[int], texts: List[str], *, problem_type: str, encoded,
           group_texts: Optional[List[str]], eval_ratio: float, test_ratio: float):
    """split name per row index (None for rows not kept) and a description of the method.

    Every ordering is by (md5 digest, canonical text): the same rows give the
    same splits on any machine and in any file order.
    """
    split_of: List[Optional[str]] = [None] * len(digests)
    small: List[int] = []
    if group_texts is not None:
        # Groups never straddle splits: walk groups in hash order, filling test, then eval.
        groups: Dict[str, List[int]] = collections.defaultdict(list)
        for i in rows:
            groups[group_texts[i]].append(i)
        want_test, want_eval = _round(len(rows) * test_ratio), _round(len(rows) * eval_ratio)
        n_test = n_eval = 0
        for key in sorted(groups, key=lambda k: (_digest(k), k)):
            members = groups[key]
            if n_test < want_test:
                split, n_test = io.TEST, n_test + len(members)
            elif n_eval < want_eval:
                split, n_eval = io.EVAL, n_eval + len(members)
            else:
                split = io.TRAIN
            for i in members:
                split_of[i] = split
        return split_of, small, f"grouped by split_key ({len(groups)} groups)"

    if problem_type == "regression":
        # Bins of the label's quantiles: each split spans the label's whole range, so a
        # few extreme labels cannot all land in (and dominate) a small test split.
        bins = max(1, min(_REGRESSION_BINS, len(rows) // _ROWS_PER_BIN))
        by_label = sorted(rows, key=lambda i: (encoded[i], digests[i], texts[i]))
        strata: Dict[int, List[int]] = collections.defaultdict(list)
        for position, i in enumerate(by_label):
            strata[position * bins // len(rows)].append(i)
        method = f"stratified by label quantile ({bins} bins)" if bins > 1 else "by row hash"
    else:
        strata = collections.defaultdict(list)
        for i in rows:
            strata[encoded[i]].append(i)
        method = "stratified by label"
    for stratum, members in sorted(strata.items()):
        members.sort(key=lambda i: (digests[i], texts[i]))
        if len(members) < MIN_CLASS_ROWS:
            if problem_type != "regression":
                small.append(stratum)
            _assign_ranked(members, 0, 0, split_of)
            continue
        _assign_ranked(members, *_take(len(members), eval_ratio, test_ratio), split_of)
    return split_of, small, method


# ------------------------------------------------------------------ parameters
def _ratio(name: str, value, path: str) -> float:
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise IngestError(f"{path}: {name} {value!r} is not a number; give a fraction such as 0.2") from None
    if math.isnan(ratio) or not 0.0 < ratio < 1.0:
        raise IngestError(f"{path}: {name} {value!r} must be between 0 and 1 (exclusive); "
                          f"give a fraction such as 0.2")
    return ratio


ENGINES = ("auto", "pandas", "beam")
# engine="auto": tables from this size up stream through Beam (beam_path.py); smaller ones are
# read whole by pandas (faster to start, and the reference the Beam path is tested against).
BEAM_MIN_BYTES = 64 * 2 ** 20   # KFX_INGEST_BEAM_MIN_BYTES overrides it


def _beam_min_bytes() -> int:
    raw = os.environ.get("KFX_INGEST_BEAM_MIN_BYTES", "").strip()
    if raw and not raw.isdigit():
        raise IngestError(f"KFX_INGEST_BEAM_MIN_BYTES={raw!r} is not a whole number of bytes")
    return int(raw) if raw else BEAM_MIN_BYTES


def run(data_path: str, examples_dir: str, label: str, problem_type: str, eval_ratio: float = 0.15,
        test_ratio: float = 0.2, drop_columns: Sequence[str] = (), split_key: str = "",
        engine: str = "auto", beam_pipeline_args: Sequence[str] = ()) -> dict:
    """Read the table, encode the label, split train/eval/test, write GZIP TFRecords.

    engine: "pandas" reads the table whole; "beam" streams it through two Beam pipelines
    (run with beam_pipeline_args, as validate/transform/evaluate are); "auto" (the default)
    takes Beam for files of at least KFX_INGEST_BEAM_MIN_BYTES (64 MiB) without a split_key.
    Raises ValueError (IngestError) with a one-line message for any bad input;
    nothing is written then.
    """
    try:
        return _run(data_path, examples_dir, label, problem_type, eval_ratio, test_ratio,
                    drop_columns, split_key, engine, beam_pipeline_args)
    except IngestError:
        raise
    except Exception as err:  # noqa: BLE001 - a failure nobody foresaw still reads as one line
        raise IngestError(f"{data_path}: ingest failed unexpectedly ({type(err).__name__}: {err}); "
                          f"the step log has the traceback") from err


def _use_beam(path: str, engine: str, split_key: str) -> bool:
    if engine == "pandas":
        return False
    if engine == "beam":
        if split_key:
            raise IngestError(f"{path}: split_key is handled by the pandas engine only; "
                              f"use engine 'pandas' or 'auto' with a split_key")
        return True
    if split_key:
        return False
    size = os.path.getsize(path)
    if path.lower().endswith(".gz"):
        size *= 5   # about what gzip saves on CSV
    return size >= _beam_min_bytes()


def _run(data_path, examples_dir, label, problem_type, eval_ratio, test_ratio, drop_columns, split_key,
         engine="auto", beam_pipeline_args=()) -> dict:
    # Parameters first: nothing is read or written for a bad call.
    eval_ratio, test_ratio, drop_columns, split_key = _check_parameters(
        data_path, label, problem_type, eval_ratio, test_ratio, drop_columns, split_key, engine)
    path = _resolve_data_path(data_path)
    if _use_beam(path, engine, split_key):
        from kfx_components.ingest import beam_path
        return beam_path.run(path, data_path, examples_dir, label, problem_type, eval_ratio, test_ratio,
                             drop_columns, beam_pipeline_args)
    warnings: List[str] = []
    table = _read(path)
    table.df.columns = [str(c) for c in table.df.columns]
    names = list(table.df.columns)
    check_drop_columns(path, names, drop_columns)
    if split_key and split_key not in names:
        raise IngestError(f"{path}: split_key {split_key!r} is not a column{_did_you_mean(split_key, names)} "
                          f"(columns: {_names(names)})")

    label_key, y = _label(table, label, drop_columns)
    keep, dropped_rows = _rows_with_label(table, y, label, warnings)
    vocabulary, encoded = _encode_label(table, y, keep, label, problem_type, warnings)
    feature_columns = feature_columns_of(path, names, drop_columns, label_key)
    types = _column_types(table, feature_columns, warnings)
    types[label_key] = label_type(problem_type)

    kept_rows = [i for i, k in enumerate(keep.tolist()) if k]
    split_of, small, method = _split_table(table, kept_rows, encoded, problem_type, split_key,
                                           eval_ratio, test_ratio, warnings)
    small_classes = [vocabulary[c] for c in small]
    rows = collections.Counter(split_of[i] for i in kept_rows)
    check_split_sizes(path, label, problem_type, rows, small_classes, warnings)

    records = _serialized_examples(table.df, kept_rows, feature_columns, types, label_key, encoded, split_of)
    _write_examples(examples_dir, records, types)
    return ingest_facts(
        label_key=label_key, problem_type=problem_type, vocabulary=vocabulary, rows=rows, types=types,
        data_path=data_path, dropped_rows=dropped_rows, eval_ratio=eval_ratio, test_ratio=test_ratio,
        split_method=method, warnings=warnings, classes_only_in_train=small_classes,
        class_counts=_class_counts(vocabulary, encoded, kept_rows, split_of), dropped_columns=drop_columns,
        empty_columns=[c for c in feature_columns if not table.df[c].notna().any()])


# ------------------------------------------------------------------ the steps of the pandas path
def _check_parameters(data_path, label, problem_type, eval_ratio, test_ratio, drop_columns, split_key, engine):
    """(eval_ratio, test_ratio, drop_columns, split_key), checked and normalised."""
    if problem_type not in problem.PROBLEM_TYPES:
        raise IngestError(f"{data_path}: problem_type {problem_type!r} is not one of "
                          f"{', '.join(problem.PROBLEM_TYPES)}")
    eval_ratio = _ratio("eval_ratio", eval_ratio, data_path)
    test_ratio = _ratio("test_ratio", test_ratio, data_path)
    if eval_ratio + test_ratio >= 1.0:
        raise IngestError(f"{data_path}: eval_ratio {eval_ratio} + test_ratio {test_ratio} = "
                          f"{eval_ratio + test_ratio:g} leaves no rows to train on; make their sum below 1")
    if not isinstance(label, str) or not label.strip():
        raise IngestError(f"{data_path}: label is empty; give the label column or an expression")
    if isinstance(drop_columns, str):
        drop_columns = [drop_columns]
    drop_columns = [str(c) for c in (drop_columns or ())]
    if engine not in ENGINES:
        raise IngestError(f"{data_path}: engine {engine!r} is not one of {', '.join(ENGINES)}")
    return eval_ratio, test_ratio, drop_columns, str(split_key or "")


def _rows_with_label(table: Table, y, label: str, warnings: List[str]):
    """(which rows have a label, as a boolean Series; how many do not, and are dropped)."""
    keep = y.notna()
    dropped_rows = int((~keep).sum())
    check_missing_labels(table.path, label, dropped_rows, not keep.any(),
                         lambda: table.where(int((~keep).to_numpy().argmax())), warnings)
    return keep, dropped_rows


def _encode_label(table: Table, y, keep, label: str, problem_type: str, warnings: List[str]):
    """(class vocabulary, each row's label as it is stored): the number for regression, else the
    class's index in the vocabulary (None where the label is missing)."""
    import pandas as pd
    path = table.path
    if problem_type == "regression":
        if not pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y):
            stray = _stray_text(y)
            raise label_not_numeric(path, label, (stray[0], table.where(stray[1]), stray[2]) if stray else None)
        return [], y.astype("float64").tolist()
    stray = _stray_text(y)
    if stray:   # '1', '2', '3' and one 'x' is likely a typo, but may be a real rare class: say so
        _warn(warnings, path, f"label {label!r} is numeric except {stray[0]} cell(s), first at "
                              f"{table.where(stray[1])}: {stray[2]!r}; they are taken as classes of "
                              f"their own (fix or empty them if they are typos)")
    distinct = sorted(y[keep].unique().tolist(), key=_sort_key)
    vocabulary = [_canon(v) for v in distinct]
    if len(set(vocabulary)) != len(vocabulary):
        raise IngestError(f"{path}: label {label!r} has class values that collide as text: {vocabulary[:10]}")
    check_class_count(path, label, problem_type, vocabulary)
    index = {v: i for i, v in enumerate(vocabulary)}
    return vocabulary, [index[_canon(v)] if k else None for v, k in zip(y.tolist(), keep.tolist())]


def _column_types(table: Table, feature_columns: List[str], warnings: List[str]) -> Dict[str, str]:
    df = table.df
    types: Dict[str, str] = {}
    for c in feature_columns:
        counts, first = _column_counts(df[c], table.kind == "parquet")
        types[c] = column_type(table.path, c, counts, warnings, lambda: (table.where(first), df[c].iloc[first]))
    return types


def _split_table(table: Table, kept_rows: List[int], encoded, problem_type: str, split_key: str,
                 eval_ratio: float, test_ratio: float, warnings: List[str]):
    """_split of the kept rows: (split name per row, small classes, method). Refuses a split left
    empty by whole groups (split_key) here, where the groups are known; check_split_sizes the rest."""
    df, path = table.df, table.path
    # Hash the full raw row (or the split key), so the split does not move when
    # drop_columns or the label change.
    texts = ["\x1f".join(row) for row in zip(*[_canon_column(df[c]) for c in df.columns])]
    digests = [_digest(t) for t in texts]
    group_texts = _canon_column(df[split_key]) if split_key else None
    if split_key and df[split_key].isna().any():
        _warn(warnings, path, f"split_key {split_key!r} is missing in {int(df[split_key].isna().sum())} "
                              f"row(s); they form one group")
    split_of, small, method = _split(kept_rows, digests, texts, problem_type=problem_type, encoded=encoded,
                                     group_texts=group_texts, eval_ratio=eval_ratio, test_ratio=test_ratio)
    counts = collections.Counter(split_of[i] for i in kept_rows)
    if split_key and any(counts[s] == 0 for s in io.SPLITS):
        raise empty_split(path, counts, f"split_key {split_key!r} has "
                                        f"{len(set(group_texts[i] for i in kept_rows))} group(s); "
                                        f"whole groups go to one split")
    return split_of, small, method


def _serialized_examples(df, kept_rows: List[int], feature_columns: List[str], types: Dict[str, str],
                         label_key: str, encoded, split_of) -> Dict[str, List[bytes]]:
    """The serialized tf.train.Example of each kept row, per split."""
    import tensorflow as tf
    records: Dict[str, List[bytes]] = {s: [] for s in io.SPLITS}
    columns = {c: df[c].tolist() for c in feature_columns}
    missing = {c: df[c].isna().tolist() for c in feature_columns}
    for i in kept_rows:
        feats = {}
        for c in feature_columns:
            if missing[c][i]:
                continue  # a missing cell is an absent feature
            feats[c] = _feature(columns[c][i], types[c])
        feats[label_key] = _feature(encoded[i], types[label_key])
        ex = tf.train.Example(features=tf.train.Features(feature=feats))
        records[split_of[i]].append(ex.SerializeToString())
    return records


def _write_examples(examples_dir: str, records: Dict[str, List[bytes]], types: Dict[str, str]) -> None:
    with io.Staging() as stage:
        staging = stage.dir(examples_dir)
        for split, recs in records.items():
            io.write_records(io.split_file(staging, split), recs)
        write_columns_file(staging, types)


def _class_counts(vocabulary: List[str], encoded, kept_rows: List[int], split_of) -> Optional[dict]:
    """Rows per class per split; None for regression (no vocabulary)."""
    if not vocabulary:
        return None
    per_split = {s: collections.Counter(encoded[i] for i in kept_rows if split_of[i] == s) for s in io.SPLITS}
    return {s: {v: per_split[s][c] for c, v in enumerate(vocabulary)} for s in io.SPLITS}


# ------------------------------------------------------------------ steps of both engines
def check_drop_columns(path: str, names: List[str], drop_columns: Sequence[str]) -> None:
    unknown = [c for c in drop_columns if c not in names]
    if unknown:
        raise IngestError(f"{path}: drop_columns names unknown column(s) {_names(map(repr, unknown))}"
                          f"{_did_you_mean(unknown[0], names)} (columns: {_names(names)})")


def feature_columns_of(path: str, names: List[str], drop_columns: Sequence[str], label_key: str) -> List[str]:
    """The columns stored as features: all but the dropped ones and the label; at least one."""
    feature_columns = [c for c in names if c not in drop_columns and c != label_key]
    if not feature_columns:
        raise IngestError(f"{path}: no feature columns left besides the label (columns: {_names(names)}); "
                          f"the table needs at least one column to learn from (check drop_columns)")
    return feature_columns


def check_missing_labels(path: str, label: str, missing: int, none_left: bool, first_missing,
                         warnings: List[str]) -> None:
    """Refuses a table with no usable label; warns of the rows dropped for a missing label
    (``first_missing()`` says where the first is)."""
    if none_left:
        raise IngestError(f"{path}: label {label!r} is missing in every row; check the label column")
    if missing:
        _warn(warnings, path, f"label {label!r} is missing in {missing} row(s) (first at {first_missing()}); "
                              f"those rows are dropped")


def label_not_numeric(path: str, label: str, text_cells=None) -> IngestError:
    """The error for a regression label that is text; text_cells = (count, where the first is, its value)."""
    at = f" ({text_cells[0]} cell(s) are text, first at {text_cells[1]}: {text_cells[2]!r})" if text_cells else ""
    return IngestError(f"{path}: label {label!r} is not numeric{at}; regression needs a numeric label: "
                       f"fix the cells or choose problem_type binary/multiclass")


def check_class_count(path: str, label: str, problem_type: str, vocabulary: List[str]) -> None:
    if problem_type == "binary" and len(vocabulary) != 2:
        found = f"only one class ({vocabulary[0]!r})" if len(vocabulary) == 1 else \
            f"{len(vocabulary)} classes ({_names(map(repr, vocabulary), 10)})"
        todo = "use problem_type multiclass" if len(vocabulary) > 2 else \
            "check the label (or its expression) and that the file holds rows of both classes"
        raise IngestError(f"{path}: label {label!r} has {found}; binary needs exactly 2: {todo}")
    if problem_type == "multiclass" and len(vocabulary) < 2:
        raise IngestError(f"{path}: label {label!r} has only one class ({vocabulary[0]!r}); "
                          f"multiclass needs at least 2: check the label")


def label_type(problem_type: str) -> str:
    return FLOAT if problem_type == "regression" else INT64


def empty_split(path: str, rows, cause: str) -> IngestError:
    """The error for a split with no rows; rows: the row count per split."""
    empty = [s for s in io.SPLITS if rows[s] == 0]
    per = ", ".join(f"{rows[s]} {s}" for s in io.SPLITS)
    which = " and ".join(empty)
    return IngestError(f"{path}: the {which} split{'s' if len(empty) > 1 else ''} would be empty "
                       f"({sum(rows[s] for s in io.SPLITS)} usable rows: {per}; {cause}); "
                       f"add rows, or change eval_ratio/test_ratio")


def check_split_sizes(path: str, label: str, problem_type: str, rows, small_classes: List[str],
                      warnings: List[str]) -> None:
    """Refuses a stratified split with an empty split; warns of the classes in train only and of a
    small test split. rows: the row count per split."""
    if any(rows[s] == 0 for s in io.SPLITS):
        raise empty_split(path, rows, "too few rows" if problem_type == "regression" else
                          f"a class needs at least {MIN_CLASS_ROWS} rows to reach every split")
    if small_classes:
        _warn(warnings, path, f"class(es) {_names(map(repr, small_classes))} of label {label!r} have fewer than "
                              f"{MIN_CLASS_ROWS} rows; they are in the train split only (not evaluated)")
    if rows[io.TEST] < SMALL_TEST_ROWS:
        _warn(warnings, path, f"the test split has only {rows[io.TEST]} rows; a metric on so few rows is "
                              f"uncertain (more data or a larger test_ratio narrows it)")


def write_columns_file(staging: str, types: Dict[str, str]) -> None:
    with open(os.path.join(staging, io.COLUMNS_FILE), "w", encoding="utf-8") as f:
        json.dump(types, f, indent=1, sort_keys=True)


def ingest_facts(*, label_key: str, problem_type: str, vocabulary: List[str], rows, types: Dict[str, str],
                 data_path: str, dropped_rows: int, eval_ratio: float, test_ratio: float, split_method: str,
                 warnings: List[str], class_counts: Optional[dict], classes_only_in_train: List[str],
                 engine: Optional[str] = None, dropped_columns: Sequence[str] = (),
                 empty_columns: Sequence[str] = ()) -> dict:
    """What the step reports (the examples artifact's metadata); rows: the row count per split.
    The pandas path, the reference, names no engine. What was left out of the file (rows and
    columns, beside its row count) is counted by facts.left_out, and its summary ends the run."""
    from kfx_components.common.facts import left_out
    facts = {
        "label_key": label_key,
        "problem_type": problem_type,
        "num_classes": len(vocabulary),
        "label_vocabulary": vocabulary,
        "rows": sum(rows[s] for s in io.SPLITS),
        "rows_train": rows[io.TRAIN],
        "rows_eval": rows[io.EVAL],
        "rows_test": rows[io.TEST],
        "columns": types,
        "source": str(data_path),
        "dropped_rows": dropped_rows,
        "eval_ratio": eval_ratio,
        "test_ratio": test_ratio,
        "split_method": split_method,
        "warnings": warnings,
    }
    facts.update(left_out(facts["rows"], dropped_rows, dropped_columns, empty_columns))
    if engine:
        facts["engine"] = engine
    if problem_type != "regression":
        facts["class_counts"] = class_counts
        facts["classes_only_in_train"] = classes_only_in_train
    return facts
