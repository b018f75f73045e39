"""The Beam path's reading: the head on the driver, then the file in byte ranges or row groups."""
import csv
import gzip
import os
import shutil
import tempfile
from typing import Dict, List, Optional, Sequence

from kfx_components.ingest.cells import FALSE_TEXT, TRUE_TEXT, canonical
from kfx_components.ingest.checks import IngestError
from kfx_components.ingest.reading import Table, check_parquet_file, check_unique_names, read_csv, reader_for, \
    unreadable_csv, unreadable_parquet

HEAD_LINES = 5000
BATCH = 2048
RANGE_BYTES = 8 * 2 ** 20
NA = frozenset(['', '#N/A', '#N/A N/A', '#NA', '-1.#IND', '-1.#QNAN', '-NaN', '-nan', '1.#IND', '1.#QNAN',
                '<NA>', 'N/A', 'NA', 'NULL', 'NaN', 'n/a', 'nan', 'null'])   # pandas' default na_values
_MEMO_MAX = 100_000
_canon_memo: Dict[str, str] = {}


def canonical_text(text: str) -> str:
    """A cell's canonical text, decided from the cell alone (see the module doc)."""
    hit = _canon_memo.get(text)
    if hit is not None:
        return hit
    value = _canonical_text(text)
    if len(_canon_memo) < _MEMO_MAX:   # categorical cells repeat: most lookups hit
        _canon_memo[text] = value
    return value


def _canonical_text(text: str) -> str:
    if text in NA:
        return ""
    if text in TRUE_TEXT:
        return "true"
    if text in FALSE_TEXT:
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
            rows.append((local, [canonical(v) if not isinstance(v, str) else v for v in row]))
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


def read_head(path: str):
    """(Table of the head rows, Source), both with the column names as text."""
    kind = reader_for(path)
    workdir = tempfile.mkdtemp(prefix="kfx-ingest-")
    try:
        table, source = _head_parquet(path) if kind == "parquet" else _head_csv(path, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table.df.columns = [str(c) for c in table.df.columns]
    source.names = list(table.df.columns)
    return table, source


def _head_csv(path: str, workdir: str):
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
        raise unreadable_csv(path, err) from err
    sample = os.path.join(workdir, "head.csv")
    with open(sample, "wb") as out:
        out.writelines(head)
    try:
        table = read_csv(sample)
    except IngestError as err:
        raise IngestError(str(err).replace(sample, path)) from None
    table.path = path
    # The header line: the first line with a non-blank cell, as read_csv reads it.
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
    check_parquet_file(path)
    try:
        pf = pq.ParquetFile(path)
        df = pf.read_row_group(0).to_pandas() if pf.num_row_groups else None
    except Exception as err:  # noqa: BLE001
        raise unreadable_parquet(path, err) from err
    if df is None or pf.metadata.num_rows == 0:
        raise IngestError(f"{path}: the table has no rows; export the data again")
    names = [str(c) for c in df.columns]
    check_unique_names(path, names)
    df = df.head(HEAD_LINES)
    groups = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
    import pyarrow as pa
    text = [f.name for f in pf.schema_arrow if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    return Table(df, path, None, "parquet"), Source(path, "parquet", names, 0, 1, groups, text)
