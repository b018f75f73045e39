"""The local runner on small pipelines of its own (no TensorFlow): ordering,
artifact passing, MLMD records, caching, failure handling, lineage."""
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kfp import compiler

from kfx.runner import ir

from kfx.stores import lineage
from kfx.stores.metadata import MetadataStore, State, prop
from kfx.runner.orchestrator import Runner
from kfx.runner.run_context import Workspace
from tests.light_pipelines import checked_pipeline, compile_hang, toy


@pytest.fixture()
def setup(tmp_path):
    ir_path = tmp_path / "toy.yaml"
    compiler.Compiler().compile(toy, str(ir_path))
    data = tmp_path / "data.csv"
    data.write_text("name,value\na,1\nb,2\nc,6\n")
    lines = []
    runner = Runner(Workspace(tmp_path / "root"), echo=lines.append)
    return runner, ir_path, data, lines


def test_runs_in_order_passes_artifacts_and_records_lineage(setup):
    runner, ir_path, data, lines = setup
    result = runner.run(ir_path, {"data_uri": str(data)})
    assert result.state == "COMPLETE", result.error
    assert [s.state for s in result.steps.values()] == ["IMPORTED", "COMPLETE", "COMPLETE"]
    counted, fitted = result.steps["count-rows"], result.steps["fit"]
    assert counted.parameters == {"Output": 3}
    assert counted.outputs["rows"].metadata == {"rows": 3}
    model = fitted.outputs["model"]
    assert Path(model.uri).read_text() == "3.0"
    assert fitted.outputs["metrics"].metadata == {"mean": 3.0}
    # KFP pipeline-root layout, and the input artifact's name is its MLMD id.
    assert model.uri == str(runner.ws.artifacts / "toy" / result.run_id / "fit" / "model")
    assert model.metadata["input_rows_artifact"] == str(counted.outputs["rows"].id)
    assert any("fit" in line and "COMPLETE" in line for line in lines)
    assert not (runner.ws.staging / result.run_id).exists()

    tree = lineage.trace(runner.md, model.uri)
    chain = [n.task for n in tree.walk()]
    assert chain == ["fit", "count-rows", "importer"]
    assert list(tree.walk())[-1].uri == str(data)
    summary = json.loads((result.run_dir / "run.json").read_text())
    assert summary["steps"]["fit"]["state"] == "COMPLETE" and summary["steps"]["fit"]["seconds"] > 0


def test_second_run_is_cached_and_data_change_is_not(setup):
    runner, ir_path, data, _ = setup
    first = runner.run(ir_path, {"data_uri": str(data)})
    second = runner.run(ir_path, {"data_uri": str(data)})
    assert [s.state for s in second.steps.values()] == ["IMPORTED", "CACHED", "CACHED"]
    assert second.steps["fit"].outputs["model"].uri == first.steps["fit"].outputs["model"].uri
    assert second.steps["count-rows"].parameters == {"Output": 3}
    # A cached execution is linked to the same artifact; lineage follows the first producer.
    tree = lineage.trace(runner.md, first.steps["fit"].outputs["model"].uri)
    assert tree.execution_id == first.steps["fit"].execution_id

    data.write_text("name,value\na,1\nb,2\nc,6\nd,11\n")
    third = runner.run(ir_path, {"data_uri": str(data)})
    assert [s.state for s in third.steps.values()] == ["IMPORTED", "COMPLETE", "COMPLETE"]
    assert Path(third.steps["fit"].outputs["model"].uri).read_text() == "5.0"

    # A parameter change re-runs only what depends on it... here both steps.
    fourth = runner.run(ir_path, {"data_uri": str(data), "skip": 2})
    assert fourth.steps["count-rows"].state == "COMPLETE"


def test_deleted_cached_output_runs_again(setup):
    runner, ir_path, data, _ = setup
    first = runner.run(ir_path, {"data_uri": str(data)})
    shutil.rmtree(first.steps["count-rows"].outputs["rows"].uri)
    second = runner.run(ir_path, {"data_uri": str(data)})
    assert second.steps["count-rows"].state == "COMPLETE"


def test_failing_step_fails_the_run_with_its_log_and_commits_nothing(setup):
    runner, ir_path, data, _ = setup
    result = runner.run(ir_path, {"data_uri": str(data), "fail": True})
    assert result.state == "FAILED"
    assert "step 'fit' failed" in result.error
    assert "fit: parameter 'fail' is set" in result.error        # the log tail
    assert result.steps["fit"].state == "FAILED"
    assert not (runner.ws.artifacts / "toy" / result.run_id / "fit").exists()
    assert not (runner.ws.staging / result.run_id).exists()
    md = MetadataStore(str(runner.ws.metadata_path))
    states = sorted(e.last_known_state for e in md.store.get_executions())
    assert 4 in states  # FAILED recorded
    # The failure is not cached: a good run afterwards runs fit.
    good = runner.run(ir_path, {"data_uri": str(data)})
    assert good.steps["fit"].state == "COMPLETE"


