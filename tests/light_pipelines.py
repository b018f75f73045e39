"""Lightweight pipelines (no TensorFlow) that more than one runner test runs."""
from kfp import compiler, dsl
from kfp.dsl import Dataset, Output


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
