"""Small SVG charts the UI's pages and the run report (kfx/report.py) draw: the step timeline, ROC
curves, a drift heat map, a metric over time, metrics with intervals, bars, curves and the lineage
graph. Plain SVG text, no library, no script; STYLE is their CSS (the UI and the report inline it)."""
from __future__ import annotations

import time
from html import escape
from typing import Callable, Optional

from kfx.views.graph import GAP_X, layers

STYLE = """svg .edge{fill:none;stroke:#90a4ae;stroke-width:1.5}svg .edge.dashed{stroke-dasharray:5 4}
svg .node rect{stroke:#546e7a;stroke-width:1;fill:#fff}svg .node:hover rect{stroke:#0277bd;stroke-width:2}
svg .node text{font-size:12px;fill:#222}svg .node text.state{font-size:11px;fill:#455a64}
svg .node.kind-if rect,svg .node.kind-for-each rect,svg .node.kind-branches rect,svg .node.kind-exit-handler rect,svg .node.kind-dag rect{stroke-dasharray:5 3}
svg .node.kind-importer rect{rx:16}
svg .node.state-COMPLETE rect,svg .node.state-IMPORTED rect{fill:#c8e6c9}svg .node.state-CACHED rect{fill:#dcedc8}
svg .node.state-RUNNING rect{fill:#bbdefb;stroke:#1565c0;stroke-width:2}svg .node.state-FAILED rect{fill:#ffcdd2;stroke:#b71c1c}
svg .node.state-SKIPPED rect{fill:#f5f5f5;stroke:#bdbdbd}svg .node.state-SKIPPED text{fill:#9e9e9e;font-style:italic}
svg .node.state-PENDING rect{fill:#fff}
svg rect.state-COMPLETE,svg rect.state-IMPORTED{fill:#66bb6a}svg rect.state-CACHED{fill:#aed581}svg rect.state-RUNNING{fill:#42a5f5}
svg rect.state-FAILED{fill:#e53935}svg rect.state-CANCELED{fill:#bdbdbd}
svg .tick{font-size:11px;fill:#455a64}svg .grid{stroke:#eceff1}svg .frame{fill:none;stroke:#b0bec5}
svg .reference{stroke:#d62728;stroke-dasharray:4 3}svg .interval{stroke:#1f77b4;stroke-width:2}
svg rect.flagged{stroke:#d62728;stroke-width:2}"""
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


def _svg(width: float, height: float, label: str, body: list[str]) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' "
            f"viewBox='0 0 {width:.0f} {height:.0f}' role='img' aria-label='{escape(label, quote=True)}'>"
            + "".join(body) + "</svg>")


def timeline(executions: list[dict], width: int = 900) -> str:
    """One bar per execution from its start to its end (now, while it runs)."""
    rows = [e for e in executions if e["state"] != "SKIPPED"]
    if not rows:
        return "<p class='muted'>no step has started yet</p>"
    start = min(e["start"] for e in rows)
    end = max(e["end"] or time.time() for e in rows)
    span = max(end - start, 1e-3)
    left, bar, gap = 170, 16, 4
    scale = (width - left - 60) / span
    height = len(rows) * (bar + gap) + 30
    body = []
    for i, e in enumerate(rows):
        y = i * (bar + gap) + 4
        x0 = left + (e["start"] - start) * scale
        seconds = (e["end"] or time.time()) - e["start"]
        body.append(f"<text x='{left - 6}' y='{y + bar - 4}' text-anchor='end' class='tick'>{escape(e['name'][:24])}</text>"
                    f"<rect class='state-{e['state']}' x='{x0:.1f}' y='{y}' width='{max(seconds * scale, 2):.1f}' "
                    f"height='{bar}'><title>{escape(e['name'])}: {e['state']} {seconds:.1f}s</title></rect>"
                    f"<text x='{x0 + max(seconds * scale, 2) + 4:.1f}' y='{y + bar - 4}' class='tick'>{seconds:.1f}s</text>")
    axis_y = len(rows) * (bar + gap) + 8
    for k in range(5):
        x = left + k * (width - left - 60) / 4
        body.append(f"<line class='grid' x1='{x:.0f}' x2='{x:.0f}' y1='0' y2='{axis_y}'/>"
                    f"<text x='{x:.0f}' y='{axis_y + 14}' text-anchor='middle' class='tick'>{span * k / 4:.1f}s</text>")
    return _svg(width, height, "step timeline", body)


