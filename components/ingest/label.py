"""The label: a column or an expression over columns, its missing cells and its classes."""
import ast
import re
from typing import List, Sequence

from kfx_components.ingest.cells import FLOAT, INT64, canonical
from kfx_components.ingest.checks import IngestError, did_you_mean, name_list, warn
from kfx_components.ingest.column_types import NUMERIC_SHARE
from kfx_components.ingest.reading import Table

EXPRESSION_LABEL_KEY = "label"
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
    listed = f"(columns: {name_list(columns)})"
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
                              f"{name_list(sorted(functions))}")
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)}
    unknown = [placeholders.get(n.id, n.id) for n in ast.walk(tree)
               if isinstance(n, ast.Name) and n.id not in called and n.id not in ("True", "False")
               and placeholders.get(n.id, n.id) not in columns]
    if unknown:
        raise IngestError(f"{path}: label expression {label!r} names unknown column(s) "
                          f"{name_list(map(repr, dict.fromkeys(unknown)))}{did_you_mean(unknown[0], columns)} "
                          f"{listed}; fix the column name")


def label_values(table: Table, label: str, drop_columns: Sequence[str]):
    """(label_key, label Series) for a column name or a DataFrame.eval expression."""
    import pandas as pd
    df, path = table.df, table.path
    if label in df.columns:
        return label, df[label]
    listed = f"(columns: {name_list(df.columns)})"
    if label.strip() in df.columns:
        raise IngestError(f"{path}: label {label!r} has stray spaces; the column is {label.strip()!r}")
    if label.isidentifier():
        raise IngestError(f"{path}: label column {label!r} not found{did_you_mean(label, df.columns)} "
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


def label_type(problem_type: str) -> str:
    return FLOAT if problem_type == "regression" else INT64


def rows_with_label(table: Table, y, label: str, warnings: List[str]):
    """(which rows have a label, as a boolean Series; how many do not, and are dropped)."""
    keep = y.notna()
    dropped_rows = int((~keep).sum())
    check_missing_labels(table.path, label, dropped_rows, not keep.any(),
                         lambda: table.where(int((~keep).to_numpy().argmax())), warnings)
    return keep, dropped_rows


def check_missing_labels(path: str, label: str, missing: int, none_left: bool, first_missing,
                         warnings: List[str]) -> None:
    """Refuses a table with no usable label; warns of the rows dropped for a missing label
    (``first_missing()`` says where the first is)."""
    if none_left:
        raise IngestError(f"{path}: label {label!r} is missing in every row; check the label column")
    if missing:
        warn(warnings, path, f"label {label!r} is missing in {missing} row(s) (first at {first_missing()}); "
                              f"those rows are dropped")


def encode_label(table: Table, y, keep, label: str, problem_type: str, warnings: List[str]):
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
        warn(warnings, path, f"label {label!r} is numeric except {stray[0]} cell(s), first at "
                              f"{table.where(stray[1])}: {stray[2]!r}; they are taken as classes of "
                              f"their own (fix or empty them if they are typos)")
    distinct = sorted(y[keep].unique().tolist(), key=_sort_key)
    vocabulary = [canonical(v) for v in distinct]
    if len(set(vocabulary)) != len(vocabulary):
        raise IngestError(f"{path}: label {label!r} has class values that collide as text: {vocabulary[:10]}")
    check_class_count(path, label, problem_type, vocabulary)
    index = {v: i for i, v in enumerate(vocabulary)}
    return vocabulary, [index[canonical(v)] if k else None for v, k in zip(y.tolist(), keep.tolist())]


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


def label_not_numeric(path: str, label: str, text_cells=None) -> IngestError:
    """The error for a regression label that is text; text_cells = (count, where the first is, its value)."""
    at = f" ({text_cells[0]} cell(s) are text, first at {text_cells[1]}: {text_cells[2]!r})" if text_cells else ""
    return IngestError(f"{path}: label {label!r} is not numeric{at}; regression needs a numeric label: "
                       f"fix the cells or choose problem_type binary/multiclass")


def check_class_count(path: str, label: str, problem_type: str, vocabulary: List[str]) -> None:
    if problem_type == "binary" and len(vocabulary) != 2:
        found = f"only one class ({vocabulary[0]!r})" if len(vocabulary) == 1 else \
            f"{len(vocabulary)} classes ({name_list(map(repr, vocabulary), 10)})"
        todo = "use problem_type multiclass" if len(vocabulary) > 2 else \
            "check the label (or its expression) and that the file holds rows of both classes"
        raise IngestError(f"{path}: label {label!r} has {found}; binary needs exactly 2: {todo}")
    if problem_type == "multiclass" and len(vocabulary) < 2:
        raise IngestError(f"{path}: label {label!r} has only one class ({vocabulary[0]!r}); "
                          f"multiclass needs at least 2: check the label")
