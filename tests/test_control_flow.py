"""Pipelines in the KFP SDK's own samples style, run from their compiled IR: lightweight
components passing parameters and artifacts, an importer, a pipeline with no parameters, and
the control flow kfp.local 2.13 refuses (NotImplementedError): dsl.If / Elif / Else with a
branch skipped, dsl.ParallelFor over a literal list and over an upstream output, dsl.Collected
fan-in and dsl.OneOf. No TensorFlow: the fork server preloads nothing."""
import json
from pathlib import Path
from typing import List

import pytest
from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Output

from kfx.runner import expressions, ir

from kfx.stores import lineage

from kfx import report
from kfx.cli import main
from kfx.runner.forkserver import ForkServerLauncher
from kfx.stores.metadata import MetadataStore, State, prop
from kfx.runner.orchestrator import Runner
from kfx.runner.run_context import Workspace


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def write_text(text: str, out: Output[Dataset]):
    with open(out.path, "w") as f:
        f.write(text)
    out.metadata["chars"] = len(text)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def shout(data: Input[Dataset], times: int, out: Output[Dataset]) -> str:
    text = open(data.path).read().strip().upper()
    with open(out.path, "w") as f:
        f.write(" ".join([text] * times))
    return text


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def coin(seed: int) -> str:
    return "heads" if seed % 3 == 0 else "tails" if seed % 3 == 1 else "edge"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def announce(side: str, out: Output[Dataset]):
    with open(out.path, "w") as f:
        f.write(side)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def read_text(data: Input[Dataset]) -> str:
    return open(data.path).read()


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def numbers(n: int) -> List[int]:
    return list(range(1, n + 1))


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def square(x: int, out: Output[Dataset]) -> int:
    with open(out.path, "w") as f:
        f.write(str(x * x))
    return x * x


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def add(xs: List[int]) -> int:
    return sum(xs)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def join(parts: Input[List[Dataset]], joined: Output[Dataset]):
    with open(joined.path, "w") as f:
        f.write(",".join(open(p.path).read() for p in parts or []))   # kfp's executor: None for []


def _compile(pipeline, tmp_path: Path) -> Path:
    path = tmp_path / f"{pipeline.name}.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return path


def _runner(root: Path, lines: list) -> Runner:
    return Runner(Workspace(root), launcher=ForkServerLauncher(preload=()), echo=lines.append)


def _states(result) -> dict:
    return {name: step.state for name, step in result.steps.items()}


def test_a_pipeline_without_parameters_and_an_importer_runs_from_the_cli(tmp_path, capsys):
    greeting = tmp_path / "greeting.txt"
    greeting.write_text("hello kfx\n")

    @dsl.pipeline(name="hello")
    def hello():
        imported = dsl.importer(artifact_uri=str(greeting), artifact_class=Dataset, reimport=False)
        loud = shout(data=imported.output, times=2)
        written = write_text(text=loud.outputs["Output"])
        read_text(data=written.outputs["out"])

    ir_path = _compile(hello, tmp_path)
    assert ir.load(ir_path).parameters == {}
    root = tmp_path / "root"
    assert main(["run", "--ir", str(ir_path), "--root", str(root), "--preload", ""]) == 0
    assert "COMPLETE" in capsys.readouterr().out
    [run_dir] = (root / "runs").iterdir()
    summary = json.loads((run_dir / "run.json").read_text())
    steps = summary["steps"]
    assert {n: s["state"] for n, s in steps.items()} == {
        "importer": "IMPORTED", "shout": "COMPLETE", "write-text": "COMPLETE", "read-text": "COMPLETE"}
    assert Path(steps["shout"]["outputs"]["out"]["uri"]).read_text() == "HELLO KFX HELLO KFX"
    assert steps["write-text"]["outputs"]["out"]["metadata"] == {"chars": 9}
    assert steps["read-text"]["parameters"] == {"Output": "HELLO KFX"}
    md = MetadataStore(str(root / "metadata.sqlite"))
    tree = lineage.trace(md, steps["write-text"]["outputs"]["out"]["uri"])
    assert [n.task for n in tree.walk()] == ["write-text"]     # a parameter, not an artifact, fed it
    tree = lineage.trace(md, steps["shout"]["outputs"]["out"]["uri"])
    assert [n.task for n in tree.walk()] == ["shout", "importer"] and tree.inputs[0].uri == str(greeting)