def roc_points(metadata: dict) -> list[tuple[float, float]]:
    """(false positive rate, true positive rate) from a KFP ClassificationMetrics' `confidenceMetrics`."""
    points = [(float(p.get("falsePositiveRate", 0)), float(p.get("recall", 0)))
              for p in metadata.get("confidenceMetrics") or [] if isinstance(p, dict)]
    return sorted(set(points + [(0.0, 0.0), (1.0, 1.0)]))


def roc(curves: list[tuple[str, list[tuple[float, float]]]], size: int = 320) -> str:
    """ROC curves overlaid, one colour each, with a legend."""
    pad = 40
    inner = size - pad - 10
    body = [f"<rect x='{pad}' y='10' width='{inner}' height='{inner}' class='frame'/>",
            f"<line x1='{pad}' y1='{10 + inner}' x2='{pad + inner}' y2='10' class='grid'/>",
            f"<text x='{pad + inner / 2}' y='{size + 4}' text-anchor='middle' class='tick'>false positive rate</text>",
            f"<text x='12' y='{10 + inner / 2}' transform='rotate(-90 12 {10 + inner / 2})' text-anchor='middle' "
            f"class='tick'>true positive rate</text>"]
    for k in (0, 0.5, 1):
        body.append(f"<text x='{pad + k * inner:.0f}' y='{inner + 24}' text-anchor='middle' class='tick'>{k:g}</text>"
                    f"<text x='{pad - 4}' y='{10 + (1 - k) * inner + 4:.0f}' text-anchor='end' class='tick'>{k:g}</text>")
    for i, (name, points) in enumerate(curves):
        colour = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{pad + x * inner:.1f},{10 + (1 - y) * inner:.1f}" for x, y in points)
        body.append(f"<polyline fill='none' stroke='{colour}' stroke-width='2' points='{path}'>"
                    f"<title>{escape(name)}</title></polyline>"
                    f"<rect x='{pad + inner - 150}' y='{inner - 10 - 16 * (len(curves) - 1 - i)}' width='10' height='10' "
                    f"fill='{colour}'/><text x='{pad + inner - 136}' y='{inner - 1 - 16 * (len(curves) - 1 - i)}' "
                    f"class='tick'>{escape(name[:22])}</text>")
    return _svg(size, size + 10, "ROC curve", body)


def confusion(metadata: dict) -> Optional[dict]:
    """{labels, rows} from a ClassificationMetrics' `confusionMatrix`, or None."""
    matrix = metadata.get("confusionMatrix") or {}
    struct = matrix.get("struct") or matrix   # the SDK writes it bare; the KFP API wraps it in `struct`
    labels = [s.get("displayName", "") for s in struct.get("annotationSpecs") or []]
    rows = [r.get("row") or [] for r in struct.get("rows") or []]
    if not labels or len(rows) != len(labels):
        return None
    top = max((v for r in rows for v in r), default=0) or 1
    return {"labels": labels, "rows": [[(v, v / top) for v in r] for r in rows]}


