"""Data versions (spans) and the history of runs over them.

A data pattern names where each span lands, as TFX's ExampleGen does:
``incoming/span-{SPAN}/data.csv`` or ``exports/{SPAN}/v{VERSION}.parquet`` (a
``*`` may stand for the file name). ``resolve`` turns it into one concrete file
before anything is imported: the newest span (or the one asked for) and, within
it, the newest version. A new span is therefore a new input, never a cache hit
on the old one. The run records the span as the pipeline parameter ``span``
(the run's MLMD context keeps every parameter), and ``kfx history`` lists the
runs of a root in order: span, rows, drift, metric, what was pushed.

``window`` (kfx run --train-spans K) resolves a pattern to the K spans a run
trains on and, for the temporal backtest, the newest span, held out; the run
records them as the parameters ``spans`` and ``backtest_span`` (Window.parameters).
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
    found = _found(pattern)
    chosen = max(found) if span is None else int(span)
    if chosen not in found:
        raise SpanError(f"--data {pattern}: no span {chosen} (spans found: {_listed(found)})")
    return _newest_version(pattern, chosen, found[chosen])


def _found(pattern: str) -> dict[int, list[tuple[int, str]]]:
    """{span: [(version, path)]} of the files ``pattern`` matches (version -1 without {VERSION})."""
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
    return found


def _listed(found) -> str:
    return ", ".join(map(str, sorted(found)))


def _newest_version(pattern: str, span: int, files: list[tuple[int, str]]) -> Resolved:
    candidates = sorted(files)
    newest = [p for v, p in candidates if v == candidates[-1][0]]
    if len(newest) > 1:
        raise SpanError(f"--data {pattern}: span {span} has {len(newest)} files ({', '.join(newest[:3])}); "
                        "one file per span (and version) is expected")
    version = candidates[-1][0]
    return Resolved(str(Path(newest[0]).resolve()), span, None if version < 0 else version)


# ---------------------------------------------------------------- windows of spans

@dataclasses.dataclass(frozen=True)
class Window:
    """The spans a run trains on (oldest first) and the newer one it is backtested on (or None)."""
    spans: tuple[Resolved, ...]
    backtest: Optional[Resolved]

    @property
    def newest(self) -> Resolved:
        """The newest span of the window and backtest: the file the pipeline imports."""
        return self.backtest or self.spans[-1]

    def parameters(self) -> dict:
        """The pipeline parameters that carry the window to ingest and record it with the run."""
        files = [s.path for s in self.spans] + ([self.backtest.path] if self.backtest else [])
        return {"data_uri": self.newest.path, "span": self.newest.span,
                "spans": [s.span for s in self.spans], "span_uris": [s.path for s in self.spans],
                "backtest_span": self.backtest.span if self.backtest else 0,
                "backtest_uri": self.backtest.path if self.backtest else "",
                "span_fingerprint": _fingerprint(files)}


def parameters(pattern: str, params: dict) -> dict:
    """The parameters a data pattern resolves to, given the run's: one span (data_uri, span) or,
    with ``train_spans``, a window (Window.parameters; ``temporal_backtest``, default true)."""
    if not params.get("train_spans"):
        found = resolve(pattern, params.get("span"))
        return {"data_uri": found.path, "span": found.span}
    return window(pattern, params["train_spans"], bool(params.get("temporal_backtest", True)),
                  params.get("span")).parameters()


def window(pattern: str, train_spans: int, backtest: bool = True, span: Optional[int] = None) -> Window:
    """The newest ``train_spans`` spans of ``pattern`` up to ``span`` (default: the newest); with
    ``backtest`` the newest of them is held out and the window is the ``train_spans`` before it."""
    if not isinstance(train_spans, int) or isinstance(train_spans, bool) or train_spans < 1:
        raise SpanError(f"train_spans={train_spans!r}: the number of spans to train on, at least 1")
    found = _found(pattern)
    newest = max(found) if span is None else int(span)
    if newest not in found:
        raise SpanError(f"--data {pattern}: no span {newest} (spans found: {_listed(found)})")
    usable = sorted(n for n in found if n <= newest)
    needed = train_spans + (1 if backtest else 0)
    if len(usable) < needed:
        how = f"{train_spans} to train on and a newer one for the temporal backtest" if backtest else \
            f"{train_spans} to train on"
        hint = "; fewer train_spans, or --no-backtest to train on the newest without one" if backtest else \
            "; fewer train_spans"
        upto = f" up to span {newest}" if span is not None else ""
        raise SpanError(f"--data {pattern}: train_spans={train_spans} needs {needed} spans ({how}); "
                        f"found {len(usable)}{upto}: {_listed(usable)}{hint}")
    chosen = [_newest_version(pattern, n, found[n]) for n in usable[-needed:]]
    if backtest:
        return Window(tuple(chosen[:-1]), chosen[-1])
    return Window(tuple(chosen), None)


def _fingerprint(paths: list[str]) -> str:
    """One hash of the files' contents: a span file changed in place is a new input, so the run's
    cache (keyed by the parameters ingest takes) misses, as it does for the imported file."""
    import hashlib

    from kfx.stores.local import fingerprint_path
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path}\0{fingerprint_path(Path(path))}\0".encode())
    return digest.hexdigest()


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
               "spans": params.get("spans") or [], "backtest_span": params.get("backtest_span") or 0,
               "rows": None, "drift": "", "metric": None, "outcome": "", "state": "COMPLETE"}
        data_line = ""
        # In the order they ran (MLMD lists the newest first): the last step's summary is the outcome.
        for execution in sorted(md.store.get_executions_by_context(ctx.id), key=lambda e: e.id):
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
        lines.append([r["run"], _span_cell(r), "" if r["rows"] is None else str(r["rows"]), r["drift"],
                      "" if value is None else f"{metric.get('name')} {value:.4f}",
                      r["outcome"] if r["state"] == "COMPLETE" else r["state"]])
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    return "\n".join([fmt.format(*header)] + [fmt.format(*l) for l in lines])


def _span_cell(row: dict) -> str:
    """'3', or a window's spans and its backtest span: '1,2 bt 3'."""
    if not row.get("spans"):
        return str(row["span"])
    backtest = f" bt {row['backtest_span']}" if row.get("backtest_span") else ""
    return ",".join(map(str, row["spans"])) + backtest
