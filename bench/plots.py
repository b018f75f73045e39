"""PNG plots for docs/benchmarks.md, drawn with Pillow (matplotlib is not in the venv).

Two kinds: a line plot with optional log-log axes (cost or memory against rows) and a
grouped bar chart (per-step seconds for kfx / kfp.local / in-process, and the like).
"""
import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

W, H = 760, 440
LEFT, RIGHT, TOP, BOTTOM = 80, 190, 40, 60
COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
          (227, 119, 194), (127, 127, 127)]


def _font():
    from PIL import ImageFont
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, 12)
        except OSError:
            continue
    return ImageFont.load_default()


def _ticks(lo: float, hi: float, log: bool) -> List[float]:
    if log:
        return [10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
    step = 10 ** math.floor(math.log10(max(hi - lo, 1e-12)))
    if (hi - lo) / step < 4:
        step /= 2
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 2)]


def _label(v: float) -> str:
    if v >= 1e6 and v % 1e6 == 0:
        return f"{v / 1e6:g}M"
    if v >= 1e3 and v % 1e3 == 0:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def lines(series: Dict[str, Sequence[Tuple[float, float]]], path: Path, title: str, xlabel: str, ylabel: str,
          log: bool = True) -> Path:
    from PIL import Image, ImageDraw
    pts = [(x, y) for s in series.values() for x, y in s if (not log or (x > 0 and y > 0))]
    img = Image.new("RGB", (W, H), "white")
    d, font = ImageDraw.Draw(img), _font()
    d.text((LEFT, 12), title, fill="black", font=font)
    if not pts:
        d.text((LEFT, H // 2), "no data", fill="black", font=font)
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
        return path
    f = (lambda v: math.log10(v)) if log else (lambda v: v)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    xt, yt = _ticks(min(xs), max(xs), log), _ticks(min(ys) if log else 0.0, max(ys), log)
    x0, x1, y0, y1 = f(xt[0]), f(xt[-1]), f(yt[0]), f(yt[-1])
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def px(x, y):
        return (LEFT + (f(x) - x0) / (x1 - x0) * (W - LEFT - RIGHT),
                H - BOTTOM - (f(y) - y0) / (y1 - y0) * (H - TOP - BOTTOM))

    for t in xt:
        X, _ = px(t, yt[0])
        d.line([(X, TOP), (X, H - BOTTOM)], fill=(230, 230, 230))
        d.text((X - 12, H - BOTTOM + 6), _label(t), fill="black", font=font)
    for t in yt:
        _, Y = px(xt[0], t)
        d.line([(LEFT, Y), (W - RIGHT, Y)], fill=(230, 230, 230))
        d.text((8, Y - 7), _label(round(t, 6)), fill="black", font=font)
    d.rectangle([LEFT, TOP, W - RIGHT, H - BOTTOM], outline="black")
    d.text(((LEFT + W - RIGHT) // 2 - 40, H - 24), xlabel + (" (log)" if log else ""), fill="black", font=font)
    d.text((8, TOP - 16), ylabel + (" (log)" if log else ""), fill="black", font=font)
    for i, (name, s) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        s = [(x, y) for x, y in sorted(s) if not log or (x > 0 and y > 0)]
        xy = [px(x, y) for x, y in s]
        if len(xy) > 1:
            d.line(xy, fill=color, width=2)
        for X, Y in xy:
            d.ellipse([X - 3, Y - 3, X + 3, Y + 3], fill=color)
        ly = TOP + 8 + 18 * i
        d.line([(W - RIGHT + 10, ly + 6), (W - RIGHT + 30, ly + 6)], fill=color, width=3)
        d.text((W - RIGHT + 35, ly), name, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def bars(groups: Dict[str, Dict[str, float]], path: Path, title: str, ylabel: str) -> Path:
    """groups: {group label: {series name: value}}, drawn side by side per group."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (W, H), "white")
    d, font = ImageDraw.Draw(img), _font()
    d.text((LEFT, 12), title, fill="black", font=font)
    names = list(dict.fromkeys(n for g in groups.values() for n in g))
    values_all = [v for g in groups.values() for v in g.values()]
    top, bottom = max(values_all + [1e-9]), min(values_all + [0.0])
    yt = [t for t in _ticks(bottom, top, False)]
    y0, y1 = min(yt[0], 0.0), yt[-1] if yt[-1] > 0 else 1.0
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def ypx(v):
        return H - BOTTOM - (v - y0) / (y1 - y0) * plot_h

    for t in yt:
        Y = ypx(t)
        d.line([(LEFT, Y), (W - RIGHT, Y)], fill=(230, 230, 230))
        d.text((8, Y - 7), f"{round(t, 6):g}", fill="black", font=font)
    d.line([(LEFT, ypx(0.0)), (W - RIGHT, ypx(0.0))], fill="black")
    d.rectangle([LEFT, TOP, W - RIGHT, H - BOTTOM], outline="black")
    d.text((8, TOP - 16), ylabel, fill="black", font=font)
    gw = plot_w / max(len(groups), 1)
    bw = gw * 0.8 / max(len(names), 1)
    for gi, (g, values) in enumerate(groups.items()):
        gx = LEFT + gi * gw + gw * 0.1
        for ni, n in enumerate(names):
            if n not in values:
                continue
            X = gx + ni * bw
            a, b = sorted((ypx(values[n]), ypx(0.0)))
            d.rectangle([X, a, X + bw - 2, b], fill=COLORS[ni % len(COLORS)])
        d.text((gx, H - BOTTOM + 6 + 14 * (gi % 2)), g[:16], fill="black", font=font)  # staggered: no overlap
    for ni, n in enumerate(names):
        ly = TOP + 8 + 18 * ni
        d.rectangle([W - RIGHT + 10, ly + 2, W - RIGHT + 30, ly + 12], fill=COLORS[ni % len(COLORS)])
        d.text((W - RIGHT + 35, ly), n, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def scale_plots(analysis: dict, sizes: list, out_dir: Path) -> List[Tuple[str, Path]]:
    """Seconds and peak MiB against rows, log-log, one line per (stage, runner)."""
    cost = {f"{st} ({m})": [(d["rows"][s], d["seconds"][s]) for s in sizes if s in d["seconds"]]
            for (st, m), d in analysis.items()}
    mem = {f"{st} ({m})": [(d["rows"][s], d["peak"][s] / 1024) for s in sizes if s in d["peak"]]
           for (st, m), d in analysis.items()}
    a = lines(cost, out_dir / "scale_seconds.png", "Stage wall time against rows", "rows the stage reads", "seconds")
    b = lines(mem, out_dir / "scale_memory.png", "Peak RSS (process tree) against rows", "rows the stage reads", "MiB")
    return [("stage seconds against rows, log-log", a), ("peak memory against rows, log-log", b)]
