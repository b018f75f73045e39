"""The one typing rule of both engines: a column's counted cells -> int64, float or bytes."""
import dataclasses
from typing import List

from kfx_components.ingest.cells import BYTES, FALSE_TEXT, FLOAT, INT64, TRUE_TEXT, canonical, number
from kfx_components.ingest.checks import IngestError, warn

# An object column whose present cells are at least this share numbers is a
# numeric column with stray text (a typo, a unit, a placeholder), not a text column.
NUMERIC_SHARE = 0.9


@dataclasses.dataclass
class ColumnCounts:
    """A column's non-missing cells, counted: all its type depends on (``column_type``). The pandas
    path counts a read column (``column_counts``); the Beam path counts cell by cell and merges."""
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
        warn(warnings, path, f"column {name!r} is empty in every row; it carries no information "
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


def column_counts(series, parquet: bool):
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
        parsed = number(value if isinstance(value, str) else canonical(value)) \
            if not isinstance(value, bool) else None
        if parsed is None:
            first = position if first is None else first
            continue
        counts.numbers += 1
        counts.whole = counts.whole and parsed[1].is_integer()
        counts.max_abs = max(counts.max_abs, abs(parsed[1]))
    return counts, first
