"""Task dispatch: one container or importer task, its inputs already resolved.

As KFP's driver and launcher do for a task: the cache lookup (key, hit), KFP's executor input,
the placeholders of the component's command, and the launch through a Launcher
(kfx.runner.launchers). Its outputs are committed by kfx.runner.commit.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

from kfx.runner import commit, expressions, ir
from kfx.runner.forkserver import ForkServerLauncher
from kfx.runner.launchers import PER_STEP_ENV, Step
from kfx.stores.metadata import CONTAINER_EXECUTION, IMPORTER_EXECUTION, State
from kfx.runner.run_context import RunContext, StepFailed, StepRecord, TaskCall
from kfx.stores.local import remove_tree
from kfx_formats import artifact_metadata

LOG_TAIL_LINES = 40
# A step's resume directory (<root>/.resume/<cache key>): what it saves to resume after being killed
# (training checkpoints). Same inputs, same directory; it outlives a failed or killed attempt and is
# removed when the step commits. Absent on KFP, where a step behaves as it always did.
RESUME_ENV = "KFX_RESUME_DIR"

# The runtime placeholders KFP's backend fills (dsl.PIPELINE_JOB_NAME_PLACEHOLDER and the rest),
# in an input parameter's value or a container's command.
_RUNTIME = re.compile(r"\{\{\$\.(pipeline_job_name|pipeline_job_resource_name|pipeline_job_uuid|"
                      r"pipeline_task_name|pipeline_task_uuid|pipeline_job_create_time_utc|"
                      r"pipeline_job_schedule_time_utc|pipeline_root)\}\}")
_PLACEHOLDER = re.compile(r"\{\{\$(?:\.(inputs|outputs)\.(parameters|artifacts)\['([^']+)'\](?:\.(path|uri|output_file))?)?\}\}")


def run_task(run: RunContext, call: TaskCall) -> StepRecord:
    """Runs (or imports, or takes from cache) one task; its record, or StepFailed."""
    started = time.monotonic()
    call = dataclasses.replace(call, params=runtime_values(run, call, call.params))
    if call.task.is_importer:
        record = _import(run, call)
    else:
        run.progress.started(call.name)
        record = _with_retries(run, call)
    record.seconds = time.monotonic() - started
    run.progress.finished(call.name, record.state, record.seconds)
    return record


def runtime_values(run: RunContext, call: TaskCall, value):
    """`value` (a parameter value, a dict or list of them, an argument) with KFP's runtime
    placeholders filled as the KFP backend fills them; a task's uuid is new for each task."""
    if isinstance(value, dict):
        return {k: runtime_values(run, call, v) for k, v in value.items()}
    if isinstance(value, list):
        return [runtime_values(run, call, v) for v in value]
    if not isinstance(value, str) or "{{$." not in value:
        return value
    known = {"pipeline_job_name": run.run_id, "pipeline_job_resource_name": run.run_id,
             "pipeline_job_uuid": run.job_uuid, "pipeline_task_name": call.task.name,
             "pipeline_task_uuid": str(uuid.uuid5(uuid.UUID(run.job_uuid), call.name)),
             "pipeline_job_create_time_utc": run.created, "pipeline_job_schedule_time_utc": run.created,
             "pipeline_root": run.store.root_uri}
    return _RUNTIME.sub(lambda m: known[m.group(1)], value)


def _with_retries(run: RunContext, call: TaskCall) -> StepRecord:
    """task.set_retry(...): a failed attempt is recorded FAILED and the step runs again after the
    policy's backoff, up to its retries (a training step resumes from its checkpoint)."""
    retry, attempt = call.task.retry, 0
    while True:
        try:
            return _execute(run, call)
        except StepFailed as err:
            if retry is None or attempt >= retry.retries:
                raise
            attempt += 1
            wait = retry.wait(attempt)
            run.progress.say(f"{call.name}: attempt {attempt} failed ({err.reason}); "
                             f"retry {attempt}/{retry.retries} in {wait:g}s")
            time.sleep(wait)


