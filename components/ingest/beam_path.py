"""ingest as two Beam pipelines that stream the table: what large tables take.

Memory does not grow with the table: nothing holds the table, only per-column
counters, per-class counts and a 4096-bucket histogram of row hashes per class.

* **Head (driver).** The first HEAD_LINES lines (or the first row group) go
  through the pandas reader of reading.py: the header checks (encoding,
  delimiter, duplicate names), the label (column or expression) and
  drop_columns are checked there, with the same one-line errors.
* **Pass 1 (Beam).** The file is read in byte ranges (CSV: one record per line;
  gzip: one range) or row groups (Parquet). Per column: present / integer /
  numeric / boolean counts and the first text cell; per class: the row count
  and a histogram of the top 12 bits of each row's md5 digest; ragged and
  non-UTF-8 lines; missing labels. Errors found here name the absolute line
  (each range reports how many lines it holds).
* **Driver.** Column types, the label vocabulary, then per class the exact
  (test, eval) counts, as the pandas path computes them (`split.take`). Walking a
  class's histogram gives, for each of the two cut ranks, the one bucket that
  holds it.
* **Pass 2 (Beam).** Rows are encoded; a row in a bucket below a cut goes to
  its split directly; rows in the (at most two per class) cut buckets are
  grouped (about n/4096 rows each), sorted by (digest, canonical text) and
  ranked. So each class is cut at exactly the same ranks as a full sort by
  (digest, text) would cut it: the exact stratified split, in two streaming
  passes. Writes one GZIP TFRecord file per split.

Where it differs from the pandas path (docs/scale.md): a cell's canonical text
for the hash is decided per cell (a number is written as a number), not per
column, so a text column holding numbers spelled non-canonically ('01')
hashes differently; regression is split by row hash within one stratum (not
by label-quantile bins); split_key is not handled here (the caller keeps
such tables on the pandas path); a CSV record must not span lines.
"""

import collections
import os
import uuid
from typing import Dict, List, Sequence

from kfx_components.common import io
from kfx_components.common.beam_files import PartWriter, concatenate, remove_tree, scratch
from kfx_components.ingest.beam_passes import Labeler, Plan, Stats, label_sort_key, merge_all, pass1_batch, \
    pass2_batch, rank_cut
from kfx_components.ingest.beam_reading import Source, read_head, read_range
from kfx_components.ingest.checks import IngestError, check_drop_columns, feature_columns_of
from kfx_components.ingest.column_types import ColumnCounts, column_type
from kfx_components.ingest.label import check_class_count, check_missing_labels, label_not_numeric, label_type, \
    label_values
from kfx_components.ingest.output import ingest_facts, write_columns_file
from kfx_components.ingest.split import MIN_CLASS_ROWS, check_split_sizes, take


def run(path: str, data_path: str, examples_dir: str, label: str, problem_type: str, eval_ratio: float,
        test_ratio: float, drop_columns: Sequence[str], beam_pipeline_args: Sequence[str] = ()) -> dict:
    from apache_beam.options.pipeline_options import PipelineOptions

    warnings: List[str] = []
    table, source = read_head(path)
    names = source.names
    check_drop_columns(path, names, drop_columns)
    label_key, _ = label_values(table, label, drop_columns)   # checks the column or expression
    feature_columns = feature_columns_of(path, names, drop_columns, label_key)
    labeler = Labeler(names, label, label_key, _numeric_columns(table.df), problem_type)
    options = PipelineOptions(list(beam_pipeline_args or ()))

    stats = _count(source, labeler, problem_type, options)
    where = _where_factory(source, stats)
    _check_rows_and_labels(path, label, problem_type, stats, where, warnings)
    types = _column_types(path, source, feature_columns, stats, where, warnings)
    types[label_key] = label_type(problem_type)
    vocabulary = _vocabulary(path, label, problem_type, stats)

    cuts, counts, small = _cut_buckets(stats, problem_type, eval_ratio, test_ratio)
    rows = {s: sum(counts[s].values()) for s in io.SPLITS}
    check_split_sizes(path, label, problem_type, rows, small, warnings)
    column_index = {c: j for j, c in enumerate(names)}
    plan = Plan(names, types, [column_index[c] for c in feature_columns], label_key, types[label_key],
                vocabulary, cuts)
    _encode_and_write(source, plan, labeler, problem_type, options, examples_dir)

    classification = problem_type != "regression"
    return ingest_facts(
        label_key=label_key, problem_type=problem_type, vocabulary=vocabulary, rows=rows, types=types,
        data_path=data_path, dropped_rows=stats.missing_label + stats.label_text, eval_ratio=eval_ratio,
        test_ratio=test_ratio, split_method="stratified by label" if classification else "by row hash",
        warnings=warnings, engine="beam", classes_only_in_train=sorted(small, key=label_sort_key),
        class_counts={s: {v: counts[s][v] for v in vocabulary} for s in io.SPLITS} if classification else None,
        dropped_columns=drop_columns, empty_columns=[c for c in feature_columns if not stats.present[column_index[c]]])