@dsl.pipeline(name="branches")
def branches(seed: int, threshold: float = 0.5):
    side = coin(seed=seed)
    with dsl.If(side.output == "heads"):
        heads = announce(side="heads!")
    with dsl.Elif(side.output == "tails"):
        tails = announce(side="tails!")
    with dsl.Else():
        edge = announce(side="on its edge")
    read_text(data=dsl.OneOf(heads.outputs["out"], tails.outputs["out"], edge.outputs["out"]))
    with dsl.If(threshold > 0.9):
        write_text(text="high threshold")


@pytest.mark.parametrize("seed, ran", [(3, "announce"), (4, "announce-2"), (5, "announce-3")])
def test_if_elif_else_runs_one_branch_and_records_the_others_skipped(seed, ran, tmp_path):
    ir_path = _compile(branches, tmp_path)
    lines = []
    runner = _runner(tmp_path / "root", lines)
    result = runner.run(ir_path, {"seed": seed})
    assert result.state == "COMPLETE", result.error
    branch_tasks = {"announce", "announce-2", "announce-3"}
    assert _states(result) == {"coin": "COMPLETE", "read-text": "COMPLETE", "write-text": "SKIPPED",
                               ran: "COMPLETE", **{t: "SKIPPED" for t in branch_tasks - {ran}}}
    said = Path(result.steps[ran].outputs["out"].uri).read_text()
    assert result.steps["read-text"].parameters == {"Output": said}     # dsl.OneOf: the branch that ran
    assert "condition is false" in result.steps["write-text"].skipped
    assert any("write-text" in line and "SKIPPED" in line for line in lines)
    summary = json.loads((result.run_dir / "run.json").read_text())
    assert summary["steps"]["write-text"]["state"] == "SKIPPED" and summary["steps"]["write-text"]["skipped"]
    md = MetadataStore(str(runner.ws.metadata_path))
    executions = {prop(e, "task_name"): e for e in md.store.get_executions()}
    for task in branch_tasks - {ran} | {"write-text"}:
        assert executions[task].last_known_state == State.CANCELED and "condition" in prop(executions[task], "skipped")
    assert executions[ran].last_known_state == State.COMPLETE
    page = report.write(result, tmp_path / "report.html").read_text()
    assert "<span class='SKIPPED'>SKIPPED</span>" in page and "skipped: its condition is false" in page


@dsl.pipeline(name="loops")
def loops(n: int = 3):
    with dsl.ParallelFor([2, 3]) as x:
        square(x=x)
    listed = numbers(n=n)
    with dsl.ParallelFor(listed.output, parallelism=2) as x:
        squared = square(x=x)
    add(xs=dsl.Collected(squared.outputs["Output"]))
    join(parts=dsl.Collected(squared.outputs["out"]))