def _import(run: RunContext, call: TaskCall) -> StepRecord:
    spec = call.task.executor["importer"]
    uri_spec = spec["artifactUri"]
    uri = call.params[uri_spec["runtimeParameter"]] if "runtimeParameter" in uri_spec else uri_spec["constant"]
    try:
        uri, fingerprint = run.store.resolve_import(uri)
    except (OSError, ValueError) as err:   # absent, unreadable, or not for this store
        raise StepFailed(call.name, str(err)) from err
    type_name = spec["typeSchema"]["schemaTitle"]
    with run.md_lock:
        exec_id = run.md.start_execution(IMPORTER_EXECUTION, {"task_name": call.name, "run_id": run.run_id},
                                         run.contexts)
        metadata = expressions.fill_inputs(spec.get("metadata", {}), call.params)
        art = run.md.new_artifact(type_name, uri, "artifact", metadata, fingerprint, True)
        stored = run.md.finish_execution(exec_id, State.COMPLETE, {}, {}, {"artifact": art}, run.contexts)
    return StepRecord(call.name, "IMPORTED", 0.0, exec_id, outputs=stored)


def cache_key(run: RunContext, call: TaskCall) -> str:
    fingerprints = {k: [a.fingerprint for a in v] if isinstance(v, list) else v.fingerprint
                    for k, v in call.inputs.items()}
    body = {"definition": call.task.definition_digest(), "parameters": call.params, "store": run.store.root_uri,
            "inputs": fingerprints}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _from_cache(run: RunContext, call: TaskCall, key: str) -> Optional[StepRecord]:
    with run.md_lock:
        hit = run.md.cached_outputs(key)
        if hit is None:
            return None
        artifacts, extra = hit
        if set(artifacts) != set(call.task.output_artifacts()):
            return None
        stored = {n: run.md.stored_artifact(a) for n, a in artifacts.items()}
        if not all(run.store.exists(a.uri) for a in stored.values() if a.has_content):
            return None  # something deleted the outputs: run again
        exec_id = run.md.start_execution(CONTAINER_EXECUTION, {
            "task_name": call.name, "cache_key": key, "run_id": run.run_id,
            "cached_from_execution": extra["execution_id"], "input_parameters": call.params}, run.contexts)
        run.md.finish_execution(exec_id, State.CACHED, {"output_parameters": extra["params"]},
                                call.inputs, stored, run.contexts)
    return StepRecord(call.name, "CACHED", 0.0, exec_id, outputs=stored, parameters=extra["params"])


def _resume_supported(run: RunContext) -> bool:
    """The fork server forks a lightweight step only when its environment differs from the run's
    in PER_STEP_ENV alone (else it execs a fresh interpreter): the resume variable is given to
    its steps once it is one of them."""
    return RESUME_ENV in PER_STEP_ENV or not isinstance(run.launcher, ForkServerLauncher)


def _execute(run: RunContext, call: TaskCall) -> StepRecord:
    key = cache_key(run, call)
    if run.cache and call.task.caching:
        try:
            cached = _from_cache(run, call, key)
        except Exception as err:  # the store cannot say whether the outputs exist (S3 unreachable)
            raise StepFailed(call.name, f"cannot look up its cached outputs: {err}") from err
        if cached:
            _drop_resume(run, key)   # a killed attempt's, now that another run committed it
            return cached
    staging = run.ws.staging / run.run_id / call.name
    remove_tree(staging)
    (staging / "outputs").mkdir(parents=True)
    resume, resume_lock = None, None
    if _resume_supported(run):
        resume = run.ws.resume / key
        resume_lock = lock_resume_dir(resume)
        if resume_lock is None:    # the same step runs in another live run: resume nothing of it
            resume = staging / "resume"
            resume.mkdir()
    try:
        return _launch(run, call, key, staging, resume)
    finally:
        if resume_lock is not None:
            os.close(resume_lock)