def _numeric_columns(head) -> List[str]:
    """The columns of the head rows pandas read as numbers or booleans (an expression label needs them so)."""
    from pandas.api import types as ptypes
    return [c for c in head.columns if ptypes.is_numeric_dtype(head[c]) or ptypes.is_bool_dtype(head[c])]


def _count(source: Source, labeler: Labeler, problem_type: str, options) -> Stats:
    """Pass 1: counts per column, class histograms, unreadable rows."""
    import apache_beam as beam
    stats_path = os.path.join(scratch(options), f"kfx-ingest-stats-{uuid.uuid4().hex}.pkl")
    with beam.Pipeline(options=options) as p:
        _ = (p | "Ranges" >> beam.Create(source.ranges())
             | "Read" >> beam.FlatMap(lambda r, s: read_range(s, r), source)
             | "Count" >> beam.FlatMap(pass1_batch, source.names, labeler, problem_type)
             | "Merge" >> beam.CombineGlobally(merge_all)
             | "Save" >> beam.Map(_save_stats, stats_path))
    return _load_stats(stats_path)


def _where_factory(source: Source, stats: Stats):
    if source.kind == "parquet":
        starts = [0]
        for n in source.row_groups:
            starts.append(starts[-1] + n)
        return lambda pos: f"row {starts[pos[0]] + pos[1] + 1}"
    starts, line = {}, source.first_line
    for i in sorted(stats.lines):
        starts[i] = line
        line += stats.lines[i]
    return lambda pos: f"line {starts.get(pos[0], source.first_line) + pos[1] - 1}"


def _check_rows_and_labels(path: str, label: str, problem_type: str, stats: Stats, where,
                           warnings: List[str]) -> None:
    """Refuses unreadable rows and unusable labels; warns of rows dropped for a missing label."""
    if stats.n_bad:
        pos, message = stats.bad[0]
        raise IngestError(f"{path}: " + message.format(where=where(pos)))
    check_missing_labels(path, label, stats.missing_label, bool(stats.missing_label and not stats.classes),
                         lambda: where(stats.first_missing), warnings)
    if problem_type == "regression" and stats.label_text:
        pos, value = stats.first_label_text
        raise label_not_numeric(path, label, (stats.label_text, where(pos), value))


def _column_types(path: str, source: Source, feature_columns: List[str], stats: Stats, where,
                  warnings: List[str]) -> Dict[str, str]:
    column_index = {c: j for j, c in enumerate(source.names)}
    types: Dict[str, str] = {}
    for c in feature_columns:
        j = column_index[c]
        counts = ColumnCounts(stats.present[j], stats.nums[j], stats.bools[j], stats.whole[j], stats.max_abs[j],
                              declared_text=c in source.text_columns)
        pos, value = stats.first_text[j] or (None, None)
        types[c] = column_type(path, c, counts, warnings, lambda: (where(pos), value))
    return types


