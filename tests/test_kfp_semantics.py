"""The same IR, the same result: KFP semantics of `kfx run --ir`, one test per feature, in the
style of the KFP SDK's test pipelines (lightweight components, no TensorFlow: the fork server
preloads nothing, as `kfx run` chooses for them). Each test asserts the values and their types;
where kfp.local 2.13 runs the pipeline, kfx's outputs are compared with kfp.local's."""
import datetime
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import List

import pytest
from kfp import compiler, dsl, kubernetes
from kfp.dsl import Dataset, Input, Output, PipelineTaskFinalStatus

from kfx.runner import ir
from kfx.cli import main
from kfx.runner.forkserver import ForkServerLauncher
from kfx.runner.preload import TF_STACK, preload_for
from kfx.runner.orchestrator import Runner
from kfx.runner.run_context import Workspace

LIGHT = dict(base_image="python:3.11", install_kfp_package=False)


# ------------------------------------------------------------------ components
@dsl.component(**LIGHT)
def typed_outputs(flag: dsl.OutputPath(bool), count: dsl.OutputPath(int), ratio: dsl.OutputPath(float),
                  names: dsl.OutputPath(list), conf: dsl.OutputPath(dict), text: dsl.OutputPath(str)):
    import json
    for path, content in ((flag, "True"), (count, "3"), (ratio, "0.25"), (names, json.dumps(["a", " b"])),
                          (conf, json.dumps({"k": [1, 2]})), (text, " padded \n")):
        with open(path, "w") as f:
            f.write(content)


@dsl.component(**LIGHT)
def describe(flag: bool, count: int, ratio: float, names: list, conf: dict, text: str) -> str:
    import json
    return json.dumps([[type(v).__name__, v] for v in (flag, count, ratio, names, conf, text)])


@dsl.component(**LIGHT)
def make_dataset(text: str) -> Dataset:
    dataset = Dataset(uri=dsl.get_uri(suffix="text"), metadata={"made_from": text})
    with open(dataset.path, "w") as f:
        f.write(text)
    return dataset


@dsl.component(**LIGHT)
def read_dataset(dataset: Dataset) -> str:
    with open(dataset.path) as f:
        return f"{f.read()}:{dataset.metadata['made_from']}"


@dsl.component(**LIGHT)
def read_datasets(datasets: List[Dataset]) -> str:
    return ",".join(open(d.path).read() for d in datasets)


@dsl.component(**LIGHT)
def show(flag: bool, word: str) -> str:
    return f"{type(flag).__name__}:{flag}:{word}"


@dsl.component(**LIGHT)
def double(num: int, out: Output[Dataset]):
    with open(out.path, "w") as f:
        f.write(str(2 * num))


@dsl.component(**LIGHT)
def total(datasets: Input[List[Dataset]]) -> int:
    return sum(int(open(d.path).read()) for d in datasets)


@dsl.component(**LIGHT)
def runtime_names(job_name: str, resource_name: str, job_uuid: str, task_name: str, task_uuid: str,
                  created: str, scheduled: str) -> str:
    import json
    return json.dumps([job_name, resource_name, job_uuid, task_name, task_uuid, created, scheduled])


@dsl.component(**LIGHT)
def concat(first: str, second: str) -> str:
    return first + second


@dsl.component(**LIGHT)
def fail(message: str):
    raise RuntimeError(message)


@dsl.component(**LIGHT)
def final_status(status: PipelineTaskFinalStatus, out: Output[Dataset]):
    import json
    with open(out.path, "w") as f:
        json.dump({"state": status.state, "job": status.pipeline_job_resource_name,
                   "task": status.pipeline_task_name, "code": status.error_code,
                   "message": status.error_message}, f)


@dsl.component(**LIGHT)
def count_attempts(counter: str, succeed_on: int, attempt: Output[Dataset]) -> int:
    import os
    n = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
    for path in (counter, attempt.path):
        with open(path, "w") as f:
            f.write(str(n))
    if n < succeed_on:
        raise RuntimeError(f"attempt {n} fails")
    return n


@dsl.component(**LIGHT)
def sleep(seconds: float):
    import time
    time.sleep(seconds)


# ------------------------------------------------------------------ pipelines
@dsl.pipeline(name="typed-outputs")
def typed_pipeline() -> str:
    made = typed_outputs()
    return describe(**{k: made.outputs[k] for k in ("flag", "count", "ratio", "names", "conf", "text")}).output


@dsl.pipeline(name="pythonic-single")
def pythonic_single() -> str:
    return read_dataset(dataset=make_dataset(text="hello").output).output