def lock_resume_dir(path: Path) -> Optional[int]:
    """Creates `path` and locks it (flock on the directory, held through the returned fd) for one
    step; None when a live step holds it (the same step, same inputs, in a concurrent run)."""
    while True:
        path.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:      # removed between the two calls by its step's commit
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)                   # locked a directory its committed step had just removed: again


def _drop_resume(run: RunContext, key: str) -> None:
    path = run.ws.resume / key
    if not path.is_dir():
        return
    fd = lock_resume_dir(path)
    if fd is not None:          # None: a live step uses it
        try:
            remove_tree(path)
        finally:
            os.close(fd)


def _writable(run: RunContext, call: TaskCall, staging: Path) -> list[str]:
    """Where the step may write: its staging, and a path in the workspace's shared registry that
    one of its parameters names (a container sees nothing else of the host writable)."""
    named = [p for p in call.params.values() if isinstance(p, str) and p.startswith("/")
             and Path(os.path.normpath(p)).is_relative_to(run.ws.registry)]
    return [str(staging)] + sorted(set(named))


def _launch(run: RunContext, call: TaskCall, key: str, staging: Path, resume: Optional[Path]) -> StepRecord:
    task = call.task
    scratch = staging / "inputs"
    try:
        executor_input = _executor_input(run, call, staging, scratch)
    except Exception as err:  # a missing/unreadable input artifact, an unreachable store
        raise StepFailed(call.name, f"cannot stage its inputs: {err}") from err
    argv = [runtime_values(run, call, _substitute(a, executor_input))
            for a in task.container["command"] + task.container.get("args", [])]
    cpu, mem = ir.resources(task)
    log_path = run.run_dir / "logs" / f"{call.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    local_inputs = {str(Path(a.uri).parent) for a in call.input_artifacts() if "://" not in a.uri}
    writable = _writable(run, call, staging)
    env = {**run.step_env, **{e["name"]: runtime_values(run, call, e["value"]) for e in task.container.get("env", [])},
           "KFX_RUN_ID": run.run_id, "KFX_TASK": call.name, "TMPDIR": str(staging / "tmp")}   # set_env_variable
    if resume is not None:
        env[RESUME_ENV] = str(resume)
        if not resume.is_relative_to(staging):
            writable.append(str(resume))
    # Temporary files (Beam's, the IR command's mktemp) go in the step's own staging: removed with it.
    (staging / "tmp").mkdir()
    step = Step(call.name, task.container.get("image", ""), argv, env,
                staging, sorted(local_inputs), writable, cpu, mem)
    with run.md_lock:
        exec_id = run.md.start_execution(CONTAINER_EXECUTION, {
            "task_name": call.name, "cache_key": key, "image": step.image,
            "launcher": run.launcher.name,
            "input_parameters": call.params, "log": str(log_path), "run_id": run.run_id}, run.contexts)
    started = time.time()
    deadline = _Deadline(run.launcher, call.name, task.timeout)
    try:
        with deadline:
            code = run.launcher.launch(step, log_path, lambda line: run.progress.step_line(call.name, line))
        failure = f"exit code {code}\n--- last lines of {log_path} ---\n{_tail(log_path)}" if code else ""
        reason = (raised_error(log_path) or f"exit code {code}") if code else ""
        if code and deadline.expired:
            reason = f"timed out after {task.timeout:g}s (its timeout)"
            failure = f"{reason}\n{failure}"
    except Exception as err:  # the launcher could not start or follow the step
        code, failure = -1, f"{run.launcher.name} launcher: {err}"
        reason = failure
    if failure:
        commit.record_failure(run, call, exec_id, {"exit_code": code, "seconds": time.time() - started})
        kept = commit.keep_failed_outputs(run, call.name, staging)
        if kept:
            failure += f"\n--- its outputs (not registered, not reusable) are kept in {kept} ---"
        raise StepFailed(call.name, failure, log_path, kept, reason, code)
    record = commit.commit_step(run, call, exec_id, executor_input, staging, key, log_path, started)
    if resume is not None:
        remove_tree(resume)    # committed: nothing to resume any more (still under this step's lock)
    return record


