"""The facts that travel downstream with the data, from artifact to artifact.

ingest learns what the problem is (label key, problem type, classes); every
later stage reads them from its input artifact's metadata and puts them on
its outputs with ``carried``, so any artifact says what it is about.
ingest also says what it left out of the file (``left_out``); push's card
reads that from the examples artifact (``left_out_line``).
"""
from __future__ import annotations

from typing import Any, Mapping

TRAVELLING = ("label_key", "problem_type", "num_classes", "label_vocabulary")


def carried(metadata: Mapping[str, Any]) -> dict:
    """The travelling facts present in an input artifact's metadata."""
    return {key: metadata[key] for key in TRAVELLING if key in metadata}


def left_out(rows_used: int, dropped_rows: int, dropped_columns=(), empty_columns=()) -> dict:
    """What ingest left out of the file, as facts beside the file's own row count (every row of
    the file is either used, in a split, or dropped for a missing label). `summary`, present when
    something was left out, is the line the run ends with (kfx's stage-neutral convention)."""
    facts = {"rows_in_file": rows_used + dropped_rows, "dropped_columns": list(dropped_columns),
             "empty_columns": list(empty_columns)}
    line = left_out_line({**facts, "rows": rows_used, "dropped_rows": dropped_rows})
    if line:
        facts["summary"] = line
    return facts


def left_out_line(facts: Mapping[str, Any]) -> str:
    """'data: 7,425 rows in the file; 3,278 dropped (label missing); 4,147 used; columns left out:
    'x' (drop_columns)' from an examples artifact's facts, or "" when nothing was left out."""
    dropped, dropped_columns = facts.get("dropped_rows") or 0, facts.get("dropped_columns") or []
    empty = facts.get("empty_columns") or []
    if not (dropped or dropped_columns or empty):
        return ""
    total = facts.get("rows_in_file", (facts.get("rows") or 0) + dropped)
    parts = [f"{total:,} rows in the file"]
    if dropped:
        parts += [f"{dropped:,} dropped (label missing)", f"{total - dropped:,} used"]
    else:
        parts[0] += ", all used"
    if dropped_columns:
        parts.append(f"columns left out: {_names(dropped_columns)} (drop_columns)")
    if empty:
        parts.append(f"columns with no values: {_names(empty)}")
    return "data: " + "; ".join(parts)


def _names(columns, shown: int = 10) -> str:
    names = ", ".join(repr(str(c)) for c in list(columns)[:shown])
    return names + (f" and {len(columns) - shown} more" if len(columns) > shown else "")
