"""Small self-contained SVG charts for the stage pages (no scripts, no network, no TensorFlow).

Each function returns one ``<svg>`` element as a string (or "" when there is
nothing to draw), sized by its content: width is fixed, height grows with the
number of bars/series, so nothing is clipped. Text is escaped. Used by the
evaluate page and the model card (push).
"""
from __future__ import annotations

import html
import math
from typing import Dict, List, Optional, Sequence, Tuple

PALETTE = ("#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#c62828", "#00838f", "#5d4037", "#9e9d24")
FONT = "font-family='system-ui,Segoe UI,Helvetica,Arial,sans-serif' font-size='12'"


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _num(v: float) -> str:
    v = float(v)
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.3g}"
    return f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:,.0f}"


def _finite(values) -> List[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def hbars(rows: Sequence[Tuple[str, Optional[float]]], title: str, width: int = 640,
          reference: Optional[float] = None, reference_label: str = "", signed: bool = False,
          value_format=None, color: str = PALETTE[0]) -> str:
    """Horizontal bars, one per (label, value); ``reference`` draws a dashed vertical line
    (e.g. the overall value); ``signed`` centres the axis at 0 (gaps: negative bars go left)."""
    rows = [(label, None if v is None else float(v)) for label, v in rows]
    values = _finite(v for _, v in rows)
    if not rows or not values:
        return ""
    fmt = value_format or _num
    label_w = 12 + int(6.6 * max(len(str(label)) for label, _ in rows))
    width = max(width, label_w + 240)  # long labels widen the chart rather than being cut
    bar_h, gap, top = 16, 4, 26
    height = top + len(rows) * (bar_h + gap) + 24
    plot_w = width - label_w - 70
    lo = min(values + ([reference] if reference is not None else []) + [0.0])
    hi = max(values + ([reference] if reference is not None else []) + [0.0])
    if signed:
        m = max(abs(lo), abs(hi)) or 1.0
        lo, hi = -m, m
    if hi == lo:
        hi = lo + 1.0

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * plot_w

    out = [f"<svg width='{width}' height='{height}' role='img' "
           f"aria-label='{_esc(title)}' {FONT}>",
           f"<text x='4' y='16' font-weight='bold'>{_esc(title)}</text>"]
    zero = x(0.0)
    for i, (label, v) in enumerate(rows):
        y = top + i * (bar_h + gap)
        out.append(f"<text x='{label_w - 6}' y='{y + 12}' text-anchor='end'>{_esc(label)}</text>")
        if v is None or not math.isfinite(v):
            out.append(f"<text x='{zero + 4:.1f}' y='{y + 12}' fill='#777'>n/a</text>")
            continue
        x0, x1 = sorted((zero, x(v)))
        fill = ("#c62828" if v > 0 else "#1565c0") if signed else color
        out.append(f"<rect x='{x0:.1f}' y='{y}' width='{max(1.0, x1 - x0):.1f}' height='{bar_h}' "
                   f"fill='{fill}' opacity='0.85'><title>{_esc(label)}: {_esc(fmt(v))}</title></rect>")
        tx = x1 + 4 if (v >= 0 or not signed) else x0 - 4
        anchor = "start" if (v >= 0 or not signed) else "end"
        out.append(f"<text x='{tx:.1f}' y='{y + 12}' text-anchor='{anchor}'>{_esc(fmt(v))}</text>")
    axis_y = top + len(rows) * (bar_h + gap)
    out.append(f"<line x1='{zero:.1f}' y1='{top - 4}' x2='{zero:.1f}' y2='{axis_y}' stroke='#999'/>")
    if reference is not None and math.isfinite(reference):
        rx = x(reference)
        out.append(f"<line x1='{rx:.1f}' y1='{top - 4}' x2='{rx:.1f}' y2='{axis_y}' stroke='#333' "
                   f"stroke-dasharray='4 3'/>")
        out.append(f"<text x='{rx:.1f}' y='{axis_y + 14}' text-anchor='middle' fill='#333'>"
                   f"{_esc(reference_label or 'reference')} {_esc(fmt(reference))}</text>")
    out.append("</svg>")
    return "".join(out)


def _y_scale(y_lo: float, y_hi: float, pad_t: float, plot_h: float):
    """Data y -> SVG y (up is larger) inside a plot area starting ``pad_t`` from the top."""
    return lambda v: pad_t + (1 - (v - y_lo) / (y_hi - y_lo)) * plot_h


def _frame(title: str, width: int, height: int, pad_l: int, pad_t: int, plot_w: float, plot_h: float,
           py, y_range: Tuple[float, float]) -> List[str]:
    """The opening of an x-y chart: the svg element, its title, the plot area's border and three y ticks."""
    y_lo, y_hi = y_range
    out = [f"<svg width='{width}' height='{height}' role='img' aria-label='{_esc(title)}' {FONT}>",
           f"<text x='4' y='16' font-weight='bold'>{_esc(title)}</text>",
           f"<rect x='{pad_l}' y='{pad_t}' width='{plot_w}' height='{plot_h}' fill='none' stroke='#bbb'/>"]
    for v in (y_lo, (y_lo + y_hi) / 2, y_hi):
        out.append(f"<text x='{pad_l - 4}' y='{py(v) + 4:.1f}' text-anchor='end'>{_esc(_num(v))}</text>")
    return out


def lines(series: Dict[str, Sequence[float]], title: str, x_label: str = "epoch", y_label: str = "",
          xs: Optional[Dict[str, Sequence[float]]] = None, width: int = 520, height: int = 260) -> str:
    """Line chart of named series (x = 1..n unless ``xs`` gives each series' x values), with a legend."""
    series = {k: [float(v) if v is not None else float("nan") for v in vals]
              for k, vals in series.items() if _finite(vals)}
    if not series:
        return ""
    xs = {k: [float(v) for v in (xs or {}).get(k, range(1, len(vals) + 1))] for k, vals in series.items()}
    all_x = [v for k in series for v in xs[k]]
    all_y = [v for vals in series.values() for v in _finite(vals)]
    x_lo, x_hi = min(all_x), max(all_x)
    y_lo, y_hi = min(all_y), max(all_y)
    if x_hi == x_lo:
        x_hi = x_lo + 1
    if y_hi == y_lo:
        y_hi, y_lo = y_lo + 0.5, y_lo - 0.5
    pad_l, pad_r, pad_t = 56, 12, 26
    legend_h = 16 * len(series)
    plot_h = height - pad_t - 36
    total_h = height + legend_h
    plot_w = width - pad_l - pad_r

    def px(v):
        return pad_l + (v - x_lo) / (x_hi - x_lo) * plot_w

    py = _y_scale(y_lo, y_hi, pad_t, plot_h)
    out = _frame(title, width, total_h, pad_l, pad_t, plot_w, plot_h, py, (y_lo, y_hi))
    for v, anchor in ((x_lo, "start"), (x_hi, "end")):
        out.append(f"<text x='{px(v):.1f}' y='{pad_t + plot_h + 14}' text-anchor='{anchor}'>{_esc(_num(v))}</text>")
    out.append(f"<text x='{pad_l + plot_w / 2:.1f}' y='{pad_t + plot_h + 28}' text-anchor='middle' "
               f"fill='#555'>{_esc(x_label)}</text>")
    if y_label:
        out.append(f"<text x='12' y='{pad_t + plot_h / 2:.1f}' text-anchor='middle' fill='#555' "
                   f"transform='rotate(-90 12 {pad_t + plot_h / 2:.1f})'>{_esc(y_label)}</text>")
    for i, (name, vals) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        pts = [(px(x), py(y)) for x, y in zip(xs[name], vals) if math.isfinite(y)]
        if len(pts) == 1:
            out.append(f"<circle cx='{pts[0][0]:.1f}' cy='{pts[0][1]:.1f}' r='3' fill='{color}'/>")
        else:
            out.append(f"<polyline points='{' '.join(f'{a:.1f},{b:.1f}' for a, b in pts)}' fill='none' "
                       f"stroke='{color}' stroke-width='2'/>")
        ly = height + 16 * i + 4
        out.append(f"<rect x='{pad_l}' y='{ly}' width='12' height='3' fill='{color}'/>"
                   f"<text x='{pad_l + 18}' y='{ly + 5}'>{_esc(name)}</text>")
    out.append("</svg>")
    return "".join(out)


def scatter(points: Sequence[Tuple[str, float, float, Optional[float]]], title: str, x_label: str,
            y_label: str, size_label: str = "", width: int = 560, height: int = 300,
            log_x: bool = False) -> str:
    """Numbered points (label, x, y, extra) with a legend below: e.g. size vs latency, with the metric."""
    points = [(lab, float(x), float(y), e) for lab, x, y, e in points
              if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))
              and (not log_x or float(x) > 0)]
    if not points:
        return ""
    legend = [f"{i + 1}. {lab}: {_num(x)}, {_num(y)}" + (f"; {size_label} {_num(e)}" if e is not None and size_label
                                                          else "") for i, (lab, x, y, e) in enumerate(points)]
    width = max(width, 64 + 24 + int(6.8 * max(len(t) for t in legend)))
    tx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    xs = [tx(p[1]) for p in points]
    ys = [p[2] for p in points]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = 0.0, max(ys)
    span = (x_hi - x_lo) or 1.0
    x_lo, x_hi = x_lo - 0.08 * span, x_hi + 0.25 * span
    if y_hi == y_lo:
        y_hi = y_lo + 1
    y_hi *= 1.15
    pad_l, pad_t, pad_b = 64, 26, 40
    plot_w, plot_h = width - pad_l - 12, height - pad_t - pad_b

    def px(v):
        return pad_l + (tx(v) - x_lo) / (x_hi - x_lo) * plot_w

    py = _y_scale(y_lo, y_hi, pad_t, plot_h)
    out = _frame(title, width, height + 16 * len(points) + 8, pad_l, pad_t, plot_w, plot_h, py, (y_lo, y_hi))
    for v, anchor in ((min(p[1] for p in points), "start"), (max(p[1] for p in points), "end")):
        out.append(f"<text x='{px(v):.1f}' y='{pad_t + plot_h + 14}' text-anchor='{anchor}' fill='#777'>"
                   f"{_esc(_num(v))}</text>")
    for i, (lab, x, y, extra) in enumerate(points):
        color = PALETTE[i % len(PALETTE)]
        text = lab + (f" ({size_label} {_num(extra)})" if extra is not None and size_label else "")
        out.append(f"<circle cx='{px(x):.1f}' cy='{py(y):.1f}' r='5' fill='{color}' opacity='0.85'>"
                   f"<title>{_esc(text)}: {_esc(_num(x))}, {_esc(_num(y))}</title></circle>")
        # a number beside the point, the full label in the legend below: close points stay legible
        out.append(f"<text x='{px(x) + 6:.1f}' y='{py(y) - 5 - 9 * (i % 3):.1f}' fill='{color}' "
                   f"font-weight='bold'>{i + 1}</text>")
        ly = height + 16 * i + 6
        out.append(f"<circle cx='{pad_l + 5}' cy='{ly}' r='5' fill='{color}'/>"
                   f"<text x='{pad_l + 16}' y='{ly + 4}'>{_esc(legend[i])}</text>")
    out.append(f"<text x='{pad_l + plot_w / 2:.1f}' y='{height - 6}' text-anchor='middle' fill='#555'>"
               f"{_esc(x_label)}</text>")
    out.append(f"<text x='12' y='{pad_t + plot_h / 2:.1f}' text-anchor='middle' fill='#555' "
               f"transform='rotate(-90 12 {pad_t + plot_h / 2:.1f})'>{_esc(y_label)}</text>")
    out.append("</svg>")
    return "".join(out)


def training_curves(histories: Dict[str, dict]) -> List[str]:
    """One loss chart per fit: {name: history_summary dict ({"curves": {"loss": [...], ...}})}."""
    charts = []
    for name, summary in histories.items():
        curves = (summary or {}).get("curves") or {}
        loss = {k: v for k, v in curves.items() if k.endswith("loss") and not k.endswith(("hard_loss", "soft_loss"))}
        if not loss:
            continue
        best = (summary or {}).get("best_epoch")
        charts.append(lines(loss, f"{name}: loss per epoch" + (f" (best epoch {best})" if best else ""),
                            y_label="loss"))
    return [c for c in charts if c]


PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
.wide{overflow-x:auto;max-width:100%}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
section{margin-bottom:18px}.charts{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
svg{max-width:100%;height:auto;overflow:visible}
.verdict{display:inline-block;padding:6px 14px;border-radius:4px;font-weight:bold;color:#fff}
.blessed{background:#2e7d32}.not-blessed{background:#c62828}
.muted{color:#777}.warnings{color:#8a5300}.recommended{background:#e8f5e9}
"""