def test_a_failed_steps_outputs_are_kept_for_a_person_but_never_registered(setup, tmp_path):
    from kfx import report
    runner, _, data, _ = setup
    ir_path = tmp_path / "checked.yaml"
    compiler.Compiler().compile(checked_pipeline, str(ir_path))
    result = runner.run(ir_path, {"data_uri": str(data)})
    assert result.state == "FAILED" and "anomaly: value out of range" in result.error
    kept = Path(result.steps["check-rows"].kept)
    assert kept == result.run_dir / "failed" / "check-rows"
    assert "value out of range" in (kept / "report").read_text()
    assert str(kept) in result.error
    # Not in the store, not in MLMD: nothing later can pick it up.
    assert not (runner.ws.artifacts / "checked" / result.run_id / "check-rows").exists()
    md = MetadataStore(str(runner.ws.metadata_path))
    assert not [a for a in md.store.get_artifacts() if "check-rows" in a.uri or str(kept) in a.uri]
    page = report.write(result, tmp_path / "report.html").read_text()
    assert "check-rows: failed" in page and "value out of range" in page


def test_bad_parameters_and_missing_data_are_named(setup):
    runner, ir_path, data, _ = setup
    with pytest.raises(ir.IRError, match="unknown pipeline parameter.*'nope'"):
        runner.run(ir_path, {"data_uri": str(data), "nope": 1})
    with pytest.raises(ir.IRError, match="'data_uri' is required"):
        runner.run(ir_path, {})
    with pytest.raises(ir.IRError, match="'skip' must be NUMBER_INTEGER"):
        runner.run(ir_path, {"data_uri": str(data), "skip": "two"})
    result = runner.run(ir_path, {"data_uri": str(data.parent / "missing.csv")})
    assert result.state == "FAILED" and "missing.csv" in result.error


def test_a_launcher_that_cannot_start_the_step_fails_it_cleanly(setup):
    runner, ir_path, data, _ = setup

    class Broken:
        name = "broken"

        def launch(self, step, log_path, on_line):
            raise RuntimeError("no such image")

    runner.launcher = Broken()
    result = runner.run(ir_path, {"data_uri": str(data)})
    assert result.state == "FAILED"
    assert "step 'count-rows' failed: broken launcher: no such image" in result.error
    assert not (runner.ws.artifacts / "toy" / result.run_id).exists()


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def _start_run(ir_path, root, pid_file):
    """`kfx run` of the hanging pipeline in its own process, once its step has started."""
    proc = subprocess.Popen([sys.executable, "-m", "kfx.cli", "run", "--ir", str(ir_path), "--root", str(root),
                             "--preload", "", "--param", f"pid_file={pid_file}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (pid_file.exists() and pid_file.read_text()):
        assert proc.poll() is None, "kfx run ended before its step started"
        time.sleep(0.05)
    return proc, int(pid_file.read_text())


def test_a_killed_runner_is_recovered_by_the_next_run_and_a_live_one_is_not(setup, tmp_path):
    runner, toy_ir, data, lines = setup
    ir_path = compile_hang(tmp_path)
    root = runner.ws.root
    killed, killed_step = _start_run(ir_path, root, tmp_path / "killed.pid")
    live, live_step = _start_run(ir_path, root, tmp_path / "live.pid")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        deadline = time.monotonic() + 60    # a bound against hanging, not a speed check
        while not _gone(killed_step):       # the step dies with its runner (fork server death signal)
            assert time.monotonic() < deadline, "the step outlived its killed runner"
            time.sleep(0.05)
        md = MetadataStore(str(runner.ws.metadata_path))
        running = md.running_executions()
        assert len(running) == 2            # the killed run's step and the live one's
        [dead_run] = [r for r in running if _pid_of_run(md, r) == killed_step]
        [live_run] = set(running) - {dead_run}

        result = runner.run(toy_ir, {"data_uri": str(data)})
        assert result.state == "COMPLETE", result.error
        assert any(f"run {dead_run} was left by a runner that died: 1 execution(s) marked FAILED "
                   f"(wait-forever)" in line for line in lines)
        md = MetadataStore(str(runner.ws.metadata_path))
        [dead] = [e for e in md.store.get_executions() if prop(e, "run_id") == dead_run]
        assert dead.last_known_state == State.FAILED and "runner died" in prop(dead, "failure")
        assert not (runner.ws.staging / dead_run).exists()
        # The live run's work is untouched: still RUNNING, its staging in place, its step alive.
        assert set(md.running_executions()) == {live_run}
        assert (runner.ws.staging / live_run / "wait-forever").is_dir() and not _gone(live_step)
    finally:
        live.kill()
        live.wait()


def _pid_of_run(md: MetadataStore, run_id: str) -> int:
    """The step pid a hanging run wrote (its pid_file parameter, from the run's MLMD context)."""
    ctx = md.store.get_context_by_type_and_name("system.PipelineRun", run_id)
    return int(Path(json.loads(prop(ctx, "parameters"))["pid_file"]).read_text())