@dsl.pipeline(name="pythonic-collected")
def pythonic_collected() -> str:
    with dsl.ParallelFor(["a", "b", "c"]) as letter:
        made = make_dataset(text=letter)
    return read_datasets(datasets=dsl.Collected(made.output)).output


@dsl.pipeline
def inner_with_defaults(word: str, flag: bool = False) -> str:
    return show(flag=flag, word=word).output


@dsl.pipeline(name="nested-defaults")
def nested_defaults() -> str:
    return inner_with_defaults(word="left out").output


@dsl.pipeline
def doubled_grid(threshold: int) -> List[Dataset]:
    with dsl.ParallelFor([1, 2, 3]) as x:
        with dsl.ParallelFor([1, 2, 3]) as y:
            with dsl.If(y >= threshold):
                made = double(num=y)
    return dsl.Collected(made.outputs["out"])


@dsl.pipeline(name="nested-collected")
def nested_collected(threshold: int = 2) -> int:
    grid = doubled_grid(threshold=threshold)
    return total(datasets=grid.output).output


@dsl.pipeline(name="runtime-placeholders")
def runtime_placeholders() -> str:
    return runtime_names(
        job_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, resource_name=dsl.PIPELINE_JOB_RESOURCE_NAME_PLACEHOLDER,
        job_uuid=dsl.PIPELINE_JOB_ID_PLACEHOLDER, task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
        task_uuid=dsl.PIPELINE_TASK_ID_PLACEHOLDER, created=dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER,
        scheduled=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER).output


@dsl.component(**LIGHT)
def greeting(text: str) -> str:
    import os
    return f"{text}|{os.environ.get('GREETING', '<unset>')}"


@dsl.pipeline(name="formatted")
def formatted(name: str = "kfx", n: int = 2):
    first = greeting(text=f"{name} x{n}").set_env_variable("GREETING", "hi")
    greeting(text=f"job {dsl.PIPELINE_JOB_NAME_PLACEHOLDER} after {first.output}")


@dsl.component(**LIGHT)
def owner(data: Input[Dataset]) -> str:
    return f"{data.metadata['owner']}:{type(data.metadata['owner']).__name__}:{open(data.path).read()}"


@dsl.pipeline(name="imported")
def imported(uri: str, who: str = "kfx"):
    data = dsl.importer(artifact_uri=uri, artifact_class=Dataset, reimport=False, metadata={"owner": who})
    owner(data=data.output)


@dsl.pipeline(name="strings")
def strings(first_message: str = "Hello", second_message: str = "", times: int = 1) -> str:
    return concat(first=first_message, second=second_message).output


@dsl.pipeline(name="exit-handler")
def exit_handler(message: str = "boom", fails: bool = True):
    notify = final_status()
    with dsl.ExitHandler(notify, name="guarded"):
        echoed = concat(first=message, second="!")
        with dsl.If(fails == True):  # noqa: E712 - a KFP condition
            fail(message=echoed.output)
        after = concat(first="cleanup", second="").after(echoed)
        after.ignore_upstream_failure()


@dsl.component(**LIGHT)
def failing(message: str) -> str:
    raise RuntimeError(message)


@dsl.component(**LIGHT)
def say(word: str = "fallback") -> str:
    return word


@dsl.pipeline(name="ignore-failure")
def ignore_failure():
    broken = failing(message="no")
    say(word=broken.output).ignore_upstream_failure()


@dsl.pipeline(name="retries")
def retries(counter: str, succeed_on: int = 3):
    count_attempts(counter=counter, succeed_on=succeed_on).set_retry(
        num_retries=3, backoff_duration="1s", backoff_factor=2.0, backoff_max_duration="1s")


@dsl.pipeline(name="timeout")
def timeout():
    kubernetes.set_timeout(sleep(seconds=60.0), 2)


@dsl.container_component
def greet(name: str, greeting: dsl.OutputPath(str)):
    return dsl.ContainerSpec(image="alpine", command=["sh", "-c"], args=[
        dsl.ConcatPlaceholder(["echo hello ", name, " > ", greeting])])


@dsl.pipeline(name="unsupported")
def unsupported(name: str = "kfx"):
    greet(name=name)


# ------------------------------------------------------------------ helpers
def _compile(pipeline, tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{pipeline.name}.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return path


def _kfx(pipeline, tmp_path: Path, **params):
    """Runs the compiled pipeline as `kfx run --ir` does, the fork server preloading nothing."""
    ir_path = _compile(pipeline, tmp_path)
    assert preload_for(t for t in ir.load(ir_path).tasks.values() if not t.is_importer) == ()
    lines: list = []
    runner = Runner(Workspace(tmp_path / "root"), launcher=ForkServerLauncher(()), echo=lines.append)
    result = runner.run(ir_path, params)
    result.lines = lines
    return result


def _output(result, task: str, name: str = "Output"):
    return result.steps[task].parameters[name]


@pytest.fixture(scope="module")
def kfp_local(tmp_path_factory):
    """kfp.local 2.13 with its subprocess runner in this interpreter's environment."""
    from kfp import local
    path = os.environ["PATH"]
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{path}"   # its steps' python3
    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(tmp_path_factory.mktemp("kfp-local")))
    yield local
    os.environ["PATH"] = path


