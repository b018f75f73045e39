"""The Flask app: read-only pages over one root, every asset served here (no CDN).

Pages: Runs, a Run (graph, live status, timeline, tasks and their artifacts), Compare, Models,
Lineage, Monitoring. Files under ROOT are served only through kfx.ui.safe, with a CSP that
sandboxes them (no script runs in an artifact page, in a frame or opened alone)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from urllib.parse import quote

from flask import Flask, abort, jsonify, redirect, render_template, request, send_file, url_for
from markupsafe import Markup

from kfx.runner import ir
from kfx.ui import monitoring as monitored, registry, safe, viewers
from kfx.views import charts, graph, run_records

# The UI's own pages: scripts and styles from this server only; frames of this server only.
UI_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
          "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")
# A file from ROOT (an artifact's HTML page, a log): no script at all, same origin only so the UI
# can size its frame to the content; nothing fetched from elsewhere.
FILE_CSP = ("sandbox allow-same-origin; default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "font-src data:; frame-ancestors 'self'")
_TEXT_TYPES = {".txt", ".log", ".json", ".pbtxt", ".yaml", ".yml", ".csv", ".md"}


def create_app(root: str | Path) -> Flask:
    app = Flask(__name__)
    app.config["ROOT"] = run_records.Root(root)
    app.jinja_env.globals.update(fmt_time=_fmt_time, fmt_seconds=_fmt_seconds, fmt_metric=_fmt_metric,
                                 fmt_size=_fmt_size, fmt_value=_fmt_value, quote=quote,
                                 chart_style=Markup(charts.STYLE))

    def root() -> run_records.Root:
        return app.config["ROOT"]

    @app.after_request
    def headers(response):
        response.headers.setdefault("Content-Security-Policy", UI_CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.get("/")
    def index():
        return redirect(url_for("runs"))

    @app.get("/runs")
    def runs():
        page = run_records.runs_page(root(), text=request.args.get("q", ""), state=request.args.get("state", ""),
                              sort=request.args.get("sort", "started"), desc=request.args.get("desc", "1") != "0",
                              page=request.args.get("page", 1, type=int))
        template = "runs_rows.html" if request.args.get("partial") else "runs.html"
        return render_template(template, page=page, root=root().path, active="runs")

    @app.get("/api/runs")
    def runs_api():
        """What the Runs page polls: the count and the newest run (a new run reloads the rows)."""
        page = run_records.runs_page(root(), per_page=1)
        newest = page["rows"][0] if page["rows"] else None
        return jsonify(total=page["total"], newest=newest and newest["run"], state=newest and newest["state"])

    @app.get("/runs/<run_id>")
    def run(run_id: str):
        run_dir = root().run_dir(run_id)
        if run_dir is None:
            abort(404)
        record = run_records.read_record(run_dir) or {}
        executions = run_records.executions(root(), run_id, with_artifacts=True)
        tasks = [viewers.task_view(root(), e, record) for e in executions]
        if request.args.get("partial") == "live":   # what a live run page polls: timeline and tasks so far
            return render_template("run_live.html", timeline=Markup(charts.timeline(executions)), tasks=tasks)
        try:
            pipeline = ir.load(run_dir / "pipeline.yaml")
            drawing = Markup(graph.svg(pipeline, executions, _task_anchor))
        except (ir.IRError, KeyError, OSError) as err:
            pipeline, drawing = None, Markup(f"<p class='muted'>no graph: {escape(str(err))}</p>")
        report = run_dir / "report.html"
        return render_template("run.html", run_id=run_id, record=record, state=run_records.run_state(root(), run_id),
                               report=root().servable(str(report)) if report.is_file() else None,
                               graph=drawing, timeline=Markup(charts.timeline(executions)), tasks=tasks,
                               pipeline=pipeline, active="runs")

    @app.get("/api/runs/<run_id>/status")
    def status(run_id: str):
        if root().run_dir(run_id) is None:
            abort(404)
        return jsonify(run_records.status(root(), run_id))

    @app.get("/compare")
    def compare():
        chosen = [r for r in request.args.getlist("run") if r]
        found = run_records.compare(root(), chosen) if len(chosen) >= 2 else None
        rocs = Markup(charts.roc(found["rocs"])) if found and found["rocs"] else None
        return render_template("compare.html", chosen=chosen, found=found, roc=rocs, active="compare")

    @app.get("/models")
    def models():
        return render_template("models.html", models=registry.models(root()), active="models")

    @app.get("/lineage")
    def lineage():
        uri = request.args.get("uri", "")
        found = run_records.lineage_graph(root(), uri) if uri else None
        drawing = Markup(charts.lineage(found["nodes"], found["edges"], _lineage_href)) if found else None
        return render_template("lineage.html", uri=uri, found=found, drawing=drawing, models=registry.models(root()),
                               active="lineage")

    @app.get("/monitoring")
    def monitoring():
        windows = monitored.windows(root())
        return render_template("monitoring.html", views=viewers.monitoring_views(windows), active="monitoring")

    @app.get("/file/<path:relative>")
    def file(relative: str):
        try:
            path = safe.resolve(root().path, relative)
        except safe.Refused:
            abort(404)
        # KFP artifact files have no extension: the page that links one says what it is (?as=html).
        mimetype = "text/html; charset=utf-8" if request.args.get("as") == "html" or path.suffix in (".html", ".htm") \
            else "text/plain; charset=utf-8" if path.suffix in _TEXT_TYPES or request.args.get("as") == "text" else None
        response = send_file(path, mimetype=mimetype, max_age=0)
        response.headers["Content-Security-Policy"] = FILE_CSP
        return response

    @app.errorhandler(404)
    def not_found(_):
        return render_template("error.html", message="not found", active=""), 404

    return app


def _task_anchor(node: graph.Node) -> str:
    """A task's section on the run page; a sub-DAG's first task's."""
    label = node.label or (node.children[0] if node.children else "")
    return f"#task-{label}"


def _lineage_href(node: dict) -> str:
    if node["kind"] == "execution" and node.get("run"):
        return f"/runs/{quote(node['run'])}"
    return f"/lineage?uri={quote(node.get('uri', ''))}"


def _fmt_time(epoch) -> str:
    if not epoch:
        return ""
    return datetime.fromtimestamp(float(epoch), timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _fmt_seconds(seconds) -> str:
    if seconds is None:
        return ""
    seconds = float(seconds)
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _fmt_metric(metric) -> str:
    if not metric or metric.get("value") is None:
        return ""
    text = f"{metric.get('name') or 'metric'} {metric['value']:.4f}"
    if metric.get("low") is not None and metric.get("high") is not None:
        text += f" [{metric['low']:.4f}, {metric['high']:.4f}]"
    return text


def _fmt_size(n) -> str:
    n = float(n or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _fmt_value(value, limit: int = 200) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + " …"
