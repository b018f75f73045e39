"""Lightweight pipelines (no TensorFlow) that more than one runner test runs."""
from kfp import compiler, dsl


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
