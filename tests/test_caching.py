"""KFP's caching semantics, read from the IR as KFP's driver reads it: a task is served from
cache only with `cachingOptions.enableCache: true` (the compiler's default); a task compiled with
`set_caching_options(False)` (`cachingOptions: {}`) runs every time."""
import yaml
from kfp import compiler, dsl
from kfp.dsl import Dataset, Output

from kfx.runner import ir
from kfx.runner.orchestrator import Runner
from kfx.runner.run_context import Workspace


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def make(text: str, out: Output[Dataset]):
    with open(out.path, "w") as f:
        f.write(text)


@dsl.pipeline(name="caching")
def caching(text: str = "same"):
    make(text=text).set_display_name("cached")
    make(text=text).set_caching_options(False)


def test_a_step_compiled_without_caching_reruns_and_a_cached_one_does_not(tmp_path):
    ir_path = tmp_path / "caching.yaml"
    compiler.Compiler().compile(caching, str(ir_path))
    tasks = yaml.safe_load(ir_path.read_text())["root"]["dag"]["tasks"]
    assert tasks["make"]["cachingOptions"] == {"enableCache": True}
    assert tasks["make-2"]["cachingOptions"] == {}           # what KFP means by "never cache"
    pipeline = ir.load(ir_path)
    assert pipeline.tasks["make"].caching and not pipeline.tasks["make-2"].caching

    runner = Runner(Workspace(tmp_path / "root"), echo=lambda _: None)
    first = runner.run(ir_path)
    second = runner.run(ir_path)
    assert {t: s.state for t, s in first.steps.items()} == {"make": "COMPLETE", "make-2": "COMPLETE"}
    assert {t: s.state for t, s in second.steps.items()} == {"make": "CACHED", "make-2": "COMPLETE"}
    assert second.steps["make"].outputs["out"].uri == first.steps["make"].outputs["out"].uri
    assert second.steps["make-2"].outputs["out"].uri != first.steps["make-2"].outputs["out"].uri
