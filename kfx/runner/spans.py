"""Data versions (spans) and the history of runs over them.

A data pattern names where each span lands, as TFX's ExampleGen does:
``incoming/span-{SPAN}/data.csv`` or ``exports/{SPAN}/v{VERSION}.parquet`` (a
``*`` may stand for the file name). ``resolve`` turns it into one concrete file
before anything is imported: the newest span (or the one asked for) and, within
it, the newest version. A new span is therefore a new input, never a cache hit
on the old one. The run records the span as the pipeline parameter ``span``
(the run's MLMD context keeps every parameter), and ``kfx history`` lists the
runs of a root in order: span, rows, drift, metric, what was pushed.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import re
from pathlib import Path
from typing import Optional

SPAN, VERSION = "{SPAN}", "{VERSION}"


class SpanError(ValueError):
    """A data pattern that names no span, or not the one asked for."""


@dataclasses.dataclass(frozen=True)
class Resolved:
    path: str
    span: int
    version: Optional[int]


def is_pattern(data: str) -> bool:
    return SPAN in data


def resolve(pattern: str, span: Optional[int] = None) -> Resolved:
    """The file of the newest span of ``pattern`` (or of ``span``), newest version first."""
    if SPAN not in pattern:
        raise SpanError(f"--data {pattern}: a span pattern needs {SPAN} (e.g. incoming/span-{SPAN}/data.csv)")
    regex = re.escape(pattern).replace(re.escape(SPAN), r"(?P<span>\d+)")
    regex = regex.replace(re.escape(VERSION), r"(?P<version>\d+)").replace(re.escape("*"), "[^/]*")
    wildcard = pattern.replace(SPAN, "*").replace(VERSION, "*")
    found: dict[int, list[tuple[int, str]]] = {}
    for path in glob.glob(wildcard):
        match = re.fullmatch(regex, path)
        if match:
            version = int(match.group("version")) if VERSION in pattern else -1
            found.setdefault(int(match.group("span")), []).append((version, path))
    if not found:
        raise SpanError(f"--data {pattern}: no file matches (looked for {wildcard})")
    chosen = max(found) if span is None else int(span)
    if chosen not in found:
        raise SpanError(f"--data {pattern}: no span {chosen} (spans found: {', '.join(map(str, sorted(found)))})")
    candidates = sorted(found[chosen])
    newest = [p for v, p in candidates if v == candidates[-1][0]]
    if len(newest) > 1:
        raise SpanError(f"--data {pattern}: span {chosen} has {len(newest)} files ({', '.join(newest[:3])}); "
                        "one file per span (and version) is expected")
    version = candidates[-1][0]
    return Resolved(str(Path(newest[0]).resolve()), chosen, None if version < 0 else version)


# ---------------------------------------------------------------- history

def history(root: str) -> list[dict]:
    """One row per run under ``root``, oldest first: what it ran on and what it ended with."""
    from kfx.stores.metadata import RUN_CONTEXT, MetadataStore, prop

    md = MetadataStore(str(Path(root) / "metadata.sqlite"))
    rows = []
    for ctx in sorted(md.store.get_contexts_by_type(RUN_CONTEXT), key=lambda c: c.id):
        params = json.loads(ctx.custom_properties["parameters"].string_value or "{}") \
            if "parameters" in ctx.custom_properties else {}
        row = {"run": ctx.name, "span": params.get("span", 0), "data": params.get("data_uri", ""),
               "rows": None, "drift": "", "metric": None, "outcome": "", "state": "COMPLETE"}
        data_line = ""
        for execution in md.store.get_executions_by_context(ctx.id):
            task = prop(execution, "task_name") or ""
            if execution.last_known_state == 4 and row["state"] == "COMPLETE":   # FAILED
                row["state"] = f"FAILED at {task}"
            outputs = _outputs(md, execution.id)
            for name, meta in outputs.items():
                if task == "ingest" and "rows" in meta:
                    row["rows"] = meta["rows"]
                if "drifted_features" in meta and name == "drift":
                    row["drift"] = ", ".join(meta["drifted_features"]) or "none"
                if task == "evaluate" and name == "blessing":
                    trust = meta.get("trust") or {}
                    row["metric"] = {"name": trust.get("metric"), "value": (trust.get("model") or {}).get("metric"),
                                     "blessed": meta.get("blessed")}
                if meta.get("summary"):
                    # What ingest left out of the file is the outcome only when no later step says one.
                    if task == "ingest":
                        data_line = data_line or meta["summary"]
                    else:
                        row["outcome"] = meta["summary"]
        row["outcome"] = row["outcome"] or data_line
        rows.append(row)
    return rows


def _outputs(md, execution_id: int) -> dict:
    from ml_metadata.proto import metadata_store_pb2 as pb
    events = [e for e in md.store.get_events_by_execution_ids([execution_id]) if e.type == pb.Event.OUTPUT]
    artifacts = {a.id: a for a in md.store.get_artifacts_by_id([e.artifact_id for e in events])}
    out = {}
    for e in events:
        name = e.path.steps[0].key if e.path.steps else str(e.artifact_id)
        out[name] = md.stored_artifact(artifacts[e.artifact_id]).metadata
    return out


def render(rows: list[dict]) -> str:
    """A plain-text table of the history."""
    header = ["run", "span", "rows", "drift", "metric", "outcome"]
    lines = []
    for r in rows:
        metric = r["metric"] or {}
        value = metric.get("value")
        lines.append([r["run"], str(r["span"]), "" if r["rows"] is None else str(r["rows"]), r["drift"],
                      "" if value is None else f"{metric.get('name')} {value:.4f}",
                      r["outcome"] if r["state"] == "COMPLETE" else r["state"]])
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    return "\n".join([fmt.format(*header)] + [fmt.format(*l) for l in lines])
