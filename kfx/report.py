"""The run report: one self-contained HTML page a person can open.

Summary first (the verdict, the metric against its references, the model variants' size and
latency, drift, the step timeline), each step's details below, collapsed. Built from what the run
recorded (step states and times, every output artifact's metadata, the HTML views the stages
wrote) by conventions any stage may follow (`blessed`, `trust`, `variants`, `drift_checked`...),
so it knows no stage by name. Drawn with the UI's charts (kfx.views.charts); no script, no external
asset: a stage's page is framed (srcdoc) at a fixed height and scrolls inside, which reads the same
opened alone and inside `kfx ui` (where a sandbox runs no script, so no frame could size itself).
"""
from __future__ import annotations

import html
from pathlib import Path

from kfx.runner import outcome
from kfx.runner.run_context import RunResult
from kfx.views import charts, run_records

_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em 2em;max-width:1200px}
table{border-collapse:collapse;margin:.3em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.FAILED{color:#b00;font-weight:bold}.CACHED{color:#666}.SKIPPED{color:#888;font-style:italic}
iframe{width:100%;height:80vh;border:1px solid #ccc;display:block;resize:vertical;overflow:auto}code{font-size:90%}
.verdict{font-size:1.25em;padding:.4em .8em;border-radius:4px;display:inline-block;margin:.2em 0}
.good{background:#e8f5e9;color:#1b5e20}.bad{background:#ffebee;color:#b71c1c}.neutral{background:#eceff1}
.charts{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}.charts h3{margin:.2em 0;font-size:1em}
details.step{border:1px solid #ddd;border-radius:4px;margin:.3em 0;padding:.2em .6em}
details.step>summary{cursor:pointer;font-weight:600}.muted{color:#888}
td table{margin:0}td td,td th{font-size:92%}h2{margin:.8em 0 .3em}"""
_MAX_TEXT = 300
_MAX_ROWS = 25


def _text(v) -> str:
    if isinstance(v, float):
        text = f"{int(v):,}" if v.is_integer() else f"{v:.4g}"
    else:
        text = str(v)
    return html.escape(text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + " ...")


def _numbers(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)


def _cell(v, depth: int = 0) -> str:
    """A metadata value as a person reads it: curves drawn, records as tables, never JSON text."""
    if isinstance(v, dict) and v and all(_numbers(x) for x in v.values()):
        return charts.curves(v, "curves")
    if _numbers(v):
        return charts.curves({"value": v}, "values") if len(v) > 3 else ", ".join(_text(x) for x in v)
    if isinstance(v, dict):
        if not v:
            return "<span class='muted'>none</span>"
        if depth >= 3:
            return _text(", ".join(f"{k}: {x if not isinstance(x, (dict, list)) else '...'}" for k, x in v.items()))
        return _table([[_text(k), _cell(x, depth + 1)] for k, x in v.items()], [])
    if isinstance(v, list):
        if not v:
            return "<span class='muted'>none</span>"
        if all(not isinstance(x, (dict, list)) for x in v):
            return _text(", ".join(str(x) for x in v))
        rows = v[:_MAX_ROWS]
        if all(isinstance(x, dict) for x in rows) and depth < 3:
            keys = list(dict.fromkeys(k for x in rows for k in x))
            body = _table([[_cell(x.get(k, ""), depth + 1) for k in keys] for x in rows], keys)
        else:
            body = "".join(f"<div>{_cell(x, depth + 1)}</div>" for x in rows)
        return body + (f"<p class='muted'>... {len(v) - _MAX_ROWS} more</p>" if len(v) > _MAX_ROWS else "")
    return _text(v)


def _table(rows: list[list], header: list[str]) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _verdict(result: RunResult) -> str:
    """The run's state, and the first blessing's verdict and reasons (`blessed`, `reasons`)."""
    if result.state == "FAILED":
        line = result.error_line or (result.error.splitlines() or ["failed"])[0]
        return f"<div class='verdict bad'>FAILED: {html.escape(line)}</div>"
    for name, _, artifact in outcome.outputs(result):
        if "blessed" in artifact.metadata:
            reasons = artifact.metadata.get("reasons") or []
            text = ("BLESSED" if artifact.metadata["blessed"] else "NOT BLESSED") + f" by {name}"
            reasons_text = "".join(f"<li>{html.escape(str(r))}</li>" for r in reasons)
            return (f"<div class='verdict {'good' if artifact.metadata['blessed'] else 'bad'}'>{html.escape(text)}</div>"
                    + (f"<ul>{reasons_text}</ul>" if reasons_text else ""))
    return f"<div class='verdict neutral'>{html.escape(result.state)}</div>"


def _trust_chart(result: RunResult) -> str:
    """evaluate's `trust` facts: the model, the trivial predictor and each reference, with intervals."""
    for name, _, artifact in outcome.outputs(result):
        trust = artifact.metadata.get("trust")
        if not isinstance(trust, dict) or not isinstance(trust.get("model"), dict):
            continue
        entries = [("model", trust["model"])]
        if isinstance(trust.get("trivial"), dict):
            entries.append(("trivial", trust["trivial"]))
        references = {k: ref for k, ref in (trust.get("references") or {}).items() if isinstance(ref, dict)}
        entries += list(references.items())
        rows = []
        for label, entry in entries:
            if isinstance(entry.get("metric"), (int, float)):
                ci = entry.get("ci") if isinstance(entry.get("ci"), list) and len(entry["ci"]) == 2 else [None, None]
                rows.append((label, float(entry["metric"]), ci[0], ci[1]))
        metric = str(trust.get("metric", "metric"))
        conf = trust.get("confidence")
        title = f"{metric} on the test split ({name})" + (f", {conf:.0%} intervals" if isinstance(conf, float) else "")
        estimators = "; ".join(f"{k}: {ref['estimator']}" for k, ref in references.items() if ref.get("estimator"))
        return (f"<div><h3>{html.escape(title)}</h3>{charts.intervals(rows, metric)}"
                f"<p class='muted'>{html.escape(estimators)}</p></div>")
    return ""


def _variant_charts(result: RunResult) -> str:
    """A model's `variants` (quantize's): each variant's file size and single-example latency."""
    for name, _, artifact in outcome.outputs(result):
        variants = artifact.metadata.get("variants")
        if not isinstance(variants, dict) or not variants:
            continue
        sizes = [(k, float(v["size_bytes"]) / 1024) for k, v in variants.items()
                 if isinstance(v, dict) and isinstance(v.get("size_bytes"), (int, float))]
        latency = [(k, float(v["latency"]["single_call"]["median_ms"])) for k, v in variants.items()
                   if isinstance(v, dict) and isinstance((v.get("latency") or {}).get("single_call"), dict)
                   and isinstance(v["latency"]["single_call"].get("median_ms"), (int, float))]
        chosen = artifact.metadata.get("recommended")
        note = f"<p>recommended: <b>{html.escape(str(chosen))}</b></p>" if chosen else ""
        return (f"<div><h3>model variants ({html.escape(name)}): size</h3>{charts.bars(sizes, 'variant size', 'KB')}"
                f"<h3>single-example latency (median)</h3>{charts.bars(latency, 'variant latency', 'ms')}{note}</div>")
    return ""


def _roc_chart(result: RunResult) -> str:
    """The first ClassificationMetrics' ROC curve (its `confidenceMetrics`)."""
    for name, out, artifact in outcome.outputs(result):
        if artifact.type == "system.ClassificationMetrics" and artifact.metadata.get("confidenceMetrics"):
            return (f"<div><h3>ROC ({html.escape(name)} / {html.escape(out)})</h3>"
                    f"{charts.roc([(name, charts.roc_points(artifact.metadata))], size=260)}</div>")
    return ""


def _data_checks(result: RunResult) -> list[str]:
    """Drift (`drift_checked`, `drifted_features`) and anomalies (`num_anomalies`), one line each."""
    lines = []
    for name, out, artifact in outcome.outputs(result):
        meta = artifact.metadata
        if "drift_checked" in meta:
            drifted = meta.get("drifted_features") or []
            lines.append(f"{name}: " + ("not checked (no previous span)" if not meta["drift_checked"] else
                                        f"drift in {', '.join(map(str, drifted))}" if drifted else
                                        "no feature drifted from the previous span"))
        elif "num_anomalies" in meta and out != "report":
            lines.append(f"{name}: {meta['num_anomalies']} anomal{'y' if meta['num_anomalies'] == 1 else 'ies'}")
    for name, step in result.steps.items():
        if step.state == "FAILED" and name in ("check-drift", "validate") and step.error:
            lines.append(f"{name}: {step.error}")
    return lines


def _executions(result: RunResult) -> list[dict]:
    """The run's steps with their start and end, from MLMD; without a store, laid end to end."""
    try:
        found = run_records.executions(run_records.Root(result.root), result.run_id)
    except Exception:   # noqa: BLE001 - the report is written even when the store cannot be read
        found = []
    if found:
        return found
    start, rows = 0.0, []
    for name, step in result.steps.items():
        rows.append({"name": name, "state": step.state, "start": start, "end": start + step.seconds})
        start += step.seconds
    return rows


def _steps_table(result: RunResult) -> str:
    rows = []
    for name, step in result.steps.items():
        outs = ", ".join(f"{k} ({a.type.removeprefix('system.')})" for k, a in step.outputs.items())
        if step.state == "SKIPPED":
            outs = f"skipped: {step.skipped}" if step.skipped else "skipped"
        rows.append([f"<a href='#step-{html.escape(name, quote=True)}'>{html.escape(name)}</a>",
                     f"<span class='{step.state}'>{step.state}</span>", f"{step.seconds:.1f}s", html.escape(outs)])
    return _table(rows, ["step", "state", "time", "outputs"])


def _frame(title: str, body: str) -> str:
    return (f"<h4>{html.escape(title)}</h4><iframe title=\"{html.escape(title, quote=True)}\" "
            f"srcdoc=\"{html.escape(body, quote=True)}\"></iframe>")


def _step_details(name: str, step) -> str:
    parts = []
    for out, art in step.outputs.items():
        size = _size(Path(art.uri)) if art.uri and not art.uri.startswith("s3://") else None
        rows = [[html.escape(str(k)), _cell(v)] for k, v in sorted(art.metadata.items())]
        if size:
            rows.append(["size on disk", f"{size:,} bytes"])
        parts.append(f"<h3>{html.escape(out)} <small>({html.escape(art.type)}, artifact {art.id})</small></h3>"
                     f"<p><code>{html.escape(art.uri)}</code></p>" + (_table(rows, ["key", "value"]) if rows else ""))
        if art.type == "system.HTML" and Path(art.uri).is_file():
            parts.append(_frame(f"{name} / {out}", Path(art.uri).read_text(errors="replace")))
    if step.parameters:
        parts.append("<h3>output parameters</h3>" + _table([[html.escape(k), _cell(v)] for k, v in step.parameters.items()],
                                                           ["parameter", "value"]))
    if step.kept:
        # A failed step's own views (validate's anomalies page) say why the run stopped.
        parts.append(f"<h3 class='FAILED'>{html.escape(name)}: failed; its unregistered outputs are in "
                     f"<code>{html.escape(step.kept)}</code></h3>")
        parts += [_frame(f"{name} / {page.relative_to(step.kept)} (failed step)", page.read_text(errors="replace"))
                  for page in sorted(Path(step.kept).rglob("*.html"))]
    if step.log:
        parts.append(f"<p>log: <code>{html.escape(step.log)}</code></p>")
    opened = " open" if step.state == "FAILED" else ""
    return (f"<details class='step' id='step-{html.escape(name, quote=True)}'{opened}><summary>{html.escape(name)} "
            f"&middot; <span class='{step.state}'>{step.state}</span> &middot; {step.seconds:.1f}s</summary>"
            + ("".join(parts) or "<p class='muted'>no outputs</p>") + "</details>")


def write(result: RunResult, path: Path) -> Path:
    parts = [f"<h1>Run {html.escape(result.run_id)}</h1>",
             f"<p>pipeline <b>{html.escape(result.pipeline)}</b> &middot; state "
             f"<b class='{result.state}'>{result.state}</b> &middot; {result.seconds:.1f}s</p>", _verdict(result)]
    if result.error:
        parts.append(f"<details{' open' if len(result.error) < 2000 else ''}><summary>the error</summary>"
                     f"<pre class='FAILED'>{html.escape(result.error)}</pre></details>")
    lines = outcome.outcome_lines(result)
    if lines:
        parts.append("<h2>Outcome</h2><ul class='outcome'>"
                     + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>")
    warnings = outcome.warning_lines(result)
    if warnings:
        parts.append("<h2>Warnings</h2><ul class='warnings'>"
                     + "".join(f"<li>{html.escape(line)}</li>" for line in warnings) + "</ul>")
    summary = _trust_chart(result) + _variant_charts(result) + _roc_chart(result)
    if summary:
        parts.append(f"<h2>Metric and model</h2><div class='charts'>{summary}</div>")
    checks = _data_checks(result)
    if checks:
        parts.append("<h2>Data checks</h2><ul class='checks'>"
                     + "".join(f"<li>{html.escape(line)}</li>" for line in checks) + "</ul>")
    parts.append(f"<h2>Steps</h2>{charts.timeline(_executions(result))}{_steps_table(result)}")
    metrics = [(name, out, art) for name, out, art in outcome.outputs(result) if art.type == "system.Metrics" and art.metadata]
    if metrics:
        parts.append("<details class='step'><summary>Metrics</summary>" + _table(
            [[html.escape(f"{name} / {out}"), html.escape(k), _cell(v)]
             for name, out, art in metrics for k, v in sorted(art.metadata.items())],
            ["step / output", "metric", "value"]) + "</details>")
    parts.append("<details class='step'><summary>Parameters</summary>"
                 + _table([[html.escape(k), _cell(v)] for k, v in result.parameters.items()], ["parameter", "value"])
                 + "</details>")
    parts.append("<h2>Each step</h2>" + "".join(_step_details(name, step) for name, step in result.steps.items()))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>kfx run {html.escape(result.run_id)}"
            f"</title><link rel='icon' href='data:,'><style>{_STYLE}\n{charts.STYLE}</style></head><body>{''.join(parts)}</body></html>")
    path.write_text(page)
    return path
