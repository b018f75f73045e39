"""Lightweight pipelines (no TensorFlow) that more than one runner test runs."""
from kfp import compiler, dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def wait_forever(pid_file: str):
    """Writes its pid, then waits to be killed."""
    import os
    import time
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(3600)


@dsl.pipeline(name="hang")
def hang(pid_file: str):
    wait_forever(pid_file=pid_file)


def compile_hang(tmp_path):
    ir_path = tmp_path / "hang.yaml"
    compiler.Compiler().compile(hang, str(ir_path))
    return ir_path


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def write_text(text: str, times: int, rate: float, loud: bool, out: Output[Dataset]):
    """Writes `text` `times` times (upper-cased when `loud`), then `rate`: one typed parameter of each kind."""
    with open(out.path, "w") as f:
        f.write((text.upper() if loud else text) * times + f" {rate:g}")


@dsl.pipeline(name="write-text")
def write(text: str = "hi", times: int = 1, rate: float = 0.5, loud: bool = False):
    write_text(text=text, times=times, rate=rate, loud=loud)


def compile_write(tmp_path):
    ir_path = tmp_path / "write.yaml"
    compiler.Compiler().compile(write, str(ir_path))
    return ir_path


# The runner's toy: an importer, a step with an artifact and a parameter out, one that can fail.
@dsl.component(base_image="python:3.11", install_kfp_package=False)
def count_rows(data: Input[Dataset], skip: int, rows: Output[Dataset]) -> int:
    import os
    lines = open(data.path).read().splitlines()[skip:]
    os.makedirs(rows.path)
    with open(os.path.join(rows.path, "rows.txt"), "w") as f:
        f.write("\n".join(lines))
    rows.metadata["rows"] = len(lines)
    return len(lines)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fit(rows: Input[Dataset], n: int, fail: bool, model: Output[Model], metrics: Output[Metrics]):
    import os
    if fail:
        print("about to fail: bad input")
        raise ValueError("fit: parameter 'fail' is set")
    total = sum(float(x.split(",")[1]) for x in open(os.path.join(rows.path, "rows.txt")).read().splitlines())
    with open(model.path, "w") as f:
        f.write(str(total / n))
    metrics.log_metric("mean", total / n)
    model.metadata["input_rows_artifact"] = rows.name


@dsl.pipeline(name="toy")
def toy(data_uri: str, skip: int = 1, fail: bool = False):
    data = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset, reimport=False)
    counted = count_rows(data=data.output, skip=skip)
    fit(rows=counted.outputs["rows"], n=counted.outputs["Output"], fail=fail)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def check_rows(rows: Input[Dataset], report: Output[HTML], checked: Output[Dataset]):
    """Writes its report, then refuses the data (as validate does on anomalies)."""
    with open(report.path, "w") as f:
        f.write("<p>3 rows; anomaly: value out of range</p>")
    raise ValueError("check_rows: anomaly: value out of range")


@dsl.pipeline(name="checked")
def checked_pipeline(data_uri: str):
    data = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset, reimport=False)
    check_rows(rows=count_rows(data=data.output, skip=1).outputs["rows"])
