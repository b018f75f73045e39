"""The fork server launcher (`--executor process`) against a fresh interpreter per step
(`--executor subprocess`): same outputs and MLMD records, each step in its own process with its
own working directory and environment, exit codes as a process's, a killed step fails its run,
and nothing is left running once the run ends. Light components only: no TensorFlow."""
import json
import os
import threading
from pathlib import Path

import pytest
from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from kfx.runner.forkserver import ForkServerLauncher
from kfx.runner.launchers import SubprocessLauncher
from kfx.stores.metadata import MetadataStore, prop
from kfx.runner.orchestrator import Runner
from kfx.runner.run_context import Workspace
from tests.light_pipelines import compile_hang


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def describe(data: Input[Dataset], scale: float, facts: Output[Dataset], metrics: Output[Metrics]) -> str:
    """What a step sees of its process: its data, cwd, environment and temporary directory."""
    import json
    import os
    import sys
    import tempfile
    values = [float(line.split(",")[1]) * scale for line in open(data.path).read().splitlines()[1:]]
    seen = {"cwd": os.getcwd(), "task": os.environ["KFX_TASK"], "run_env": os.environ.get("KFX_TEST_RUN_ENV"),
            "tmp": tempfile.gettempdir(), "argv0": sys.argv[0], "main": __name__, "pid": os.getpid()}
    with open(facts.path, "w") as f:
        json.dump({"sum": sum(values)}, f)
    facts.metadata.update(seen)
    metrics.log_metric("sum", sum(values))
    print("described", len(values), "rows")
    return f"{len(values)} rows"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def finish(facts: Input[Dataset], summary: str, code: int, out: Output[Dataset]):
    import json
    import sys
    total = json.load(open(facts.path))["sum"]
    with open(out.path, "w") as f:
        f.write(f"{summary}: {total}")
    out.metadata["total"] = total
    if code:
        sys.exit(code)


@dsl.container_component
def shell_echo(message: str, out: Output[Dataset]):
    """Not a lightweight component: the fork server runs its command as it is."""
    return dsl.ContainerSpec(image="debian:12", command=["sh", "-c"],
                             args=[f'mkdir -p "$(dirname "$1")" && echo "$0" > "$1"', message, out.path])


@dsl.pipeline(name="probe")
def probe(data_uri: str, scale: float = 2.0, code: int = 0):
    data = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset, reimport=False)
    described = describe(data=data.output, scale=scale)
    finish(facts=described.outputs["facts"], summary=described.outputs["Output"], code=code)
    shell_echo(message="hello")


@pytest.fixture(scope="module")
def probe_ir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ir")
    compiler.Compiler().compile(probe, str(tmp / "probe.yaml"))
    data = tmp / "data.csv"
    data.write_text("name,value\na,1\nb,2\nc,6\n")
    return tmp / "probe.yaml", data


def _runner(root: Path, launcher) -> Runner:
    return Runner(Workspace(root), launcher=launcher, cache=False, echo=lambda _: None,
                  step_env={"KFX_TEST_RUN_ENV": "from-the-run"})


def _executions(root: Path) -> list[dict]:
    """MLMD executions with what may differ between launchers (ids, times, paths) left out."""
    md = MetadataStore(str(root / "metadata.sqlite"))
    out = []
    for e in md.store.get_executions():
        props = {k: prop(e, k) for k in e.custom_properties if k not in ("log", "run_id", "seconds", "launcher", "cache_key")}
        events = sorted((ev.type, ev.path.steps[0].key) for ev in md.store.get_events_by_execution_ids([e.id]))
        out.append({"state": e.last_known_state, "props": props, "events": events})
    return sorted(out, key=lambda x: x["props"]["task_name"])


