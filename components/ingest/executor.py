"""Ingest: a CSV or Parquet table -> train/eval/test GZIP TFRecords of tf.train.Example.

Bad input is refused before anything is written, with a ValueError whose
message is one line: the file, where it applies the line (CSV, counting the
header as line 1) or row (Parquet), the column or parameter, and what to do.
Problems that do not stop the run (a column empty in every row, labels
missing in some rows, small classes) are named warnings: printed to the step
log and returned in the facts under ``warnings``.

The parts: checks (parameters, column names), reading, label, column_types,
split, and the two engines that use them, pandas_path and beam_path.
"""
import os
from typing import Sequence

from kfx_components.ingest import pandas_path
from kfx_components.ingest.checks import IngestError, check_parameters
from kfx_components.ingest.reading import resolve_data_path
from kfx_components.ingest.window import Span

# engine="auto": tables from this size up stream through Beam (beam_path.py); smaller ones are
# read whole by pandas (faster to start, and the reference the Beam path is tested against).
BEAM_MIN_BYTES = 64 * 2 ** 20   # KFX_INGEST_BEAM_MIN_BYTES overrides it


def run(data_path: str, examples_dir: str, label: str, problem_type: str, eval_ratio: float = 0.15,
        test_ratio: float = 0.2, drop_columns: Sequence[str] = (), split_key: str = "",
        engine: str = "auto", beam_pipeline_args: Sequence[str] = (), span_paths: Sequence[str] = (),
        spans: Sequence[int] = (), backtest_path: str = "", backtest_span: int = 0) -> dict:
    """Read the table, encode the label, split train/eval/test, write GZIP TFRecords.

    A window of spans (kfx run --train-spans K): span_paths, the files of the spans numbered
    `spans` (oldest first), are read instead of data_path, as one table, and split as one; the
    file of the newer span backtest_span, when backtest_path names it, is written whole as the
    split io.BACKTEST. The facts then say the spans, rows_per_span and rows_backtest.

    engine: "pandas" reads the table whole; "beam" streams it through two Beam pipelines
    (run with beam_pipeline_args, as validate/transform/evaluate are); "auto" (the default)
    takes Beam for files of at least KFX_INGEST_BEAM_MIN_BYTES (64 MiB) without a split_key.
    Raises ValueError (IngestError) with a one-line message for any bad input;
    nothing is written then.
    """
    try:
        if span_paths or backtest_path:
            return _run_window(data_path, examples_dir, label, problem_type, eval_ratio, test_ratio, drop_columns,
                               split_key, engine, span_paths, spans, backtest_path, backtest_span)
        return _run(data_path, examples_dir, label, problem_type, eval_ratio, test_ratio,
                    drop_columns, split_key, engine, beam_pipeline_args)
    except IngestError:
        raise
    except Exception as err:  # noqa: BLE001 - a failure nobody foresaw still reads as one line
        raise IngestError(f"{data_path}: ingest failed unexpectedly ({type(err).__name__}: {err}); "
                          f"the step log has the traceback") from err


def _run(data_path, examples_dir, label, problem_type, eval_ratio, test_ratio, drop_columns, split_key,
         engine="auto", beam_pipeline_args=()) -> dict:
    # Parameters first: nothing is read or written for a bad call.
    eval_ratio, test_ratio, drop_columns, split_key = check_parameters(
        data_path, label, problem_type, eval_ratio, test_ratio, drop_columns, split_key, engine)
    path = resolve_data_path(data_path)
    if _use_beam(path, engine, split_key):
        from kfx_components.ingest import beam_path
        return beam_path.run(path, data_path, examples_dir, label, problem_type, eval_ratio, test_ratio,
                             drop_columns, beam_pipeline_args)
    return pandas_path.run(path, data_path, examples_dir, label, problem_type, eval_ratio, test_ratio,
                           drop_columns, split_key)


def _run_window(data_path, examples_dir, label, problem_type, eval_ratio, test_ratio, drop_columns, split_key,
                engine, span_paths, spans, backtest_path, backtest_span) -> dict:
    eval_ratio, test_ratio, drop_columns, split_key = check_parameters(
        data_path, label, problem_type, eval_ratio, test_ratio, drop_columns, split_key, engine)
    if len(span_paths) != len(spans) or not spans:
        raise IngestError(f"spans {list(spans)} and span files {list(span_paths)}: a window needs one span "
                          f"number per file, and at least one span")
    if engine == "beam":
        raise IngestError("engine 'beam' reads one file; a window of spans is read by the pandas engine: "
                          "use engine 'pandas' or 'auto'")
    window = [Span(int(n), resolve_data_path(p)) for n, p in zip(spans, span_paths)]
    backtest = Span(int(backtest_span), resolve_data_path(backtest_path)) if backtest_path else None
    return pandas_path.run_window(window, backtest, examples_dir, label, problem_type, eval_ratio, test_ratio,
                                  drop_columns, split_key)


def _use_beam(path: str, engine: str, split_key: str) -> bool:
    if engine == "pandas":
        return False
    if engine == "beam":
        if split_key:
            raise IngestError(f"{path}: split_key is handled by the pandas engine only; "
                              f"use engine 'pandas' or 'auto' with a split_key")
        return True
    if split_key:
        return False
    size = os.path.getsize(path)
    if path.lower().endswith(".gz"):
        size *= 5   # about what gzip saves on CSV
    return size >= _beam_min_bytes()


def _beam_min_bytes() -> int:
    raw = os.environ.get("KFX_INGEST_BEAM_MIN_BYTES", "").strip()
    if raw and not raw.isdigit():
        raise IngestError(f"KFX_INGEST_BEAM_MIN_BYTES={raw!r} is not a whole number of bytes")
    return int(raw) if raw else BEAM_MIN_BYTES
