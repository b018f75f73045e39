"""A light pipeline (no TensorFlow) with what the UI draws: an HTML page, Markdown, Metrics,
ClassificationMetrics, a condition with a skipped branch, a loop, and a step that sleeps `pause`
seconds (the live test watches it change state)."""
from pathlib import Path

from kfp import compiler, dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Output


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def make_data(rows: int, data: Output[Dataset]):
    with open(data.path, "w") as f:
        f.write("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(rows)))
    data.metadata["rows"] = rows


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def pause(seconds: float, data: Input[Dataset]) -> int:
    import time
    time.sleep(seconds)
    return sum(1 for _ in open(data.path)) - 1


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def judge(rows: int, data: Input[Dataset], page: Output[HTML], card: Output[Markdown], metrics: Output[Metrics],
          scores: Output[ClassificationMetrics]):
    with open(page.path, "w") as f:
        f.write("<!doctype html><html><body><h1>Data report</h1>"
                + "".join(f"<p>row group {i}: fine</p>" for i in range(30)) + "</body></html>")
    with open(card.path, "w") as f:
        f.write(f"# Model card\n\n| rows | verdict |\n| --- | --- |\n| {rows} | good |\n\n<script>alert(1)</script>\n")
    metrics.log_metric("accuracy", 0.75 + rows / 10000)
    metrics.log_metric("rows", rows)
    scores.log_roc_curve([0.0, 0.2, 0.5, 1.0], [0.0, 0.6, 0.9, 1.0], [1.0, 0.7, 0.4, 0.0])
    scores.log_confusion_matrix(["no", "yes"], [[40, 10], [5, 45]])


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def square(x: int) -> int:
    return x * x


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def shout(text: str) -> str:
    return text.upper()


@dsl.pipeline(name="ui-demo")
def ui_demo(rows: int = 100, seconds: float = 0.0, loud: bool = False):
    data = make_data(rows=rows)
    counted = pause(seconds=seconds, data=data.outputs["data"])
    judge(rows=counted.output, data=data.outputs["data"])
    with dsl.If(loud == True):  # noqa: E712 - a pipeline condition, compiled to CEL
        shout(text="loud")
    with dsl.Else():
        shout(text="quiet")
    with dsl.ParallelFor([1, 2, 3]) as x:
        square(x=x)


def compile_ui_demo(directory: Path) -> Path:
    path = Path(directory) / "ui-demo.yaml"
    compiler.Compiler().compile(ui_demo, str(path))
    return path
