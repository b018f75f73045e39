"""A window of spans read as one table: the spans a run trains on, and the newer span it is
backtested on (kfx run --train-spans K; docs/monitoring.md, "Windows of spans").

Every span must have the same columns as the window's oldest span; a span that differs is
refused in one line naming the span and the column. The rows keep where they came from, so
any later message names the span and line (or row) of a bad cell.
"""
import dataclasses
from typing import List, Optional, Sequence

from kfx_components.ingest.checks import IngestError
from kfx_components.ingest.reading import Table, read_table


@dataclasses.dataclass(frozen=True)
class Span:
    number: int
    path: str


class WindowTable(Table):
    """The spans' tables one after another; `span_of[i]`: the span row i came from."""

    def __init__(self, df, path: str, kind: str, parts: List[tuple], span_of: List[int], backtest: Optional[int]):
        super().__init__(df, path, None, kind)
        self._parts = parts            # (first row, span number, its Table), in row order
        self.span_of = span_of
        self.backtest = backtest       # the backtest span's number, or None

    def where(self, row: int) -> str:
        start, number, table = max((p for p in self._parts if p[0] <= row), key=lambda p: p[0])
        return f"{table.where(row - start)} of span {number} ({table.path})"

    def is_backtest(self, row: int) -> bool:
        return self.backtest is not None and self.span_of[row] == self.backtest


def check_spans(window: Sequence[Span], backtest: Optional[Span]) -> None:
    """Parameters first: a window names each span once, a backtest span newer than all of them."""
    numbers = [s.number for s in window]
    if len(set(numbers)) != len(numbers):
        raise IngestError(f"spans {numbers}: a window names each span once")
    if backtest is not None and numbers and backtest.number <= max(numbers):
        raise IngestError(f"backtest span {backtest.number} is not newer than the window's spans {numbers}; "
                          f"a temporal backtest judges on data newer than what the model trained on")


def read_window(window: Sequence[Span], backtest: Optional[Span]) -> WindowTable:
    """The window's spans (oldest first) and the backtest span as one table."""
    import pandas as pd
    check_spans(window, backtest)
    spans = list(window) + ([backtest] if backtest is not None else [])
    parts, frames, span_of = [], [], []
    first: Optional[tuple] = None
    for span in spans:
        table = read_table(span.path)
        table.df.columns = [str(c) for c in table.df.columns]
        columns = list(table.df.columns)
        if first is None:
            first = (span, columns)
        else:
            _check_same_columns(first, span, columns)
        parts.append((len(span_of), span.number, table))
        frames.append(table.df)
        span_of += [span.number] * len(table.df)
    df = pd.concat(frames, ignore_index=True)
    kind = "csv" if any(t.kind == "csv" for _, _, t in parts) else "parquet"
    described = ", ".join(str(s.number) for s in window)
    name = f"spans {described}" + (f" (backtest span {backtest.number})" if backtest else "")
    return WindowTable(df, name, kind, parts, span_of, backtest.number if backtest else None)


def _check_same_columns(first: tuple, span: Span, columns: List[str]) -> None:
    oldest, expected = first
    missing = [c for c in expected if c not in columns]
    extra = [c for c in columns if c not in expected]
    if missing or extra:
        detail = f"lacks column {missing[0]!r}" if missing else \
            f"has column {extra[0]!r}, which span {oldest.number} lacks"
        more = len(missing) + len(extra) - 1
        raise IngestError(f"{span.path}: span {span.number} {detail}"
                          f"{f' (and {more} more difference(s))' if more else ''}; every span of a window "
                          f"needs the columns of span {oldest.number} ({oldest.path})")


def rows_per_span(table: WindowTable, kept_rows: Sequence[int]) -> dict:
    """{span number (text, as JSON keys are): rows kept}, oldest span first."""
    counts = {str(number): 0 for number in dict.fromkeys(table.span_of)}
    for i in kept_rows:
        counts[str(table.span_of[i])] += 1
    return counts
