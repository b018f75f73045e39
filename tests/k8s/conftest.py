"""Fixtures for the Kubernetes/KFP checks: a tiny compiled IR and the KFP API stand-in."""
import pathlib

import pytest


@pytest.fixture(scope="session")
def tiny_ir(tmp_path_factory) -> str:
    """A two-step pipeline with typed parameters, compiled with the cpu profile."""
    from kfp import compiler, dsl
    from kfx_pipelines.profiles import pipeline_root, place

    @dsl.component(base_image="kfx/kfx-ingest:test")
    def make(n: int, scale: float, name: str) -> str:
        return f"{name}:{n * scale}"

    @dsl.component(base_image="kfx/kfx-push:test")
    def consume(text: str) -> str:
        return text

    @dsl.pipeline(name="kfx-tiny", pipeline_root=pipeline_root("cpu"))
    def tiny(n: int = 2, scale: float = 1.5, name: str = "x"):
        a = place(make(n=n, scale=scale, name=name), "ingest", "cpu")
        place(consume(text=a.output), "push", "cpu")

    path = tmp_path_factory.mktemp("ir") / "tiny.yaml"
    compiler.Compiler().compile(tiny, str(path))
    return str(path)


@pytest.fixture()
def kfp_standin():
    from tests.k8s.kfp_standin import KfpStandIn
    s = KfpStandIn()
    host = s.start()
    s.host = host
    yield s
    s.stop()


REPO = pathlib.Path(__file__).resolve().parents[2]