def _vocabulary(path: str, label: str, problem_type: str, stats: Stats) -> List[str]:
    """The classes in order (none for regression)."""
    if problem_type == "regression":
        return []
    vocabulary = sorted(stats.classes, key=label_sort_key)
    check_class_count(path, label, problem_type, vocabulary)
    return vocabulary


def _cut_buckets(stats: Stats, problem_type: str, eval_ratio: float, test_ratio: float):
    """(Plan.cuts, rows per split per stratum, the classes too small to split) of each stratum."""
    cuts, counts, small = {}, {s: collections.Counter() for s in io.SPLITS}, []
    for stratum, n in stats.classes.items():
        if n < MIN_CLASS_ROWS:
            if problem_type != "regression":
                small.append(stratum)
            cuts[stratum] = (0, 0, -1, -1, {})
            counts[io.TRAIN][stratum] += n
            continue
        n_test, n_eval = take(n, eval_ratio, test_ratio)
        r1, r2 = n_test, n_test + n_eval
        hist, before, total = stats.hist[stratum], {}, 0
        b1 = b2 = None
        for b, h in enumerate(hist):
            if b1 is None and total + h > r1:
                b1 = b
            if b2 is None and total + h > r2:
                b2 = b
            before[b] = total
            total += h
        cuts[stratum] = (r1, r2, b1, b2, {b1: before[b1], b2: before[b2]})
        counts[io.TEST][stratum] += n_test
        counts[io.EVAL][stratum] += n_eval
        counts[io.TRAIN][stratum] += n - r2
    return cuts, counts, small


def _encode_and_write(source: Source, plan: Plan, labeler: Labeler, problem_type: str, options,
                      examples_dir: str) -> None:
    """Pass 2: encode, cut, write. Each bundle writes its own GZIP part file per split (no
    shuffle of the records: Beam's sharded writer would group them all, and the DirectRunner
    holds a grouped PCollection in memory); the parts are then concatenated into the one
    file per split the examples contract names (GZIP members concatenate into a valid file)."""
    import apache_beam as beam
    parts_root = os.path.join(scratch(options), f"kfx-ingest-parts-{uuid.uuid4().hex}")
    with io.Staging() as stage:
        staging = stage.dir(examples_dir)
        with beam.Pipeline(options=options) as p:
            out = (p | "Ranges" >> beam.Create(source.ranges())
                   | "Read" >> beam.FlatMap(lambda r, s: read_range(s, r), source)
                   | "Encode" >> beam.FlatMap(pass2_batch, plan, labeler, problem_type)
                   .with_outputs("cut", *io.SPLITS))
            ranked = (out["cut"] | "GroupCut" >> beam.GroupByKey()
                      | "Rank" >> beam.FlatMap(rank_cut, plan).with_outputs(*io.SPLITS))
            # Two writers per split, no Flatten: a Flatten of the encoding stage's output with the
            # ranking stage's would make the DirectRunner buffer every record until both ran; this
            # way the records are written by the stage that encodes them, as they stream.
            for split in io.SPLITS:
                _ = out[split] | f"Write{split}" >> beam.ParDo(PartWriter(os.path.join(parts_root, split)))
                _ = ranked[split] | f"WriteCut{split}" >> beam.ParDo(
                    PartWriter(os.path.join(parts_root, split)))
        try:
            for split in io.SPLITS:
                concatenate(os.path.join(parts_root, split), io.split_file(staging, split))
        finally:
            remove_tree(parts_root)
        write_columns_file(staging, plan.types)


def _save_stats(stats: Stats, path: str) -> None:
    import pickle
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.create(path) as f:
        f.write(pickle.dumps(stats))


def _load_stats(path: str) -> Stats:
    import pickle
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.open(path) as f:
        stats = pickle.loads(f.read())
    FileSystems.delete([path])
    return stats