def heatmap(features: list[str], windows: list[dict], key: Callable[[dict, str], tuple[Optional[float], bool]]) -> str:
    """Features (rows) by windows (columns); a cell's shade is its distance (0-0.3+), a flagged
    cell is outlined red; a flag without a distance (check-drift records none) is hatched."""
    cell_w, cell_h, left, top = 64, 20, 150, 70
    width, height = left + cell_w * len(windows) + 70, top + cell_h * len(features) + 10
    body = ["<defs><pattern id='hatch' width='6' height='6' patternUnits='userSpaceOnUse' "
            "patternTransform='rotate(45)'><rect width='6' height='6' fill='#fde0dd'/>"
            "<line x1='0' y1='0' x2='0' y2='6' stroke='#d62728' stroke-width='2'/></pattern></defs>"]
    for j, window in enumerate(windows):
        x = left + j * cell_w + cell_w / 2
        body.append(f"<text x='{x:.0f}' y='{top - 8}' transform='rotate(-35 {x:.0f} {top - 8})' class='tick'>"
                    f"{escape(window['label'][:16])}<title>{escape(window['kind'])}: {escape(window['run'])}</title></text>")
    for i, feature in enumerate(features):
        y = top + i * cell_h
        body.append(f"<text x='{left - 6}' y='{y + 14}' text-anchor='end' class='tick'>{escape(feature[:22])}</text>")
        for j, window in enumerate(windows):
            value, flagged = key(window, feature)
            x = left + j * cell_w
            if value is None and not flagged:
                fill, text = "#f4f4f4", ""
            elif value is None:
                fill, text = "url(#hatch)", "flag"
            else:
                shade = min(value / 0.3, 1.0)
                fill, text = f"rgb(255,{int(255 - 175 * shade)},{int(255 - 215 * shade)})", f"{value:.2f}"
            body.append(f"<rect x='{x}' y='{y}' width='{cell_w - 2}' height='{cell_h - 2}' fill='{fill}' "
                        f"class='{'flagged' if flagged else 'cell'}'><title>{escape(feature)} in {escape(window['run'])}: "
                        f"{text or 'not compared'}{' (flagged)' if flagged else ''}</title></rect>"
                        f"<text x='{x + cell_w / 2 - 1}' y='{y + 14}' text-anchor='middle' class='tick'>{text}</text>")
    return _svg(width, height, "drift and skew heat map", body)


def metric_over_time(points: list[tuple[str, float, Optional[float], Optional[float]]], reference: Optional[float],
                     name: str, width: int = 600, height: int = 220) -> str:
    """(label, value, low, high) in order, with the test-split reference as a dashed line."""
    if not points:
        return "<p class='muted'>no online metric yet (monitor runs with --labels)</p>"
    values = [v for _, v, lo, hi in points for v in (v, lo, hi) if v is not None] + \
        ([reference] if reference is not None else [])
    low, high = min(values), max(values)
    low, high = (low - 0.05, high + 0.05) if high - low < 1e-9 else (low - (high - low) * 0.1, high + (high - low) * 0.1)
    left, top, bottom = 60, 10, 40
    step = (width - left - 80) / max(1, len(points) - 1) if len(points) > 1 else 0

    def y(v: float) -> float:
        return top + (high - v) / (high - low) * (height - top - bottom)
    body = [f"<text x='{left - 4}' y='{y(high) + 4:.0f}' text-anchor='end' class='tick'>{high:.3f}</text>",
            f"<text x='{left - 4}' y='{y(low):.0f}' text-anchor='end' class='tick'>{low:.3f}</text>",
            f"<line class='grid' x1='{left}' x2='{width - 10}' y1='{y(low):.0f}' y2='{y(low):.0f}'/>"]
    if reference is not None:
        body.append(f"<line class='reference' x1='{left}' x2='{width - 10}' y1='{y(reference):.1f}' y2='{y(reference):.1f}'/>"
                    f"<text x='{width - 12}' y='{y(reference) - 4:.1f}' text-anchor='end' class='tick'>test split {reference:.3f}</text>")
    coords = []
    for i, (label, value, lo, hi) in enumerate(points):
        x = left + 40 + i * step
        coords.append(f"{x:.1f},{y(value):.1f}")
        if lo is not None and hi is not None:
            body.append(f"<line class='interval' x1='{x:.1f}' x2='{x:.1f}' y1='{y(lo):.1f}' y2='{y(hi):.1f}'/>")
        body.append(f"<circle cx='{x:.1f}' cy='{y(value):.1f}' r='4' fill='{PALETTE[0]}'><title>{escape(label)}: "
                    f"{name} {value:.4f}</title></circle>"
                    f"<text x='{x:.1f}' y='{height - 22}' text-anchor='middle' class='tick'>{escape(label)}</text>")
    body.insert(0, f"<polyline fill='none' stroke='{PALETTE[0]}' stroke-width='1.5' points='{' '.join(coords)}'/>")
    return _svg(width, height, f"online {name} over time", body)