def test_fork_server_gives_the_same_outputs_and_records_as_a_fresh_interpreter(probe_ir, tmp_path):
    ir_path, data = probe_ir
    results = {}
    for name, launcher in (("fork", ForkServerLauncher()), ("subprocess", SubprocessLauncher())):
        result = _runner(tmp_path / name, launcher).run(ir_path, {"data_uri": str(data)}, run_id="same-run")
        assert result.state == "COMPLETE", result.error
        results[name] = result
    fork, sub = results["fork"], results["subprocess"]
    for task in ("describe", "finish", "shell-echo"):
        a, b = fork.steps[task], sub.steps[task]
        assert a.state == b.state == "COMPLETE"
        assert a.parameters == b.parameters
        assert set(a.outputs) == set(b.outputs)
        for name in a.outputs:
            meta_a = {k: v for k, v in a.outputs[name].metadata.items() if k not in ("cwd", "tmp", "pid")}
            meta_b = {k: v for k, v in b.outputs[name].metadata.items() if k not in ("cwd", "tmp", "pid")}
            assert meta_a == meta_b
            if Path(a.outputs[name].uri).is_file():
                assert Path(a.outputs[name].uri).read_text() == Path(b.outputs[name].uri).read_text()
    assert fork.steps["finish"].parameters == {} and \
        Path(fork.steps["finish"].outputs["out"].uri).read_text() == "3 rows: 18.0"
    assert Path(fork.steps["shell-echo"].outputs["out"].uri).read_text() == "hello\n"
    # What the step saw: as `python3 -m kfp.dsl.executor_main`, in its own staging dir, with its env.
    seen = fork.steps["describe"].outputs["facts"].metadata
    staging = tmp_path / "fork" / ".staging" / "same-run" / "describe"
    assert seen["cwd"] == str(staging) and seen["tmp"] == str(staging / "tmp")
    assert seen["task"] == "describe" and seen["run_env"] == "from-the-run"
    assert seen["main"] == "ephemeral_component" and seen["argv0"].endswith("executor_main.py")
    assert seen["pid"] != os.getpid()
    assert _executions(tmp_path / "fork") == _executions(tmp_path / "subprocess")
    log = (fork.run_dir / "logs" / "describe.log").read_text()
    assert "described 3 rows" in log and "[KFP Executor" in log   # kfp's own logging to the log, as in a fresh process


def test_exit_codes_are_a_processes(probe_ir, tmp_path):
    ir_path, data = probe_ir
    launcher = ForkServerLauncher()
    result = _runner(tmp_path / "root", launcher).run(ir_path, {"data_uri": str(data), "code": 3})
    assert result.state == "FAILED" and result.steps["finish"].state == "FAILED"
    assert "exit code 3" in result.error and result.error_line.startswith("finish: exit code 3 (log: ")
    assert not Path(f"/proc/{launcher.server.pid}").exists()     # the server is gone, and reaped


def test_killing_a_step_fails_it_and_the_run_leaves_no_process(tmp_path):
    ir_path = compile_hang(tmp_path)
    pid_file = tmp_path / "pid"
    launcher = ForkServerLauncher()
    outcome = {}
    run = threading.Thread(target=lambda: outcome.update(result=_runner(tmp_path / "root", launcher).run(
        ir_path, {"pid_file": str(pid_file)})))
    run.start()
    while not (pid_file.exists() and pid_file.read_text()):
        run.join(0.05)
        assert run.is_alive(), "the run ended before the step started"
    pid = int(pid_file.read_text())
    assert launcher.running == {"wait-forever": pid}    # the step is the forked process itself
    os.kill(pid, 9)
    run.join()
    result = outcome["result"]
    assert result.state == "FAILED" and "exit code -9" in result.error
    assert not Path(f"/proc/{pid}").exists() and not Path(f"/proc/{launcher.server.pid}").exists()


def test_modules_that_are_not_installed_are_skipped(probe_ir, tmp_path):
    ir_path, data = probe_ir
    launcher = ForkServerLauncher(preload=("json", "no_such_module_kfx"))
    result = _runner(tmp_path / "root", launcher).run(ir_path, {"data_uri": str(data)})
    assert result.state == "COMPLETE", result.error
    assert launcher.ready["preloaded"] == ["kfp.dsl.executor_main", "json"]
    assert "no_such_module_kfx" in launcher.ready["skipped"] and launcher.ready["fork_safe"]
    report = json.loads((result.run_dir / "logs" / "_forkserver.log").read_text().splitlines()[0].split(": ", 1)[1])
    assert report["skipped"].keys() == {"no_such_module_kfx"}


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fit_tiny(seed: int, model: Output[Dataset]):
    """TensorFlow runs in the forked step (the server imported it, never ran it)."""
    import numpy as np
    import tensorflow as tf
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    x = np.random.rand(64, 4).astype("float32")
    y = (x.sum(axis=1) > 2).astype("float32")
    net = tf.keras.Sequential([tf.keras.layers.Dense(8, activation="relu"), tf.keras.layers.Dense(1)])
    net.compile(optimizer="adam", loss="mse")
    history = net.fit(x, y, epochs=3, batch_size=16, verbose=0)
    model.metadata.update({"loss": history.history["loss"], "weights": float(net.layers[0].kernel.numpy().sum())})
    open(model.path, "w").write("fitted")


@dsl.pipeline(name="tiny-tf")
def tiny_tf(seed: int = 7):
    fit_tiny(seed=seed)


def test_a_tensorflow_step_forked_after_the_import_trains_as_in_a_fresh_interpreter(tmp_path):
    ir_path = tmp_path / "tiny_tf.yaml"
    compiler.Compiler().compile(tiny_tf, str(ir_path))
    launcher = ForkServerLauncher(preload=("tensorflow",))
    fork = _runner(tmp_path / "fork", launcher).run(ir_path)
    sub = _runner(tmp_path / "sub", SubprocessLauncher()).run(ir_path)
    assert fork.state == sub.state == "COMPLETE", fork.error + sub.error
    assert launcher.ready["preloaded"] == ["kfp.dsl.executor_main", "tensorflow"] and launcher.ready["fork_safe"]
    assert fork.steps["fit-tiny"].outputs["model"].metadata == sub.steps["fit-tiny"].outputs["model"].metadata


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def which_keras() -> str:
    import tensorflow as tf
    return tf.keras.__name__