class _Deadline:
    """A step's timeout (`kubernetes.set_timeout`, the stage's timeout): its process is killed
    when it runs longer, as Kubernetes ends a pod past its activeDeadlineSeconds: by the launcher's
    `stop(task)` where it has one (a container), else through its `running` (task -> pid)."""

    def __init__(self, launcher, task: str, seconds: Optional[float]):
        self.launcher, self.task, self.seconds = launcher, task, seconds
        self.expired = False
        self._timer: Optional[threading.Timer] = None

    def _kill(self) -> None:
        stop = getattr(self.launcher, "stop", None)
        if stop is not None:
            self.expired = bool(stop(self.task))
            return
        pid = getattr(self.launcher, "running", {}).get(self.task)
        if pid:
            self.expired = True
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self):
        if self.seconds:
            self._timer = threading.Timer(self.seconds, self._kill)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _executor_input(run: RunContext, call: TaskCall, staging: Path, scratch: Path) -> dict:
    task = call.task
    in_types = task.input_artifact_types()

    def entry(name: str, index: Optional[int], art) -> dict:
        local = scratch / name if index is None else scratch / name / str(index)
        return {"name": str(art.id), "type": ir.artifact_type(in_types.get(name, art.type)),
                "uri": run.store.local_path(art.uri, local) if art.has_content else str(local),
                # What made it (data, parameters, code), stable with or without the cache: a step
                # may use it to recognise the same artifact (a publishing step: "already vN").
                "metadata": {**art.metadata, artifact_metadata.FINGERPRINT: art.fingerprint}}

    return {
        "inputs": {
            "parameterValues": call.params,
            "artifacts": {name: {"artifacts": [entry(name, i, a) for i, a in enumerate(value)]
                                 if isinstance(value, list) else [entry(name, None, value)]}
                          for name, value in call.inputs.items()},
        },
        "outputs": {
            "parameters": {name: {"outputFile": str(staging / "parameters" / name)}
                           for name in task.output_parameters()},
            "artifacts": {name: {"artifacts": [{
                "name": name, "type": ir.artifact_type(type_),
                "uri": str(staging / "outputs" / name), "metadata": {}}]}
                for name, type_ in task.output_artifacts().items()},
            "outputFile": str(staging / "executor_output.json"),
        },
    }


def _substitute(arg: str, executor_input: dict) -> str:
    def replace(match: re.Match) -> str:
        side, kind, name, attr = match.groups()
        if side is None:
            return json.dumps(executor_input)
        if kind == "parameters":
            if side == "inputs":
                value = executor_input["inputs"]["parameterValues"][name]
                return value if isinstance(value, str) else json.dumps(value)
            return executor_input["outputs"]["parameters"][name]["outputFile"]
        artifact = executor_input[side]["artifacts"][name]["artifacts"][0]
        return artifact["uri"]
    return _PLACEHOLDER.sub(replace, arg)


def raised_error(log_path: Path) -> str:
    """The error a Python step raised, from its log: the `SomeError: message` line that ends the
    last traceback (its first line, for a message of several), or "" when the log has none.
    A ValueError is the stages' bad-input contract (its message names the file, column or
    parameter), so its type is left out; other types stay, by their class name alone (what went
    wrong, not which module defines it)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
    if not starts:
        return ""
    for line in lines[starts[-1] + 1:]:
        if line and not line[0].isspace():     # frames are indented; the exception line is not
            kind, sep, message = line.partition(": ")
            kind = kind.rsplit(".", 1)[-1]     # a traceback names a class outside builtins with its module
            if kind == "ValueError":
                return message.strip()
            return f"{kind}: {message.strip()}" if sep else kind
    return ""


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