# ------------------------------------------------------------------ 1. typed output parameters
def test_output_parameters_are_read_by_their_declared_type_as_kfp_local_reads_them(tmp_path, kfp_local):
    result = _kfx(typed_pipeline, tmp_path)
    kfx_out = json.loads(_output(result, "describe"))
    assert kfx_out == [["bool", True], ["int", 3], ["float", 0.25], ["list", ["a", " b"]],
                       ["dict", {"k": [1, 2]}], ["str", " padded \n"]]
    assert result.steps["typed-outputs"].parameters == {
        "flag": True, "count": 3, "ratio": 0.25, "names": ["a", " b"], "conf": {"k": [1, 2]}, "text": " padded \n"}
    assert json.loads(typed_pipeline().output) == kfx_out


# ------------------------------------------------------------------ 2. pythonic artifacts
def test_a_returned_pythonic_artifact_is_committed_to_the_store(tmp_path, kfp_local):
    result = _kfx(pythonic_single, tmp_path)
    assert result.state == "COMPLETE", result.error
    made = result.steps["make-dataset"].outputs["Output"]
    assert made.uri.startswith(str(tmp_path / "root" / "artifacts")) and Path(made.uri).read_text() == "hello"
    assert made.metadata == {"made_from": "hello"}
    assert _output(result, "read-dataset") == "hello:hello" == pythonic_single().output


def test_collected_pythonic_artifacts_reach_the_consumer_in_item_order(tmp_path):
    result = _kfx(pythonic_collected, tmp_path)
    assert result.state == "COMPLETE", result.error
    assert _output(result, "read-datasets") == "a,b,c"
    assert all(Path(result.steps[f"make-dataset[{i}]"].outputs["Output"].uri).is_file() for i in range(3))


# ------------------------------------------------------------------ 3. nested pipeline defaults
def test_a_nested_pipelines_own_default_applies_when_its_caller_leaves_the_input_out(tmp_path, kfp_local):
    result = _kfx(nested_defaults, tmp_path)
    assert _output(result, "show") == "bool:False:left out"
    assert nested_defaults().output == "bool:False:left out"


# ------------------------------------------------------------------ 4. Collected out of nested loops
def test_collected_artifacts_of_two_nested_loops_returned_by_a_nested_pipeline_are_one_flat_list(tmp_path):
    result = _kfx(nested_collected, tmp_path)
    assert result.state == "COMPLETE", result.error
    assert _output(result, "total") == 3 * (4 + 6)    # y in (2, 3) for each of 3 x, doubled
    assert sorted(n for n, s in result.steps.items() if s.state == "SKIPPED") == [
        f"double[{x}][0]" for x in range(3)]


# ------------------------------------------------------------------ 5. runtime placeholders
def test_runtime_placeholders_are_filled_as_the_kfp_backend_fills_them(tmp_path):
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    result = _kfx(runtime_placeholders, tmp_path)
    job, resource, job_uuid, task, task_uuid, created, scheduled = json.loads(_output(result, "runtime-names"))
    assert job == resource == result.run_id and task == "runtime-names"
    assert uuid.UUID(job_uuid) and uuid.UUID(task_uuid) and job_uuid != task_uuid
    assert created == scheduled and datetime.datetime.fromisoformat(created.replace("Z", "+00:00")) >= before
    assert "{{$" not in json.dumps(result.steps["runtime-names"].parameters)


def test_f_string_constants_and_environment_variables_reach_the_component(tmp_path):
    result = _kfx(formatted, tmp_path, name="Ada L")
    assert _output(result, "greeting") == "Ada L x2|hi"          # set_env_variable applies to its task only
    assert _output(result, "greeting-2") == f"job {result.run_id} after Ada L x2|hi|<unset>"
    (tmp_path / "data.txt").write_text("rows")
    result = _kfx(imported, tmp_path / "importer", uri=str(tmp_path / "data.txt"), who="Ada")
    assert _output(result, "owner") == "Ada:str:rows"        # an importer's metadata from a parameter


