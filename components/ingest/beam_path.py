"""ingest as two Beam pipelines that stream the table: what large tables take.

Memory does not grow with the table: nothing holds the table, only per-column
counters, per-class counts and a 4096-bucket histogram of row hashes per class.

* **Head (driver).** The first HEAD_LINES lines (or the first row group) go
  through the pandas reader of executor.py: the header checks (encoding,
  delimiter, duplicate names), the label (column or expression) and
  drop_columns are checked there, with the same one-line errors.
* **Pass 1 (Beam).** The file is read in byte ranges (CSV: one record per line;
  gzip: one range) or row groups (Parquet). Per column: present / integer /
  numeric / boolean counts and the first text cell; per class: the row count
  and a histogram of the top 12 bits of each row's md5 digest; ragged and
  non-UTF-8 lines; missing labels. Errors found here name the absolute line
  (each range reports how many lines it holds).
* **Driver.** Column types, the label vocabulary, then per class the exact
  (test, eval) counts, as the pandas path computes them (`_take`). Walking a
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
import csv
import gzip
import os
import shutil
import tempfile
import uuid
from typing import Dict, List, Optional, Sequence

from kfx_components.common import io
from kfx_components.common.beam_files import PartWriter, concatenate, remove_tree, scratch
from kfx_components.ingest import executor as ex

HEAD_LINES = 5000
BATCH = 2048
RANGE_BYTES = 8 * 2 ** 20
HASH_BITS = 12
BUCKETS = 1 << HASH_BITS
NA = frozenset(['', '#N/A', '#N/A N/A', '#NA', '-1.#IND', '-1.#QNAN', '-NaN', '-nan', '1.#IND', '1.#QNAN',
                '<NA>', 'N/A', 'NA', 'NULL', 'NaN', 'n/a', 'nan', 'null'])   # pandas' default na_values


# ------------------------------------------------------------------ cells
_MEMO_MAX = 100_000
_canon_memo: Dict[str, str] = {}


def canon(text: str) -> str:
    """A cell's canonical text, decided from the cell alone (see the module doc)."""
    hit = _canon_memo.get(text)
    if hit is not None:
        return hit
    value = _canon(text)
    if len(_canon_memo) < _MEMO_MAX:   # categorical cells repeat: most lookups hit
        _canon_memo[text] = value
    return value


def _canon(text: str) -> str:
    if text in NA:
        return ""
    if text in ex.TRUE_TEXT:
        return "true"
    if text in ex.FALSE_TEXT:
        return "false"
    if "_" not in text:
        try:
            return str(int(text))
        except ValueError:
            pass
        try:
            f = float(text)
        except ValueError:
            return text
        return str(int(f)) if f.is_integer() and abs(f) < 2 ** 63 else repr(f)
    return text


def _label_sort_key(text: str):
    if text in ("true", "false"):
        return (0, float(text == "true"), "")
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


# ------------------------------------------------------------------ reading
class Source:
    """What the workers need to read the table: plain data, pickled to each worker."""

    def __init__(self, path: str, kind: str, names: List[str], data_start: int, first_line: int,
                 row_groups: Optional[List[int]] = None, text_columns: Sequence[str] = ()):
        self.path, self.kind, self.names = path, kind, names
        self.data_start, self.first_line, self.row_groups = data_start, first_line, row_groups
        self.text_columns = frozenset(text_columns)   # Parquet string columns (ColumnCounts.declared_text)

    def ranges(self) -> List[tuple]:
        if self.kind == "parquet":
            return [(i, i, i + 1) for i in range(len(self.row_groups))]
        if self.path.lower().endswith(".gz"):
            return [(0, 0, -1)]
        size = os.path.getsize(self.path)
        cuts = list(range(self.data_start, size, RANGE_BYTES)) + [size]
        return [(i, a, b) for i, (a, b) in enumerate(zip(cuts, cuts[1:]))] or [(0, size, size)]


