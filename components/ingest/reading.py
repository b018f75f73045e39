"""Reading the table: CSV (plain or gzip, UTF-8) or Parquet, with the line or row of each record.

A file that cannot be read as meant (the wrong encoding or delimiter, a ragged
row, a repeated or blank column name, no rows) is refused with a one-line
IngestError naming the file and the line (CSV, header = line 1) or row (Parquet).
"""
import codecs
import collections
import csv
import io as _io
import os
from typing import Dict, List, Optional

from kfx_components.ingest.checks import IngestError, name_list

READERS = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet"}
# Delimiters a mis-saved "CSV" commonly uses instead of commas.
_OTHER_DELIMITERS = (";", "\t", "|")
_SNIFF_BYTES = 16 * 1024


def reader_for(path: str) -> str:
    lower = path.lower()
    for ext, kind in READERS.items():
        if lower.endswith(ext):
            return kind
    ext = os.path.splitext(path)[1] or "(none)"
    raise IngestError(f"{path}: unsupported file type {ext} (expected {', '.join(READERS)}); "
                      f"save the table as CSV or Parquet with one of those extensions")


def resolve_data_path(data_path: str) -> str:
    """The data file; a directory holding exactly one supported file is accepted too
    (a runner may hand over an artifact directory)."""
    if os.path.isdir(data_path):
        found = [f for f in sorted(os.listdir(data_path))
                 if not f.startswith(".") and any(f.lower().endswith(e) for e in READERS)]
        if len(found) != 1:
            listed = f" ({name_list(found)})" if found else ""
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


def read_table(path: str) -> Table:
    kind = reader_for(path)
    return read_csv(path) if kind == "csv" else _read_parquet(path)


def _read_parquet(path: str) -> Table:
    import pandas as pd
    check_parquet_file(path)
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several kinds for a damaged file
        raise unreadable_parquet(path, err) from err
    check_unique_names(path, [str(c) for c in df.columns])
    if len(df) == 0:
        raise IngestError(f"{path}: the table has columns ({name_list(map(str, df.columns))}) but no rows; "
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
        raise IngestError(f"{path}: column name(s) {name_list(map(repr, duplicated))} appear more than once; "
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


def read_csv(path: str) -> Table:
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
        raise unreadable_csv(path, err) from err
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
        raise IngestError(f"{path}: the file has a header ({name_list(names)}) but no data rows; "
                          f"add rows below the header")
    try:
        df = pd.read_csv(_io.StringIO(text), skipinitialspace=False)
    except Exception as err:  # pandas' parser disagrees with the csv module: rare, still one line
        raise IngestError(f"{path}: cannot parse the CSV ({type(err).__name__}: {err}); fix the line it names") from err
    df.columns = names   # as written, minus stray spaces around them
    if len(df) != len(lines):   # a record pandas reads differently: line numbers would be off
        lines = None
    return Table(df, path, lines, "csv")


def unreadable_csv(path: str, err: Exception) -> IngestError:
    return IngestError(f"{path}: cannot read the file ({err}); check that it is a complete CSV"
                       f"{' gzip' if path.lower().endswith('.gz') else ''} file")


def unreadable_parquet(path: str, err: Exception) -> IngestError:
    return IngestError(f"{path}: cannot read the Parquet file ({type(err).__name__}: {err}); "
                       f"export the table again")
