"""What a page shows for a task and its artifacts, and for the monitoring windows: plain dicts
for the templates, with the SVG drawn here (kfx.views.charts)."""
from __future__ import annotations

import html
from typing import Optional

from markupsafe import Markup

from kfx import gc
from kfx.views import charts, run_records

MAX_LISTED = 20                      # files listed for a directory artifact


def task_view(root: run_records.Root, execution: dict, record: dict) -> dict:
    """A task of a run: state, times, cache, parameters, log tail, artifacts with their viewers."""
    step = (record.get("steps") or {}).get(execution["name"], {})
    log = execution.get("log") or step.get("log")
    end = execution["end"]
    return {**execution, "seconds": step.get("seconds", (end - execution["start"]) if end else None),
            "cached": execution["state"] == "CACHED", "log_tail": run_records.log_tail(log),
            "log_path": root.servable(log), "kept": step.get("kept"),
            "inputs": [artifact_view(root, a) for a in execution["inputs"]],
            "outputs": [artifact_view(root, a) for a in execution["outputs"]]}


def artifact_view(root: run_records.Root, artifact: dict) -> dict:
    """The artifact with a `viewer`: html (framed file), markdown, metrics, roc, files, or none."""
    view = {**artifact, "viewer": "", "files": [], "size": None, "body": None}
    kind, meta, path = artifact["type"], artifact.get("metadata") or {}, artifact.get("path")
    local = root.path / path if path else None
    if local is not None and local.exists():
        view["size"] = gc.size_of(local)
    if kind == "system.HTML" and local is not None and local.is_file():
        view["viewer"] = "html"
    elif kind == "system.Markdown" and local is not None and local.is_file():
        view["viewer"], view["body"] = "markdown", markdown_page(local.read_text(errors="replace"))
    elif kind == "system.Metrics":
        view["viewer"] = "metrics"
    elif kind == "system.ClassificationMetrics":
        points = charts.roc_points(meta)
        view["viewer"] = "classification"
        view["roc"] = Markup(charts.roc([(artifact["name"], points)])) if len(points) > 2 else None
        view["confusion"] = charts.confusion(meta)
    if local is not None and local.is_dir():
        files = sorted(p for p in local.rglob("*") if p.is_file())
        view["files"] = [(p.relative_to(root.path).as_posix(), p.relative_to(local).as_posix(), p.stat().st_size)
                         for p in files[:MAX_LISTED]]
        view["more_files"] = max(0, len(files) - MAX_LISTED)
    return view


def markdown_page(text: str) -> str:
    """Markdown as a small HTML page for a sandboxed frame. Raw HTML in the Markdown is shown as
    text (Python-Markdown passes it through; escaping `&` and `<` first keeps every Markdown
    construct but autolinks); escaped text when Python-Markdown is missing."""
    try:
        import markdown
        body = markdown.markdown(text.replace("&", "&amp;").replace("<", "&lt;"), extensions=["tables", "fenced_code"])
    except ImportError:
        body = f"<pre>{html.escape(text)}</pre>"
    return ("<!doctype html><meta charset='utf-8'><style>body{font-family:system-ui,sans-serif;margin:.5em}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style>" + body)


def monitoring_views(windows: list[dict]) -> list[dict]:
    """Per model (training spans under one heading): heat maps of skew and drift per feature
    across windows, the online metric over time, and the windows that called for retraining."""
    groups: dict[str, list[dict]] = {}
    for window in windows:
        groups.setdefault(window["model"] or "training data: drift between spans (check-drift)", []).append(window)
    views = []
    for name, group in groups.items():
        maps = {}
        for measure in ("skew", "drift"):
            features = sorted({f for w in group for f in w[measure]})
            if features:
                maps[measure] = Markup(charts.heatmap(features, group, _cell(measure)))
        online = [(w["label"], w["online"]["value"], *(w["online"].get("ci") or [None, None])[:2])
                  for w in group if isinstance(w["online"].get("value"), (int, float))]
        reference = next((w["online"].get("reference") for w in reversed(group) if w["online"].get("reference")), None)
        metric = next((w["online"].get("metric") for w in group if w["online"].get("metric")), "metric")
        views.append({"name": name, "windows": group, "maps": maps,
                      "online": Markup(charts.metric_over_time(online, reference, metric)) if online else None,
                      "retrain": [w for w in group if w["retrain"]]})
    return views


def _cell(measure: str):
    def key(window: dict, feature: str) -> tuple[Optional[float], bool]:
        return window[measure].get(feature), feature in window["flagged"] and feature in window[measure]
    return key