def lineage(nodes: list[dict], edges: list[tuple[str, str]], href: Callable[[dict], str]) -> str:
    """Artifacts (boxes) and the executions that made them (rounded, blue), newest on the left:
    each node links to its artifact's lineage or its execution's run."""
    box_w, box_h, gap_y = 190, 42, 14
    place = layers([n["id"] for n in nodes], [(a, b, False) for a, b in edges])
    columns: dict[int, int] = {}
    for layer, _ in place.values():
        columns[layer] = columns.get(layer, 0) + 1
    width = (max(columns, default=0) + 1) * (box_w + GAP_X * 2) + 20
    height = max(columns.values(), default=1) * (box_h + gap_y) + 20

    def xy(node_id: str) -> tuple[float, float]:
        layer, pos = place[node_id]
        return 10 + layer * (box_w + GAP_X * 2), 10 + pos * (box_h + gap_y)
    body = []
    for a, b in edges:
        (x1, y1), (x2, y2) = xy(a), xy(b)
        body.append(f"<path class='edge' d='M{x1 + box_w:.0f},{y1 + box_h / 2:.0f} C{x1 + box_w + GAP_X:.0f},"
                    f"{y1 + box_h / 2:.0f} {x2 - GAP_X:.0f},{y2 + box_h / 2:.0f} {x2:.0f},{y2 + box_h / 2:.0f}'/>")
    for node in nodes:
        x, y = xy(node["id"])
        body.append(f"<a href='{escape(href(node), quote=True)}' class='node lineage-{node['kind']}'>"
                    f"<title>{escape(node['title'])}</title>"
                    f"<rect x='{x:.0f}' y='{y:.0f}' width='{box_w}' height='{box_h}' rx='{12 if node['kind'] == 'execution' else 3}'/>"
                    f"<text x='{x + 6:.0f}' y='{y + 17:.0f}' class='name'>{escape(node['name'][:26])}</text>"
                    f"<text x='{x + 6:.0f}' y='{y + 34:.0f}' class='state'>{escape(node['sub'][:30])}</text></a>")
    return _svg(width, height, "lineage graph", body)


def intervals(rows: list[tuple[str, float, Optional[float], Optional[float]]], name: str, width: int = 620) -> str:
    """One row per (label, value, low, high): a dot at the value and a bar over its interval, on one
    shared axis (a model against its references)."""
    values = [v for _, value, low, high in rows for v in (value, low, high) if v is not None]
    if not values:
        return "<p class='muted'>no metric recorded</p>"
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or 0.05
    low, high = low - pad, high + pad
    left, right, row_h = 200, 70, 26
    height = len(rows) * row_h + 34

    def x(v: float) -> float:
        return left + (v - low) / (high - low) * (width - left - right)
    body = []
    for k in range(5):
        v = low + (high - low) * k / 4
        body.append(f"<line class='grid' x1='{x(v):.1f}' x2='{x(v):.1f}' y1='0' y2='{len(rows) * row_h + 6}'/>"
                    f"<text x='{x(v):.1f}' y='{len(rows) * row_h + 20}' text-anchor='middle' class='tick'>{v:.3f}</text>")
    for i, (label, value, lo, hi) in enumerate(rows):
        y = i * row_h + 14
        colour = PALETTE[i % len(PALETTE)]
        body.append(f"<text x='{left - 8}' y='{y + 4}' text-anchor='end' class='tick'>{escape(label[:32])}</text>")
        if lo is not None and hi is not None:
            body.append(f"<line x1='{x(lo):.1f}' x2='{x(hi):.1f}' y1='{y}' y2='{y}' stroke='{colour}' stroke-width='3'/>")
        interval = f" [{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else ""
        body.append(f"<circle cx='{x(value):.1f}' cy='{y}' r='5' fill='{colour}'><title>{escape(label)}: {escape(name)} "
                    f"{value:.4f}{interval}</title></circle>"
                    f"<text x='{max(x(value), x(hi) if hi is not None else 0) + 8:.1f}' y='{y + 4}' class='tick'>{value:.4f}</text>")
    return _svg(width, height, f"{name} with intervals", body)


