"""Ingest's refusals of a bad call, and how every ingest message reads.

A bad parameter is refused before anything is read, a column name that is not
in the table before anything is written: with an IngestError whose message is
one line naming the parameter or column (and the closest column name, when one
is near). Problems that do not stop the run are warnings: printed to the step
log and returned in the facts.
"""
import math
import sys
from typing import List, Sequence

from kfx_components.common import problem

ENGINES = ("auto", "pandas", "beam")


class IngestError(ValueError):
    """Bad input; the message is always one line (a person reads it in a terminal)."""

    def __init__(self, message: str):
        super().__init__(_one_line(message))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def name_list(values, limit: int = 20) -> str:
    values = [str(v) for v in values]
    shown = ", ".join(values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def did_you_mean(name: str, columns) -> str:
    import difflib
    close = difflib.get_close_matches(name, [str(c) for c in columns], n=1, cutoff=0.6)
    lowered = [str(c) for c in columns if str(c).lower() == name.lower()]
    match = (lowered or close or [None])[0]
    return f" (did you mean {match!r}?)" if match else ""


def warn(warnings: List[str], path: str, message: str) -> None:
    # The step's stdout/stderr is its log: the warning is seen there and in the facts
    # (there without the path: the facts' `source` names the file).
    warnings.append(message)
    print(f"warning: {path}: {message}", file=sys.stderr, flush=True)


def _ratio(name: str, value, path: str) -> float:
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise IngestError(f"{path}: {name} {value!r} is not a number; give a fraction such as 0.2") from None
    if math.isnan(ratio) or not 0.0 < ratio < 1.0:
        raise IngestError(f"{path}: {name} {value!r} must be between 0 and 1 (exclusive); "
                          f"give a fraction such as 0.2")
    return ratio


def check_parameters(data_path, label, problem_type, eval_ratio, test_ratio, drop_columns, split_key, engine):
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


def check_drop_columns(path: str, names: List[str], drop_columns: Sequence[str]) -> None:
    unknown = [c for c in drop_columns if c not in names]
    if unknown:
        raise IngestError(f"{path}: drop_columns names unknown column(s) {name_list(map(repr, unknown))}"
                          f"{did_you_mean(unknown[0], names)} (columns: {name_list(names)})")


def feature_columns_of(path: str, names: List[str], drop_columns: Sequence[str], label_key: str) -> List[str]:
    """The columns stored as features: all but the dropped ones and the label; at least one."""
    feature_columns = [c for c in names if c not in drop_columns and c != label_key]
    if not feature_columns:
        raise IngestError(f"{path}: no feature columns left besides the label (columns: {name_list(names)}); "
                          f"the table needs at least one column to learn from (check drop_columns)")
    return feature_columns


def check_split_key(path: str, names: List[str], split_key: str) -> None:
    if split_key and split_key not in names:
        raise IngestError(f"{path}: split_key {split_key!r} is not a column{did_you_mean(split_key, names)} "
                          f"(columns: {name_list(names)})")
