"""Small SVG charts the pages draw on the server: the step timeline, ROC curves, a drift heat map,
a metric over time and the lineage graph. Plain SVG text, no library, no script."""
from __future__ import annotations

import time
from html import escape
from typing import Callable, Optional

from kfx.ui.graph import GAP_X, layers

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