def read_range(source: Source, rng: tuple):
    """Batches of (range index, [(local line or row, [cell texts]) ...], bad, n_lines).

    bad: [(local line, message with {where} for the absolute position)] of rows that
    cannot be read; n_lines: physical lines in the range (in the last batch only, else None).
    """
    index, start, end = rng
    width = len(source.names)
    if source.kind == "parquet":
        import pyarrow.parquet as pq
        table = pq.ParquetFile(source.path).read_row_group(start)
        columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
        rows = []
        for local, row in enumerate(zip(*columns)):
            rows.append((local, [ex._canon(v) if not isinstance(v, str) else v for v in row]))
            if len(rows) >= BATCH:
                yield index, rows, [], None
                rows = []
        yield index, rows, [], table.num_rows
        return
    if end < 0:   # gzip: not splittable, one range from the first data line
        f = gzip.open(source.path, "rb")
        for _ in range(source.first_line - 1):
            f.readline()
        stop = None
    else:
        f = open(source.path, "rb")
        stop = end
        if start > source.data_start:
            f.seek(start - 1)
            f.readline()   # the line holding byte start-1 belongs to the range before
        else:
            f.seek(start)
    rows, bad, local = [], [], 0
    with f:
        while stop is None or f.tell() < stop:
            raw = f.readline()
            if not raw:
                break
            local += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad.append((local, "{where} is not UTF-8 (byte 0x%s); save the file as UTF-8, e.g. iconv -f "
                                   "latin1 -t utf-8 (if it is latin-1)" % raw[err.start:err.start + 1].hex()))
                continue
            if not line.strip():
                continue
            try:
                cells = next(csv.reader([line.rstrip("\r\n")]))
            except csv.Error as err:
                bad.append((local, "{where}: not valid CSV (%s); fix that line" % err))
                continue
            if len(cells) != width:
                bad.append((local, "{where} has %d fields but the header has %d; fix that row (a missing or "
                                   "extra comma, an unquoted comma inside a value, or a quoted value spanning "
                                   "lines, which the streaming reader does not take: save as Parquet)"
                                   % (len(cells), width)))
                continue
            rows.append((local, cells))
            if len(rows) >= BATCH:
                yield index, rows, bad, None
                rows, bad = [], []
    yield index, rows, bad, local


# ------------------------------------------------------------------ labels
class Labeler:
    """The label's canonical text per row (None when missing), from a column or an expression."""

    def __init__(self, names: List[str], label: str, label_key: str, numeric_columns: List[str],
                 problem_type: str):
        self.names, self.label, self.label_key = names, label, label_key
        self.numeric, self.problem_type = set(numeric_columns), problem_type
        self.column = names.index(label) if label in names else None

    def labels(self, rows) -> List[Optional[str]]:
        if self.column is not None:
            out = []
            for _, cells in rows:
                text = canon(cells[self.column])
                out.append(text if text != "" else None)
            return out
        import pandas as pd
        if not rows:
            return []
        data = {}
        for j, name in enumerate(self.names):
            values = [None if c[j] in NA else c[j] for _, c in rows]
            data[name] = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce") \
                if name in self.numeric else pd.Series(values, dtype=object)
        values = pd.DataFrame(data).eval(self.label)
        return [ex._canon(v) or None for v in values.tolist()]   # missing (None, NaN) -> None


def _bucket(digest: int) -> int:
    return digest >> (64 - HASH_BITS)


# ------------------------------------------------------------------ pass 1
class Stats:
    """Mergeable pass-1 counters."""

    def __init__(self, width: int):
        self.present = [0] * width
        self.ints = [0] * width
        self.nums = [0] * width
        self.bools = [0] * width
        self.whole = [True] * width       # every numeric cell integer-valued
        self.max_abs = [0.0] * width
        self.first_text: List[Optional[tuple]] = [None] * width   # ((range, local), value)
        self.classes: Dict[str, int] = collections.Counter()
        self.hist: Dict[str, list] = {}
        self.missing_label = 0
        self.first_missing: Optional[tuple] = None
        self.label_text = 0
        self.first_label_text: Optional[tuple] = None
        self.bad: List[tuple] = []       # the first few ((range, local), message)
        self.n_bad = 0
        self.lines: Dict[int, int] = {}

    def merge(self, other: "Stats") -> "Stats":
        for j in range(len(self.present)):
            self.present[j] += other.present[j]
            self.ints[j] += other.ints[j]
            self.nums[j] += other.nums[j]
            self.bools[j] += other.bools[j]
            self.whole[j] = self.whole[j] and other.whole[j]
            self.max_abs[j] = max(self.max_abs[j], other.max_abs[j])
            self.first_text[j] = _first(self.first_text[j], other.first_text[j])
        self.classes.update(other.classes)
        for k, h in other.hist.items():
            if k in self.hist:
                self.hist[k] = [a + b for a, b in zip(self.hist[k], h)]
            else:
                self.hist[k] = list(h)
        self.missing_label += other.missing_label
        self.first_missing = _first(self.first_missing, other.first_missing)
        self.label_text += other.label_text
        self.first_label_text = _first(self.first_label_text, other.first_label_text)
        self.bad = sorted(self.bad + other.bad)[:5]
        self.n_bad += other.n_bad
        self.lines.update(other.lines)
        return self