# ------------------------------------------------------------------ 6. exit handler, retries, timeout
@pytest.mark.parametrize("fails", [True, False])
def test_the_exit_task_runs_whatever_happens_inside_with_the_final_status(tmp_path, fails):
    result = _kfx(exit_handler, tmp_path, fails=fails)
    states = {n: s.state for n, s in result.steps.items()}
    status = json.loads(Path(result.steps["final-status"].outputs["out"].uri).read_text())
    assert states["final-status"] == "COMPLETE" and states["concat-2"] == "COMPLETE"   # ignore_upstream_failure
    assert status["job"] == result.run_id and status["task"] == "exit-handler-1"
    if fails:
        assert result.state == "FAILED" and states["fail"] == "FAILED"
        assert status == {**status, "state": "FAILED", "code": 1, "message": "fail: RuntimeError: boom!"}
        assert result.error_line.startswith("fail: RuntimeError: boom!")
    else:
        assert result.state == "COMPLETE" and states["fail"] == "SKIPPED"
        assert status == {**status, "state": "SUCCEEDED", "code": None, "message": None}


def test_ignore_upstream_failure_runs_with_the_inputs_default_when_its_producer_failed(tmp_path):
    result = _kfx(ignore_failure, tmp_path)
    assert result.state == "FAILED" and result.error_line.startswith("failing: RuntimeError: no")
    assert result.steps["say"].state == "COMPLETE" and _output(result, "say") == "fallback"


def test_set_retry_runs_a_failing_step_again_after_its_backoff(tmp_path):
    counter = tmp_path / "attempts"
    started = time.monotonic()
    result = _kfx(retries, tmp_path, counter=str(counter), succeed_on=3)
    assert result.state == "COMPLETE" and _output(result, "count-attempts") == 3 and counter.read_text() == "3"
    assert time.monotonic() - started >= 2     # two backoffs of 1 s (2 s capped at the 1 s maximum)
    assert sum("; retry " in line for line in result.lines) == 2
    counter.unlink()
    failed = _kfx(retries, tmp_path / "again", counter=str(counter), succeed_on=9)
    assert failed.state == "FAILED" and counter.read_text() == "4"   # 1 + 3 retries
    assert failed.error_line.startswith("count-attempts: RuntimeError: attempt 4 fails")
    assert (failed.run_dir / "failed" / "count-attempts" / "attempt").read_text() == "4"   # the last attempt's


def test_a_step_past_its_timeout_is_killed_and_fails_saying_so(tmp_path):
    started = time.monotonic()
    result = _kfx(timeout, tmp_path)
    assert result.state == "FAILED" and time.monotonic() - started < 20
    assert result.error_line.startswith("sleep: timed out after 2s")


# ------------------------------------------------------------------ 7. STRING parameters verbatim
def test_a_string_parameter_is_taken_verbatim_from_the_command_line(tmp_path, capsys, kfp_local):
    ir_path = _compile(strings, tmp_path)
    root = tmp_path / "root"
    assert main(["run", "--ir", str(ir_path), "--root", str(root), "--param", "second_message= World",
                 "--param", "first_message=007", "--param", "times=2"]) == 0
    [run_dir] = (root / "runs").iterdir()
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["parameters"] == {"first_message": "007", "second_message": " World", "times": 2}
    assert summary["steps"]["concat"]["parameters"]["Output"] == "007 World"
    assert strings(first_message="007", second_message=" World", times=2).output == "007 World"


# ------------------------------------------------------------------ 8. the fork server's preload
def test_the_preload_follows_what_the_components_import(tmp_path, capsys):
    ir_path = _compile(strings, tmp_path)
    root = tmp_path / "root"
    started = time.monotonic()
    assert main(["run", "--ir", str(ir_path), "--root", str(root)]) == 0
    seconds = time.monotonic() - started
    [run_dir] = (root / "runs").iterdir()
    log = (run_dir / "logs" / "_forkserver.log").read_text()
    assert '"preloaded": ["kfp.dsl.executor_main"]' in log and seconds < 10

    @dsl.component(base_image="kfx/kfx-ingest:1", install_kfp_package=False)
    def stage_step() -> str:
        return "a kfx stage's image"

    @dsl.component(**LIGHT)
    def tf_step() -> int:
        import tensorflow as tf
        return int(tf.constant(1))

    for component in (stage_step, tf_step):
        @dsl.pipeline(name="heavy")
        def heavy():
            component()
        tasks = ir.load(_compile(heavy, tmp_path)).tasks.values()
        assert preload_for(tasks) == TF_STACK


# ------------------------------------------------------------------ what kfx still cannot run
def test_a_feature_kfx_cannot_run_is_one_error_line_naming_the_task_and_the_feature(tmp_path, capsys):
    ir_path = _compile(unsupported, tmp_path)
    assert main(["run", "--ir", str(ir_path), "--root", str(tmp_path / "root")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    assert "task 'greet'" in err[0] and "dsl.ConcatPlaceholder" in err[0]