def test_parallel_for_over_a_list_and_an_upstream_output_fans_in_and_caches_per_iteration(tmp_path):
    ir_path = _compile(loops, tmp_path)
    runner = _runner(tmp_path / "root", [])
    result = runner.run(ir_path)
    assert result.state == "COMPLETE", result.error
    assert _states(result) == {"square[0]": "COMPLETE", "square[1]": "COMPLETE", "numbers": "COMPLETE",
                               "square-2[0]": "COMPLETE", "square-2[1]": "COMPLETE", "square-2[2]": "COMPLETE",
                               "add": "COMPLETE", "join": "COMPLETE"}
    assert [result.steps[f"square[{i}]"].parameters["Output"] for i in (0, 1)] == [4, 9]
    assert result.steps["add"].parameters == {"Output": 1 + 4 + 9}
    joined = result.steps["join"].outputs["joined"]
    assert Path(joined.uri).read_text() == "1,4,9"
    # Each iteration's outputs are its own; the fan-in's lineage reaches every iteration, in order.
    assert len({result.steps[f"square-2[{i}]"].outputs["out"].uri for i in range(3)}) == 3
    tree = lineage.trace(runner.md, joined.uri)
    assert [(n.name, n.task) for n in tree.inputs] == [("parts", f"square-2[{i}]") for i in range(3)]
    events = runner.md.store.get_events_by_execution_ids([result.steps["join"].execution_id])
    assert sorted((e.path.steps[0].key, e.path.steps[1].index) for e in events if len(e.path.steps) == 2) == \
        [("parts", 0), ("parts", 1), ("parts", 2)]

    # One more item: the iterations seen before come from cache, the new one and the fan-ins run.
    again = runner.run(ir_path, {"n": 4})
    assert _states(again) == {"square[0]": "CACHED", "square[1]": "CACHED", "numbers": "COMPLETE",
                              **{f"square-2[{i}]": "CACHED" for i in range(3)}, "square-2[3]": "COMPLETE",
                              "add": "COMPLETE", "join": "COMPLETE"}
    assert again.steps["add"].parameters == {"Output": 30}

    # No items: the loop's steps are skipped and the fan-ins get empty lists.
    empty = runner.run(ir_path, {"n": 0})
    assert empty.state == "COMPLETE", empty.error
    assert empty.steps["square-2"].state == "SKIPPED" and empty.steps["square-2"].skipped == "its loop has no items"
    assert empty.steps["add"].parameters == {"Output": 0}
    assert Path(empty.steps["join"].outputs["joined"].uri).read_text() == ""


@pytest.mark.parametrize("condition, values, expected", [
    ("inputs.parameter_values['a'] == 'heads'", {"a": "heads"}, True),
    ("!(inputs.parameter_values['a'] == 'heads') && inputs.parameter_values['a'] == 'tails'", {"a": "tails"}, True),
    ("!(inputs.parameter_values['a'] == 'heads') && !(inputs.parameter_values['a'] == 'tails')", {"a": "heads"}, False),
    ("int(inputs.parameter_values['n']) > 2", {"n": 3.0}, True),
    ("int(inputs.parameter_values['n']) <= 2", {"n": 3}, False),
    ("double(inputs.parameter_values['n']) >= 0.5", {"n": 1}, True),
    ("inputs.parameter_values['t'] < 0.5", {"t": 0.7}, False),
    ("inputs.parameter_values['b'] == true", {"b": True}, True),
    ("inputs.parameter_values['a'] != 'b' || inputs.parameter_values['b'] == false", {"a": "b", "b": True}, False),
    ("inputs.parameter_values['a'] == 2", {"a": "2"}, False),     # no equality across types, as in CEL
])
def test_conditions_as_the_kfp_compiler_writes_them(condition, values, expected):
    assert expressions.condition(condition, values) is expected


def test_a_condition_the_runner_cannot_read_is_named():
    with pytest.raises(ir.IRError, match="expression .*size"):
        expressions.condition("size(inputs.parameter_values['a']) > 1", {"a": "x"})
    assert expressions.select('parseJson(string_value)["b"]', {"a": 1, "b": "x"}) == "x"


@dsl.pipeline(name="long-loop")
def long_loop(n: int = 400):
    listed = numbers(n=n)
    with dsl.ParallelFor(listed.output) as x:
        with dsl.If(x < 0):
            square(x=x)


def test_a_long_loop_whose_iterations_are_all_skipped_finishes(tmp_path):
    # Each iteration ends as soon as it starts; the scheduler must not recurse once per item.
    result = _runner(tmp_path / "root", []).run(_compile(long_loop, tmp_path))
    assert result.state == "COMPLETE", result.error
    skipped = [n for n, s in result.steps.items() if s.state == "SKIPPED" and n.startswith("square[")]
    assert len(skipped) == 400
