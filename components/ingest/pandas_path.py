"""ingest in one process: the table read whole by pandas (the reference the Beam path is tested against)."""
import collections
from typing import Callable, Dict, List, Optional, Sequence

from kfx_components.common import io
from kfx_components.ingest.cells import feature
from kfx_components.ingest.checks import IngestError, check_drop_columns, check_split_key, feature_columns_of
from kfx_components.ingest.column_types import column_counts, column_type
from kfx_components.ingest.label import encode_label, label_type, label_values, rows_with_label
from kfx_components.ingest.output import ingest_facts, write_columns_file
from kfx_components.ingest.reading import Table, read_table
from kfx_components.ingest.split import check_split_sizes, counts_per_class, split_table
from kfx_components.ingest.window import Span, read_window, rows_per_span


def run(path: str, data_path: str, examples_dir: str, label: str, problem_type: str, eval_ratio: float,
        test_ratio: float, drop_columns: Sequence[str], split_key: str) -> dict:
    """The facts of the examples written from the table at path (data_path resolved), its parameters
    checked already (checks.check_parameters)."""
    table = read_table(path)
    table.df.columns = [str(c) for c in table.df.columns]
    return _ingest(table, data_path, examples_dir, label, problem_type, eval_ratio, test_ratio, drop_columns,
                   split_key)[0]


def run_window(spans: Sequence[Span], backtest: Optional[Span], examples_dir: str, label: str,
               problem_type: str, eval_ratio: float, test_ratio: float, drop_columns: Sequence[str],
               split_key: str) -> dict:
    """The facts of the examples written from a window of spans: train/eval/test split from all of
    them, as from one table; the backtest span's rows, all of them, as the split io.BACKTEST."""
    table = read_window(spans, backtest)
    facts, kept_rows = _ingest(table, table.path, examples_dir, label, problem_type, eval_ratio, test_ratio,
                               drop_columns, split_key, held_out=table.is_backtest if backtest else None)
    return {**facts, "spans": [s.number for s in spans], "backtest_span": backtest.number if backtest else None,
            "rows_per_span": rows_per_span(table, kept_rows)}


def _ingest(table: Table, data_path: str, examples_dir: str, label: str, problem_type: str, eval_ratio: float,
            test_ratio: float, drop_columns: Sequence[str], split_key: str,
            held_out: Optional[Callable[[int], bool]] = None):
    """(facts, kept rows) of a read table's label, types, split and records; the rows `held_out` says
    are the backtest's are written as io.BACKTEST, not split (their labels and types are checked with
    the rest)."""
    warnings: List[str] = []
    path = table.path
    names = list(table.df.columns)
    check_drop_columns(path, names, drop_columns)
    check_split_key(path, names, split_key)

    label_key, y = label_values(table, label, drop_columns)
    keep, dropped_rows = rows_with_label(table, y, label, warnings)
    vocabulary, encoded = encode_label(table, y, keep, label, problem_type, warnings)
    feature_columns = feature_columns_of(path, names, drop_columns, label_key)
    types = _column_types(table, feature_columns, warnings)
    types[label_key] = label_type(problem_type)

    kept_rows = [i for i, k in enumerate(keep.tolist()) if k]
    backtest_rows = [i for i in kept_rows if held_out(i)] if held_out else []
    window_rows = [i for i in kept_rows if not held_out(i)] if held_out else kept_rows
    if held_out and not backtest_rows:
        raise IngestError(f"{path}: the backtest span has no row with label {label!r}; nothing to judge on")
    split_of, small, method = split_table(table, window_rows, encoded, problem_type, split_key,
                                          eval_ratio, test_ratio, warnings)
    for i in backtest_rows:
        split_of[i] = io.BACKTEST
    small_classes = [vocabulary[c] for c in small]
    rows = collections.Counter(split_of[i] for i in kept_rows)
    check_split_sizes(path, label, problem_type, rows, small_classes, warnings)

    records = _serialized_examples(table.df, kept_rows, feature_columns, types, label_key, encoded, split_of)
    _write_examples(examples_dir, records, types)
    return ingest_facts(
        label_key=label_key, problem_type=problem_type, vocabulary=vocabulary, rows=rows, types=types,
        data_path=data_path, dropped_rows=dropped_rows, eval_ratio=eval_ratio, test_ratio=test_ratio,
        split_method=method, warnings=warnings, classes_only_in_train=small_classes,
        class_counts=counts_per_class(vocabulary, encoded, kept_rows, split_of), dropped_columns=drop_columns,
        empty_columns=[c for c in feature_columns if not table.df[c].notna().any()]), kept_rows


def _column_types(table: Table, feature_columns: List[str], warnings: List[str]) -> Dict[str, str]:
    df = table.df
    types: Dict[str, str] = {}
    for c in feature_columns:
        counts, first = column_counts(df[c], table.kind == "parquet")
        types[c] = column_type(table.path, c, counts, warnings, lambda: (table.where(first), df[c].iloc[first]))
    return types


def _serialized_examples(df, kept_rows: List[int], feature_columns: List[str], types: Dict[str, str],
                         label_key: str, encoded, split_of) -> Dict[str, List[bytes]]:
    """The serialized tf.train.Example of each kept row, per split."""
    import tensorflow as tf
    # The three splits always; the backtest split when there are rows of it.
    records: Dict[str, List[bytes]] = {s: [] for s in dict.fromkeys([*io.SPLITS, *filter(None, split_of)])}
    columns = {c: df[c].tolist() for c in feature_columns}
    missing = {c: df[c].isna().tolist() for c in feature_columns}
    for i in kept_rows:
        feats = {}
        for c in feature_columns:
            if missing[c][i]:
                continue  # a missing cell is an absent feature
            feats[c] = feature(columns[c][i], types[c])
        feats[label_key] = feature(encoded[i], types[label_key])
        ex = tf.train.Example(features=tf.train.Features(feature=feats))
        records[split_of[i]].append(ex.SerializeToString())
    return records


def _write_examples(examples_dir: str, records: Dict[str, List[bytes]], types: Dict[str, str]) -> None:
    with io.Staging() as stage:
        staging = stage.dir(examples_dir)
        for split, recs in records.items():
            io.write_records(io.split_file(staging, split), recs)
        write_columns_file(staging, types)