def _first(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def pass1_batch(element, names, labeler: Labeler, problem_type: str, label_column: Optional[int]):
    index, rows, bad, n_lines = element
    width = len(names)
    s = Stats(width)
    if n_lines is not None:
        s.lines[index] = n_lines
    s.bad = [((index, local), msg) for local, msg in bad][:5]
    s.n_bad = len(bad)
    labels = labeler.labels(rows)
    hist = {}
    for (local, cells), label in zip(rows, labels):
        texts = []
        for j, cell in enumerate(cells):
            text = canon(cell)
            texts.append(text)
            if cell in NA:
                continue
            s.present[j] += 1
            if cell in ex.TRUE_TEXT or cell in ex.FALSE_TEXT:
                s.bools[j] += 1
            parsed = ex.number(cell)
            if parsed is None:
                if s.first_text[j] is None:
                    s.first_text[j] = ((index, local), cell)
                continue
            is_int, value = parsed
            s.nums[j] += 1
            s.ints[j] += is_int
            if not is_int and not value.is_integer():
                s.whole[j] = False
            if abs(value) > s.max_abs[j]:
                s.max_abs[j] = abs(value)
        if label is None:
            s.missing_label += 1
            if s.first_missing is None:
                s.first_missing = (index, local)
            continue
        if problem_type == "regression":
            if ex.number(label) is None:
                s.label_text += 1
                if s.first_label_text is None:
                    s.first_label_text = ((index, local), label)
                continue
            stratum = ""
        else:
            stratum = label
        s.classes[stratum] += 1
        digest = ex._digest("\x1f".join(texts))
        h = hist.get(stratum)
        if h is None:
            h = hist[stratum] = [0] * BUCKETS
        h[_bucket(digest)] += 1
    s.hist = hist
    yield s


def _merge_all(stats_list):
    it = iter(stats_list)
    total = None
    for s in it:
        total = s if total is None else total.merge(s)
    return total


# ------------------------------------------------------------------ pass 2
class Plan:
    """Per stratum: (n_test, n_eval, cut buckets, rows before each cut bucket), the encoding."""

    def __init__(self, names, types, feature_idx, label_key, label_type, vocabulary, cuts):
        self.names, self.types, self.feature_idx = names, types, feature_idx
        self.label_key, self.label_type, self.vocabulary = label_key, label_type, vocabulary
        self.index = {v: i for i, v in enumerate(vocabulary)}
        self.cuts = cuts   # stratum -> (r1, r2, b1, b2, before)   before: {bucket: rows in lower buckets}


def pass2_batch(element, plan: Plan, labeler: Labeler, problem_type: str):
    import apache_beam as beam
    import tensorflow as tf
    index, rows, _, _ = element
    labels = labeler.labels(rows)
    for (local, cells), label in zip(rows, labels):
        if label is None:
            continue
        if problem_type == "regression":
            if ex.number(label) is None:
                continue
            stratum, encoded = "", float(label)
        else:
            stratum, encoded = label, plan.index[label]
        feats = {}
        for j in plan.feature_idx:
            cell = cells[j]
            if cell in NA:
                continue
            feats[plan.names[j]] = ex._feature(cell, plan.types[plan.names[j]])
        feats[plan.label_key] = ex._feature(encoded, plan.label_type)
        record = tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()
        r1, r2, b1, b2, _ = plan.cuts[stratum]
        if r2 == 0:
            yield beam.pvalue.TaggedOutput(io.TRAIN, record)
            continue
        text = "\x1f".join(canon(c) for c in cells)
        digest = ex._digest(text)
        b = _bucket(digest)
        if b == b1 or b == b2:
            yield beam.pvalue.TaggedOutput("cut", ((stratum, b), (digest, text, record)))
        elif b < b1:
            yield beam.pvalue.TaggedOutput(io.TEST, record)
        elif b < b2:
            yield beam.pvalue.TaggedOutput(io.EVAL, record)
        else:
            yield beam.pvalue.TaggedOutput(io.TRAIN, record)


def rank_cut(element, plan: Plan):
    import apache_beam as beam
    (stratum, b), members = element
    r1, r2, _, _, before = plan.cuts[stratum]
    for rank, (_, _, record) in enumerate(sorted(members, key=lambda m: (m[0], m[1])), start=before[b]):
        split = io.TEST if rank < r1 else io.EVAL if rank < r2 else io.TRAIN
        yield beam.pvalue.TaggedOutput(split, record)


# ------------------------------------------------------------------ driver
def _head(path: str, kind: str, workdir: str):
    """(Table of the head rows read by the pandas path, Source)."""
    gz = path.lower().endswith(".gz")
    try:
        f = gzip.open(path, "rb") if gz else open(path, "rb")
        with f:
            head = []
            for _ in range(HEAD_LINES):
                line = f.readline()
                if not line:
                    break
                head.append(line)
    except (OSError, EOFError) as err:
        raise ex.IngestError(f"{path}: cannot read the file ({err}); check that it is a complete CSV"
                             f"{' gzip' if gz else ''} file") from err
    sample = os.path.join(workdir, "head.csv")
    with open(sample, "wb") as out:
        out.writelines(head)
    try:
        table = ex._read_csv(sample)
    except ex.IngestError as err:
        raise ex.IngestError(str(err).replace(sample, path)) from None
    table.path = path
    # The header line: the first line with a non-blank cell, as _read_csv reads it.
    header_line = 1
    offset = 0
    for i, line in enumerate(head, start=1):
        if line.strip(b"\r\n").replace(b",", b"").strip():
            header_line, offset = i, offset + len(line)
            break
        offset += len(line)
    return table, Source(path, "csv", list(table.df.columns), offset, header_line + 1)


def _head_parquet(path: str):
    import pyarrow.parquet as pq
    ex.check_parquet_file(path)
    try:
        pf = pq.ParquetFile(path)
        df = pf.read_row_group(0).to_pandas() if pf.num_row_groups else None
    except Exception as err:  # noqa: BLE001
        raise ex.IngestError(f"{path}: cannot read the Parquet file ({type(err).__name__}: {err}); "
                             f"export the table again") from err
    if df is None or pf.metadata.num_rows == 0:
        raise ex.IngestError(f"{path}: the table has no rows; export the data again")
    names = [str(c) for c in df.columns]
    ex.check_unique_names(path, names)
    df = df.head(HEAD_LINES)
    groups = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
    import pyarrow as pa
    text = [f.name for f in pf.schema_arrow if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    return ex.Table(df, path, None, "parquet"), Source(path, "parquet", names, 0, 1, groups, text)


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


def run(path: str, data_path: str, examples_dir: str, label: str, problem_type: str, eval_ratio: float,
        test_ratio: float, drop_columns: Sequence[str], beam_pipeline_args: Sequence[str] = ()) -> dict:
    from apache_beam.options.pipeline_options import PipelineOptions

    warnings: List[str] = []
    table, source = _read_head(path)
    names = source.names
    ex.check_drop_columns(path, names, drop_columns)
    label_key, _ = ex._label(table, label, drop_columns)   # checks the column or expression
    feature_columns = ex.feature_columns_of(path, names, drop_columns, label_key)
    labeler = Labeler(names, label, label_key, _numeric_columns(table.df), problem_type)
    options = PipelineOptions(list(beam_pipeline_args or ()))

    stats = _count(source, labeler, problem_type, options)
    where = _where_factory(source, stats)
    _check_rows_and_labels(path, label, problem_type, stats, where, warnings)
    types = _column_types(path, source, feature_columns, stats, where, warnings)
    types[label_key] = ex.label_type(problem_type)
    vocabulary = _vocabulary(path, label, problem_type, stats)

    cuts, counts, small = _cut_buckets(stats, problem_type, eval_ratio, test_ratio)
    rows = {s: sum(counts[s].values()) for s in io.SPLITS}
    ex.check_split_sizes(path, label, problem_type, rows, small, warnings)
    column_index = {c: j for j, c in enumerate(names)}
    plan = Plan(names, types, [column_index[c] for c in feature_columns], label_key, types[label_key],
                vocabulary, cuts)
    _encode_and_write(source, plan, labeler, problem_type, options, examples_dir)

    classification = problem_type != "regression"
    return ex.ingest_facts(
        label_key=label_key, problem_type=problem_type, vocabulary=vocabulary, rows=rows, types=types,
        data_path=data_path, dropped_rows=stats.missing_label + stats.label_text, eval_ratio=eval_ratio,
        test_ratio=test_ratio, split_method="stratified by label" if classification else "by row hash",
        warnings=warnings, engine="beam", classes_only_in_train=sorted(small, key=_label_sort_key),
        class_counts={s: {v: counts[s][v] for v in vocabulary} for s in io.SPLITS} if classification else None,
        dropped_columns=drop_columns, empty_columns=[c for c in feature_columns if not stats.present[column_index[c]]])


# ------------------------------------------------------------------ the steps of run
def _read_head(path: str):
    """(Table of the head rows, Source), both with the column names as text."""
    kind = ex._reader_for(path)
    workdir = tempfile.mkdtemp(prefix="kfx-ingest-")
    try:
        table, source = _head_parquet(path) if kind == "parquet" else _head(path, kind, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table.df.columns = [str(c) for c in table.df.columns]
    source.names = list(table.df.columns)
    return table, source


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
             | "Count" >> beam.FlatMap(pass1_batch, source.names, labeler, problem_type, labeler.column)
             | "Merge" >> beam.CombineGlobally(_merge_all)
             | "Save" >> beam.Map(_save_stats, stats_path))
    return _load_stats(stats_path)


def _check_rows_and_labels(path: str, label: str, problem_type: str, stats: Stats, where,
                           warnings: List[str]) -> None:
    """Refuses unreadable rows and unusable labels; warns of rows dropped for a missing label."""
    if stats.n_bad:
        pos, message = stats.bad[0]
        raise ex.IngestError(f"{path}: " + message.format(where=where(pos)))
    ex.check_missing_labels(path, label, stats.missing_label, bool(stats.missing_label and not stats.classes),
                            lambda: where(stats.first_missing), warnings)
    if problem_type == "regression" and stats.label_text:
        pos, value = stats.first_label_text
        raise ex.label_not_numeric(path, label, (stats.label_text, where(pos), value))


def _column_types(path: str, source: Source, feature_columns: List[str], stats: Stats, where,
                  warnings: List[str]) -> Dict[str, str]:
    column_index = {c: j for j, c in enumerate(source.names)}
    types: Dict[str, str] = {}
    for c in feature_columns:
        j = column_index[c]
        counts = ex.ColumnCounts(stats.present[j], stats.nums[j], stats.bools[j], stats.whole[j], stats.max_abs[j],
                                 declared_text=c in source.text_columns)
        pos, value = stats.first_text[j] or (None, None)
        types[c] = ex.column_type(path, c, counts, warnings, lambda: (where(pos), value))
    return types


def _vocabulary(path: str, label: str, problem_type: str, stats: Stats) -> List[str]:
    """The classes in order (none for regression)."""
    if problem_type == "regression":
        return []
    vocabulary = sorted(stats.classes, key=_label_sort_key)
    ex.check_class_count(path, label, problem_type, vocabulary)
    return vocabulary


def _cut_buckets(stats: Stats, problem_type: str, eval_ratio: float, test_ratio: float):
    """(Plan.cuts, rows per split per stratum, the classes too small to split) of each stratum."""
    cuts, counts, small = {}, {s: collections.Counter() for s in io.SPLITS}, []
    for stratum, n in stats.classes.items():
        if n < ex.MIN_CLASS_ROWS:
            if problem_type != "regression":
                small.append(stratum)
            cuts[stratum] = (0, 0, -1, -1, {})
            counts[io.TRAIN][stratum] += n
            continue
        n_test, n_eval = ex._take(n, eval_ratio, test_ratio)
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
        ex.write_columns_file(staging, plan.types)


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
