"""The train/eval/test split: per class (or label quantile, or split_key group), by row hash.

Every ordering is by (md5 digest, canonical text): the same rows give the same
splits on any machine and in any file order.
"""
import collections
import math
from typing import Dict, List, Optional

from kfx_components.common import io
from kfx_components.ingest.cells import canonical_column, digest
from kfx_components.ingest.checks import IngestError, name_list, warn
from kfx_components.ingest.reading import Table

# A class needs a row in each of the three splits to be spread over them.
MIN_CLASS_ROWS = len(io.SPLITS)
# Fewer test rows than this give a metric too uncertain to trust on its own.
SMALL_TEST_ROWS = 100
_REGRESSION_BINS = 10
_ROWS_PER_BIN = 50


def _round(x: float) -> int:
    # Half up, not Python's half-to-even: the counts are what the docs promise.
    return int(math.floor(x + 0.5))


def take(n: int, eval_ratio: float, test_ratio: float):
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


def split_rows(rows: List[int], digests: List[int], texts: List[str], *, problem_type: str, encoded,
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
        for key in sorted(groups, key=lambda k: (digest(k), k)):
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
        _assign_ranked(members, *take(len(members), eval_ratio, test_ratio), split_of)
    return split_of, small, method


def split_table(table: Table, kept_rows: List[int], encoded, problem_type: str, split_key: str,
                eval_ratio: float, test_ratio: float, warnings: List[str]):
    """split_rows of the kept rows: (split name per row, small classes, method). Refuses a split left
    empty by whole groups (split_key) here, where the groups are known; check_split_sizes the rest."""
    df, path = table.df, table.path
    # Hash the full raw row (or the split key), so the split does not move when
    # drop_columns or the label change.
    texts = ["\x1f".join(row) for row in zip(*[canonical_column(df[c]) for c in df.columns])]
    digests = [digest(t) for t in texts]
    group_texts = canonical_column(df[split_key]) if split_key else None
    if split_key and df[split_key].isna().any():
        warn(warnings, path, f"split_key {split_key!r} is missing in {int(df[split_key].isna().sum())} "
                              f"row(s); they form one group")
    split_of, small, method = split_rows(kept_rows, digests, texts, problem_type=problem_type, encoded=encoded,
                                         group_texts=group_texts, eval_ratio=eval_ratio, test_ratio=test_ratio)
    counts = collections.Counter(split_of[i] for i in kept_rows)
    if split_key and any(counts[s] == 0 for s in io.SPLITS):
        raise empty_split(path, counts, f"split_key {split_key!r} has "
                                        f"{len(set(group_texts[i] for i in kept_rows))} group(s); "
                                        f"whole groups go to one split")
    return split_of, small, method


def counts_per_class(vocabulary: List[str], encoded, kept_rows: List[int], split_of) -> Optional[dict]:
    """Rows per class per split; None for regression (no vocabulary)."""
    if not vocabulary:
        return None
    per_split = {s: collections.Counter(encoded[i] for i in kept_rows if split_of[i] == s) for s in io.SPLITS}
    return {s: {v: per_split[s][c] for c, v in enumerate(vocabulary)} for s in io.SPLITS}


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
        warn(warnings, path, f"class(es) {name_list(map(repr, small_classes))} of label {label!r} have fewer than "
                              f"{MIN_CLASS_ROWS} rows; they are in the train split only (not evaluated)")
    if rows[io.TEST] < SMALL_TEST_ROWS:
        warn(warnings, path, f"the test split has only {rows[io.TEST]} rows; a metric on so few rows is "
                              f"uncertain (more data or a larger test_ratio narrows it)")