@dsl.pipeline(name="which-keras")
def which_keras_pipeline():
    which_keras()


def test_a_server_preloading_tensorflow_binds_the_keras_the_stack_needs(tmp_path, monkeypatch):
    """`kfx run` from a plain shell: TensorFlow imported by the server, not the step, still gives the
    step tf-keras (Keras 2, as the stage images set it), since TFT, TFMA and keras-tuner 1.3 break on
    Keras 3; a value the user set wins."""
    from kfx.runner.preload import stack_env
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    ir_path = tmp_path / "which_keras.yaml"
    compiler.Compiler().compile(which_keras_pipeline, str(ir_path))
    result = _runner(tmp_path / "root", ForkServerLauncher(preload=("tensorflow",))).run(ir_path)
    assert result.state == "COMPLETE", result.error
    assert result.steps["which-keras"].parameters["Output"].startswith("tf_keras"), result.steps["which-keras"].parameters
    assert stack_env(("tensorflow",), {"TF_USE_LEGACY_KERAS": "0"}) == {}
    assert stack_env(("json",), {}) == {}


# ------------------------------------------------------- nothing waits for what it does not use
SLOW_PRELOAD_SECONDS = 60


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def plain_step() -> str:
    import json
    return json.dumps({"imports": "nothing the server preloads"})


@dsl.pipeline(name="plain")
def plain():
    plain_step()


@pytest.fixture
def slow_preload(tmp_path, monkeypatch):
    """A preloadable module that takes a minute to import, and a first-party package, importable by
    the runner (which reads their source) and by the servers."""
    lib = tmp_path / "lib"
    (lib / "kfx_user_pkg").mkdir(parents=True)
    (lib / "kfx_slow_preload.py").write_text(f"import time\ntime.sleep({SLOW_PRELOAD_SECONDS})\n")
    (lib / "kfx_user_pkg" / "__init__.py").write_text("")
    (lib / "kfx_user_pkg" / "light.py").write_text("import json\nfrom . import plain as _  # noqa\n")
    (lib / "kfx_user_pkg" / "plain.py").write_text("import os\n")
    (lib / "kfx_user_pkg" / "helpers.py").write_text("def helper():\n    from . import slow\n")
    (lib / "kfx_user_pkg" / "slow.py").write_text("import kfx_slow_preload\n")
    monkeypatch.syspath_prepend(str(lib))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(lib), os.environ.get("PYTHONPATH")])))
    return "kfx_slow_preload"


def test_a_step_that_uses_no_preloaded_module_does_not_wait_for_the_preload(slow_preload, tmp_path):
    ir_path = tmp_path / "plain.yaml"
    compiler.Compiler().compile(plain, str(ir_path))
    launcher = ForkServerLauncher(preload=(slow_preload,))
    result = _runner(tmp_path / "root", launcher).run(ir_path)
    assert result.state == "COMPLETE", result.error
    assert result.seconds < SLOW_PRELOAD_SECONDS / 2, result.seconds
    assert launcher.ready == {}     # the preloading server never got a step, and was stopped unwaited
    assert not Path(f"/proc/{launcher.server.pid}").exists()
    light = (result.run_dir / "logs" / "_forkserver_light.log").read_text()
    assert '"preloaded": ["kfp.dsl.executor_main"]' in light


def test_which_steps_use_the_preload_is_read_from_their_code(slow_preload, tmp_path):
    from kfx.runner import ir
    from kfx.runner.preload import uses_preload
    compiler.Compiler().compile(plain, str(tmp_path / "plain.yaml"))
    [task] = ir.load(tmp_path / "plain.yaml").tasks.values()
    kfp_command = task.container["command"][:3]     # sh -ec <kfp's script>, as the IR holds it

    def uses(source: str, preload=(slow_preload,)) -> bool:
        return uses_preload([*kfp_command, source, "--executor_input", "{}"], preload)

    assert not uses("import json\nfrom kfx_user_pkg import light\n")
    assert uses("def f():\n    import kfx_slow_preload\n")
    # through first-party modules: a function-level import, then a relative one
    assert uses("def f():\n    from kfx_user_pkg.helpers import helper\n")
    assert uses("import keras\n", ("tensorflow",))      # keras imports TensorFlow itself
    assert not uses_preload(["sh", "-c", "python -c 'import kfx_slow_preload'"], (slow_preload,))  # exec'd
    assert uses("def broken(:\n")                       # unreadable: it waits, as every step did
