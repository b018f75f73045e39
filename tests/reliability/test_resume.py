"""Point 2: a killed training step resumes from its checkpoints.

A lightweight step stands in for distributed_train (whose executor puts BackupAndRestore in
KFX_RESUME_DIR: tests/stages/test_distributed_train.py covers the Keras side): it "trains" one
epoch at a time and saves its progress in $KFX_RESUME_DIR, as BackupAndRestore does. It is
SIGKILLed mid-training twice (its own process once, the whole `kfx run` once); each rerun
continues from the last saved epoch, and once the step commits its resume dir is gone.
"""
import json
import os
import signal

from kfp import compiler, dsl
from kfp.dsl import Model, Output

from kfx.stores.metadata import MetadataStore, State, prop
from kfx.runner.orchestrator import Runner
from kfx.runner.run_context import Workspace
from tests.reliability.common import gone, kfx_run, wait_for

EPOCHS = 6


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def train(epochs: int, control: str, model: Output[Model]):
    import json
    import os
    import time
    resume = os.environ["KFX_RESUME_DIR"]          # the runner gives every step one
    state = os.path.join(resume, "progress.json")
    done = json.load(open(state))["epochs"] if os.path.exists(state) else 0
    first = done + 1
    for epoch in range(done + 1, epochs + 1):
        time.sleep(0.02)                            # an epoch of training
        with open(state + ".tmp", "w") as f:        # the checkpoint, atomically
            json.dump({"epochs": epoch}, f)
        os.replace(state + ".tmp", state)
        print(f"epoch {epoch}/{epochs} saved", flush=True)
        pause = os.path.join(control, "pause_at")
        if os.path.exists(pause) and int(open(pause).read()) == epoch:
            with open(os.path.join(control, "paused"), "w") as f:   # the test kills us here
                json.dump({"pid": os.getpid(), "epoch": epoch, "resume": resume}, f)
            time.sleep(3600)
    with open(model.path, "w") as f:
        f.write(f"trained epochs {first}..{epochs}")
    model.metadata.update({"first_epoch": first, "resume_dir": resume})


@dsl.pipeline(name="resumable")
def resumable(control: str, epochs: int = EPOCHS):
    train(epochs=epochs, control=control)


def _pause_at(control, epoch):
    (control / "paused").unlink(missing_ok=True)
    (control / "pause_at").write_text(str(epoch))


def _paused(control) -> dict:
    wait = control / "paused"
    return json.loads(wait.read_text()) if wait.exists() and wait.read_text() else {}


def test_a_killed_step_resumes_from_its_last_checkpoint_and_its_resume_dir_goes_on_commit(tmp_path):
    ir_path, root, control = tmp_path / "resumable.yaml", tmp_path / "root", tmp_path / "control"
    control.mkdir()
    compiler.Compiler().compile(resumable, str(ir_path))

    # 1. The step itself is SIGKILLed after epoch 2 (as the OOM killer would): the run fails.
    _pause_at(control, 2)
    first = kfx_run(ir_path, root, "--param", f"control={control}")
    wait_for(lambda: _paused(control), first, "epoch 2")
    paused = _paused(control)
    os.kill(paused["pid"], signal.SIGKILL)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 1 and "error: train: exit code -9" in err, err
    resume = root / ".resume"
    [kept] = list(resume.iterdir())
    assert str(kept) == paused["resume"]             # keyed by the cache key, outside staging
    assert json.loads((kept / "progress.json").read_text()) == {"epochs": 2}
    assert not any((root / ".staging").iterdir())    # the run's staging went, the checkpoint stayed

    # 2. The rerun resumes at epoch 3; this time the whole `kfx run` is SIGKILLed after epoch 4.
    _pause_at(control, 4)
    second = kfx_run(ir_path, root, "--param", f"control={control}")
    wait_for(lambda: _paused(control), second, "epoch 4")
    step = _paused(control)["pid"]
    second.kill()
    second.wait()
    wait_for(lambda: gone(step), what="the step to die with its runner")
    assert json.loads((kept / "progress.json").read_text()) == {"epochs": 4}

    # 3. The next run resumes at epoch 5, finishes, commits, and the resume dir is removed.
    (control / "pause_at").unlink()
    lines = []
    runner = Runner(Workspace(root), echo=lines.append)
    result = runner.run(ir_path, {"control": str(control)})
    assert result.state == "COMPLETE", result.error
    model = result.steps["train"].outputs["model"]
    assert model.metadata["first_epoch"] == 5        # not 1: it resumed
    assert open(model.uri).read() == "trained epochs 5..6"
    step_log = (result.run_dir / "logs" / "train.log").read_text()
    assert "epoch 5/6 saved" in step_log and "epoch 1/6" not in step_log
    assert not kept.exists() and not any(resume.iterdir())
    # The killed runner's execution was marked failed; the killed step's run recorded it failed.
    md = MetadataStore(str(runner.ws.metadata_path))
    states = sorted(State.Name(e.last_known_state) for e in md.store.get_executions()
                    if prop(e, "task_name") == "train")
    assert states == ["COMPLETE", "FAILED", "FAILED"]
    assert any("was left by a runner that died" in line for line in lines)

    # 4. Same inputs again: served from cache, no resume dir is made.
    again = runner.run(ir_path, {"control": str(control)})
    assert again.steps["train"].state == "CACHED" and not any(resume.iterdir())
