"""The SVG charts of the stage pages and the model card: escaped text, sized by content."""
import re

from kfx_components.common import plots


def test_bars_escape_text_and_grow_with_labels():
    short = plots.hbars([("a", 1.0), ("b", 0.5)], "t")
    long = plots.hbars([("x" * 120, 1.0), ("<b>&", None)], "t <title>")
    width = lambda svg: int(re.search(r"width='(\d+)'", svg).group(1))  # noqa: E731
    assert width(long) > width(short)
    assert "<b>&" not in long and "&lt;b&gt;&amp;" in long and "n/a" in long
    assert plots.hbars([], "empty") == "" and plots.hbars([("a", None)], "none") == ""
    # heights follow the number of bars
    h = lambda svg: int(re.search(r"height='(\d+)'", svg).group(1))  # noqa: E731
    assert h(plots.hbars([(str(i), i) for i in range(30)], "t")) > h(short)


def test_signed_bars_put_negative_values_left_of_zero():
    svg = plots.hbars([("up", 0.3), ("down", -0.3)], "gaps", signed=True)
    rects = re.findall(r"<rect x='([\d.]+)' y='[\d.]+' width='([\d.]+)'", svg)
    (x_up, w_up), (x_down, w_down) = [(float(a), float(b)) for a, b in rects]
    assert abs(w_up - w_down) < 0.5 and x_down + w_down <= x_up + 0.5  # mirror images around zero


def test_lines_and_scatter_draw_every_series():
    svg = plots.lines({"loss": [1.0, 0.5, 0.4], "val_loss": [1.1, 0.7, 0.6]}, "curves")
    assert svg.count("<polyline") == 2 and "val_loss" in svg
    pts = plots.scatter([("int8", 24.0, 3.7, 0.94), ("float32", 60.0, 4.1, 0.94)], "s", "KiB", "µs",
                        size_label="auc")
    assert pts.count("<circle") == 4 and "1. int8: 24, 3.7; auc 0.94" in pts  # points and legend
    assert plots.training_curves({"fit": {"curves": {"loss": [1, 0.5]}, "best_epoch": 2}})[0].count("<polyline") == 1