def bars(rows: list[tuple[str, float]], name: str, unit: str, width: int = 420) -> str:
    """One horizontal bar per (label, value), longest first in the caller's order."""
    if not rows:
        return "<p class='muted'>nothing recorded</p>"
    top = max(v for _, v in rows) or 1.0
    left, right, row_h = 120, 90, 22
    body = []
    for i, (label, value) in enumerate(rows):
        y = i * row_h + 4
        w = max(value / top * (width - left - right), 1)
        body.append(f"<text x='{left - 6}' y='{y + 13}' text-anchor='end' class='tick'>{escape(label[:18])}</text>"
                    f"<rect x='{left}' y='{y}' width='{w:.1f}' height='{row_h - 6}' fill='{PALETTE[0]}'>"
                    f"<title>{escape(label)}: {value:,.4g} {escape(unit)}</title></rect>"
                    f"<text x='{left + w + 4:.1f}' y='{y + 13}' class='tick'>{value:,.4g} {escape(unit)}</text>")
    return _svg(width, len(rows) * row_h + 8, name, body)


def curves(series: dict[str, list[float]], name: str, width: int = 420, height: int = 160) -> str:
    """Several numeric series over the same steps (training curves by epoch), one colour each."""
    series = {k: v for k, v in series.items() if v}
    values = [v for points in series.values() for v in points]
    if not values:
        return "<p class='muted'>no points</p>"
    low, high = min(values), max(values)
    high = high if high > low else low + 1e-9
    left, top, bottom, legend = 50, 8, 22, 130
    steps = max(len(points) for points in series.values())

    def xy(i: int, v: float) -> str:
        x = left + (i / max(steps - 1, 1)) * (width - left - legend - 10)
        return f"{x:.1f},{top + (high - v) / (high - low) * (height - top - bottom):.1f}"
    body = [f"<text x='{left - 4}' y='{top + 8}' text-anchor='end' class='tick'>{high:.3g}</text>",
            f"<text x='{left - 4}' y='{height - bottom}' text-anchor='end' class='tick'>{low:.3g}</text>",
            f"<text x='{left}' y='{height - 6}' class='tick'>1</text>",
            f"<text x='{width - legend - 10}' y='{height - 6}' text-anchor='end' class='tick'>{steps}</text>",
            f"<rect x='{left}' y='{top}' width='{width - left - legend - 10}' height='{height - top - bottom}' class='frame'/>"]
    for i, (label, points) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        if len(points) == 1:
            body.append(f"<circle cx='{xy(0, points[0]).split(',')[0]}' cy='{xy(0, points[0]).split(',')[1]}' r='3' "
                        f"fill='{colour}'/>")
        body.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' "
                    f"points='{' '.join(xy(j, v) for j, v in enumerate(points))}'><title>{escape(label)}: "
                    f"{', '.join(f'{v:.4g}' for v in points[:50])}</title></polyline>"
                    f"<rect x='{width - legend}' y='{top + i * 14}' width='9' height='9' fill='{colour}'/>"
                    f"<text x='{width - legend + 13}' y='{top + i * 14 + 9}' class='tick'>{escape(label[:18])}</text>")
    return _svg(width, max(height, top + len(series) * 14 + 4), name, body)
