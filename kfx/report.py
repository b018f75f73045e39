"""The run report: one self-contained HTML page a person can open.

Built from what the run recorded (step states and times, every output
artifact's metadata, metrics, and the HTML views the stages wrote), so it
knows nothing about any particular stage.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from kfx.runner import RunResult

_FIT = "this.style.height=(this.contentDocument.documentElement.scrollHeight+24)+'px'"
_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.FAILED{color:#b00;font-weight:bold}.CACHED{color:#666}.SKIPPED{color:#888;font-style:italic}
iframe{width:100%;height:600px;border:1px solid #ccc;display:block}code{font-size:90%}"""

_MAX_VALUE = 300


def _value(v) -> str:
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    if isinstance(v, float):
        text = f"{int(v):,}" if v.is_integer() else f"{v:.4g}"
    if len(text) > _MAX_VALUE:
        text = text[:_MAX_VALUE] + " ..."
    return html.escape(text)


def _table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def outcome_lines(result: RunResult) -> list[str]:
    """What a run ends with, by a convention any component may follow: an output artifact's
    metadata `summary` (one line) is shown as is (ingest's says what it left out of the file,
    push's what it published), and `published: true` shows its URI (an artifact a step put
    outside the run's store, e.g. a registry version)."""
    lines = []
    for step in result.steps.values():
        for artifact in step.outputs.values():
            if artifact.metadata.get("summary"):
                lines.append(" ".join(str(artifact.metadata["summary"]).split()))
            if artifact.metadata.get("published"):
                lines.append(f"published: {artifact.uri}")
    return lines


def warning_lines(result: RunResult) -> list[str]:
    """Every output artifact's metadata `warnings` (a list of one-line texts), by step: what a
    stage let pass but a person must know (rows it dropped, a test split too small to trust)."""
    lines = []
    for name, step in result.steps.items():
        for artifact in step.outputs.values():
            warnings = artifact.metadata.get("warnings")
            if isinstance(warnings, list):
                lines += [f"{name}: {' '.join(str(w).split())}" for w in warnings]
    return lines


def write(result: RunResult, path: Path) -> Path:
    parts = [f"<h1>Run {html.escape(result.run_id)}</h1>",
             f"<p>pipeline <b>{html.escape(result.pipeline)}</b> &middot; state "
             f"<b class='{result.state}'>{result.state}</b> &middot; {result.seconds:.1f}s</p>"]
    if result.error:
        parts.append(f"<pre class='FAILED'>{html.escape(result.error)}</pre>")
    parts.append("<h2>Steps</h2>")
    rows = []
    for name, step in result.steps.items():
        outs = ", ".join(f"{k} ({a.type.removeprefix('system.')})" for k, a in step.outputs.items())
        if step.state == "SKIPPED":
            outs = f"skipped: {step.skipped}" if step.skipped else "skipped"
        rows.append([html.escape(name), f"<span class='{step.state}'>{step.state}</span>",
                     f"{step.seconds:.1f}s", html.escape(outs)])
    parts.append(_table(rows, ["step", "state", "time", "outputs"]))
    outcome = outcome_lines(result)
    if outcome:
        parts.append("<h2>Outcome</h2><ul class='outcome'>"
                     + "".join(f"<li>{html.escape(line)}</li>" for line in outcome) + "</ul>")
    warnings = warning_lines(result)
    if warnings:
        parts.append("<h2>Warnings</h2><ul class='warnings'>"
                     + "".join(f"<li>{html.escape(line)}</li>" for line in warnings) + "</ul>")
    metrics = [(name, out, art) for name, st in result.steps.items() for out, art in st.outputs.items()
               if art.type == "system.Metrics" and art.metadata]
    if metrics:
        parts.append("<h2>Metrics</h2>" + _table(
            [[html.escape(f"{name} / {out}"), html.escape(k), _value(v)]
             for name, out, art in metrics for k, v in sorted(art.metadata.items())],
            ["step / output", "metric", "value"]))
    parts.append("<h2>Parameters</h2>" + _table([[html.escape(k), _value(v)] for k, v in result.parameters.items()],
                                                 ["parameter", "value"]))
    views = []
    parts.append("<h2>Artifacts</h2>")
    for name, step in result.steps.items():
        for out, art in step.outputs.items():
            if art.type == "system.HTML" and Path(art.uri).is_file():
                views.append((f"{name} / {out}", Path(art.uri).read_text(errors="replace")))
            if not art.metadata and art.type != "system.Model":
                continue
            size = _size(Path(art.uri)) if not art.uri.startswith("s3://") else None
            rows = [[html.escape(str(k)), _value(v)] for k, v in sorted(art.metadata.items())]
            if size:
                rows.append(["size on disk", f"{size:,} bytes"])
            parts.append(f"<h3>{html.escape(name)} &rarr; {html.escape(out)} "
                         f"<small>({html.escape(art.type)}, artifact {art.id})</small></h3>"
                         f"<p><code>{html.escape(art.uri)}</code></p>" + _table(rows, ["key", "value"]))
        if step.kept:
            # A failed step's own views (validate's anomalies page) say why the run stopped.
            parts.append(f"<h3 class='FAILED'>{html.escape(name)}: failed; its unregistered outputs are in "
                         f"<code>{html.escape(step.kept)}</code></h3>")
            views += [(f"{name} / {page.relative_to(step.kept)} (failed step)", page.read_text(errors="replace"))
                      for page in sorted(Path(step.kept).rglob("*.html"))]
    for title, body in views:
        # Sized to its content once loaded (same-origin srcdoc), so no section is clipped.
        parts.append(f"<h2>{html.escape(title)}</h2><iframe title=\"{html.escape(title, quote=True)}\" "
                     f"onload=\"{_FIT}\" srcdoc=\"{html.escape(body, quote=True)}\"></iframe>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>kfx run {html.escape(result.run_id)}"
            f"</title><style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>")
    path.write_text(page)
    return path
