"""The local runner: executes compiled KFP IR on this machine.

Like the KFP backend's driver and launcher, for every task it resolves the
inputs, looks the step up in the cache, builds KFP's executor input, runs the
component's own command (through a Launcher), and records executions,
artifacts and events in ml-metadata. Outputs are staged and committed only
when the step succeeds.
"""
from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from kfx import ir
from kfx.forkserver import ForkServerLauncher
from kfx.launchers import PER_STEP_ENV, Launcher, Step, session
from kfx.metadata import (CONTAINER_EXECUTION, IMPORTER_EXECUTION, PIPELINE_CONTEXT, RUN_CONTEXT,
                          MetadataStore, State, StoredArtifact)
from kfx.store import ArtifactStore, LocalStore, remove_tree

LOG_TAIL_LINES = 40
INPUT_FINGERPRINT = "kfx_fingerprint"   # added to every input artifact's metadata in the executor input
HEARTBEAT_SECONDS = 30
LEASE = ".lease"   # in runs/<run>/: locked (flock) while its runner lives; the kernel drops it when it dies
# A step's resume directory (<root>/.resume/<cache key>): what it saves to resume after being killed
# (training checkpoints). Same inputs, same directory; it outlives a failed or killed attempt and is
# removed when the step commits. Absent on KFP, where a step behaves as it always did.
RESUME_ENV = "KFX_RESUME_DIR"


class StepFailed(RuntimeError):
    """`reason` is one line for a person (the step's own error message when it raised one);
    the exception's text adds the log tail and where a failed step's outputs were kept."""

    def __init__(self, task: str, detail: str, log_path: Optional[Path] = None,
                 kept: Optional[Path] = None, reason: str = ""):
        self.task, self.log_path, self.kept = task, log_path, kept
        self.reason = reason or detail.splitlines()[0]
        super().__init__(f"step '{task}' failed: {detail}")


@dataclasses.dataclass
class StepRecord:
    task: str
    state: str                      # COMPLETE | CACHED | FAILED | IMPORTED
    seconds: float
    execution_id: Optional[int] = None
    log: Optional[str] = None
    outputs: dict = dataclasses.field(default_factory=dict)      # name -> StoredArtifact
    parameters: dict = dataclasses.field(default_factory=dict)   # output parameters
    kept: Optional[str] = None      # a failed step's unregistered outputs, moved aside for a person


@dataclasses.dataclass
class RunResult:
    run_id: str
    pipeline: str
    root: Path
    parameters: dict
    steps: dict[str, StepRecord]
    seconds: float
    state: str = "COMPLETE"
    error: str = ""
    error_line: str = ""            # the failure in one line: "<task>: <reason> (log: <path>)"

    @property
    def run_dir(self) -> Path:
        return self.root / "runs" / self.run_id


class Workspace:
    """The layout under --root: artifacts, metadata, per-run logs and reports."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.metadata_path = self.root / "metadata.sqlite"
        self.artifacts = self.root / "artifacts"
        self.registry = self.root / "registry"
        self.staging = self.root / ".staging"
        self.resume = self.root / ".resume"

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id


def take_lease(run_dir: Path) -> Optional[int]:
    """The run's lease (an exclusive flock on runs/<run>/.lease, held through the returned fd),
    or None when a live runner holds it. A runner that dies, even by SIGKILL, loses it."""
    fd = os.open(run_dir / LEASE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


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


class Progress:
    """One line per event, with the run's elapsed time: which step, how long."""

    def __init__(self, total: int, echo: Callable[[str], None] = print, verbose: bool = False):
        self.total, self.echo, self.verbose = total, echo, verbose
        self.start = time.monotonic()
        self.done = 0
        self.starts: dict[str, float] = {}
        self.lock = threading.Lock()

    def say(self, message: str) -> None:
        with self.lock:
            self.echo(f"[{time.monotonic() - self.start:7.1f}s] {message}")

    def started(self, task: str) -> None:
        with self.lock:
            self.starts[task] = time.monotonic()
        self.say(f"{task}: started")

    def still_running(self, tasks: list[str]) -> None:
        now = time.monotonic()
        self.say("running: " + ", ".join(f"{t} ({now - self.starts.get(t, now):.0f}s)" for t in tasks))

    def step_line(self, task: str, line: str) -> None:
        if self.verbose:
            self.say(f"  {task} | {line}")

    def finished(self, task: str, state: str, seconds: float) -> None:
        with self.lock:
            self.done += 1
        self.say(f"({self.done}/{self.total}) {task:<18} {state:<9} {seconds:6.1f}s")


_PLACEHOLDER = re.compile(r"\{\{\$(?:\.(inputs|outputs)\.(parameters|artifacts)\['([^']+)'\](?:\.(path|uri|output_file))?)?\}\}")


class Runner:
    def __init__(self, workspace: Workspace, store: Optional[ArtifactStore] = None,
                 launcher: Optional[Launcher] = None, cache: bool = True, parallelism: int = 1,
                 echo: Callable[[str], None] = print, verbose: bool = False,
                 step_env: Optional[dict] = None):
        self.ws = workspace
        self.store = store or LocalStore(workspace.artifacts)
        self.launcher = launcher or ForkServerLauncher()
        self.cache = cache
        self.parallelism = max(1, parallelism)
        self.echo, self.verbose = echo, verbose
        self.step_env = dict(step_env or {})
        self.md = MetadataStore(str(workspace.metadata_path))
        self.md_lock = threading.Lock()   # MLMD's store object is not thread-safe

    # ------------------------------------------------------------------ run
    def run(self, ir_path: str | Path, parameters: Optional[dict] = None,
            run_id: Optional[str] = None) -> RunResult:
        pipeline = ir.load(ir_path)
        values = pipeline.resolve_parameters(parameters or {})
        run_id = run_id or f"{pipeline.name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        run_dir = self.ws.run_dir(run_id)
        (run_dir / "logs").mkdir(parents=True)
        lease = take_lease(run_dir)    # before anything of this run is in MLMD or staging
        try:
            (run_dir / "pipeline.yaml").write_text(Path(ir_path).read_text())
            progress = Progress(len(pipeline.tasks), self.echo, self.verbose)
            result = RunResult(run_id, pipeline.name, self.ws.root, values, {}, 0.0)
            started = time.monotonic()
            try:
                # Opened first: a fork server starts (imports) while the run's records are made.
                with session(self.launcher, self.step_env, run_dir / "logs"):
                    self._recover_abandoned_runs(run_id, progress)
                    with self.md_lock:
                        contexts = [self.md.context(PIPELINE_CONTEXT, pipeline.name),
                                    self.md.context(RUN_CONTEXT, run_id, {"parameters": values})]
                    progress.say(f"run {run_id}: {len(pipeline.tasks)} steps, launcher={self.launcher.name}, "
                                 f"store={self.store.root_uri}")
                    self._schedule(pipeline, values, run_id, contexts, progress, result)
            except (StepFailed, ir.IRError) as err:
                result.state, result.error, result.error_line = "FAILED", str(err), _error_line(err)
            finally:
                result.seconds = time.monotonic() - started
                remove_tree(self.ws.staging / run_id)
                (run_dir / "run.json").write_text(json.dumps(_run_summary(result), indent=2, default=str))
        finally:
            os.close(lease)
        return result

    def _recover_abandoned_runs(self, own_run: str, progress: Progress) -> None:
        """What a runner that died (killed, crashed) left behind: its executions still RUNNING in MLMD
        are marked FAILED, its staging is removed. A run whose lease is held is alive: untouched."""
        with self.md_lock:
            running = self.md.running_executions()
        staged = {p.name for p in self.ws.staging.iterdir()} if self.ws.staging.is_dir() else set()
        for run_id in sorted((set(running) | staged) - {own_run, ""}):   # "": no run recorded
            run_dir = self.ws.run_dir(run_id)
            lease = take_lease(run_dir) if run_dir.is_dir() else None
            if lease is None and run_dir.is_dir():
                continue   # its runner is alive
            try:
                with self.md_lock:
                    abandoned = self.md.abandon(running.get(run_id, []), f"its runner died (run {run_id})")
                remove_tree(self.ws.staging / run_id)
            finally:
                if lease is not None:
                    os.close(lease)
            progress.say(f"run {run_id} was left by a runner that died: {len(abandoned)} execution(s) "
                         f"marked FAILED ({', '.join(abandoned) or 'none'}), its staging removed")

    def _schedule(self, pipeline, values, run_id, contexts, progress, result) -> None:
        pending = list(pipeline.order)
        running: dict[futures.Future, str] = {}
        failure: Optional[BaseException] = None
        with futures.ThreadPoolExecutor(self.parallelism) as pool:
            while pending or running:
                if failure is None:
                    for name in [n for n in pending if pipeline.tasks[n].upstream <= result.steps.keys()]:
                        if len(running) >= self.parallelism:
                            break
                        pending.remove(name)
                        running[pool.submit(self._run_task, pipeline, pipeline.tasks[name], values,
                                            run_id, contexts, progress, result)] = name
                elif not running:
                    break
                if not running:
                    raise ir.IRError(f"tasks {pending} can never run: their inputs are never produced")
                done, _ = futures.wait(running, timeout=HEARTBEAT_SECONDS,
                                       return_when=futures.FIRST_COMPLETED)
                if not done:
                    progress.still_running(sorted(running.values()))
                for fut in done:
                    name = running.pop(fut)
                    try:
                        result.steps[name] = fut.result()
                    except BaseException as err:  # noqa: BLE001 - reported after running steps end
                        log, kept = getattr(err, "log_path", None), getattr(err, "kept", None)
                        result.steps[name] = StepRecord(name, "FAILED", 0.0, log=str(log) if log else None,
                                                        kept=str(kept) if kept else None)
                        failure = failure or err
        if failure is not None:
            raise failure

    # ----------------------------------------------------------------- task
    def _run_task(self, pipeline, task: ir.Task, values, run_id, contexts, progress, result) -> StepRecord:
        params = self._input_parameters(task, values, result)
        inputs = self._input_artifacts(task, result)
        started = time.monotonic()
        if task.is_importer:
            record = self._import(task, params, run_id, contexts)
        else:
            progress.started(task.name)
            record = self._execute(pipeline, task, params, inputs, run_id, contexts, progress)
        record.seconds = time.monotonic() - started
        progress.finished(task.name, record.state, record.seconds)
        return record

    def _input_parameters(self, task: ir.Task, values: dict, result: RunResult) -> dict:
        params = {}
        for name, binding in task.spec.get("inputs", {}).get("parameters", {}).items():
            if "componentInputParameter" in binding:
                key = binding["componentInputParameter"]
                if key in values:
                    params[name] = values[key]
            elif "runtimeValue" in binding:
                params[name] = binding["runtimeValue"]["constant"]
            elif "taskOutputParameter" in binding:
                ref = binding["taskOutputParameter"]
                params[name] = result.steps[ref["producerTask"]].parameters[ref["outputParameterKey"]]
            else:
                raise ir.IRError(f"task '{task.name}': unsupported parameter binding {binding}")
        types = task.input_parameter_types()
        return {name: ir.coerce(types.get(name, ""), value) for name, value in params.items()}

    def _input_artifacts(self, task: ir.Task, result: RunResult) -> dict[str, StoredArtifact]:
        arts = {}
        for name, binding in task.spec.get("inputs", {}).get("artifacts", {}).items():
            if "taskOutputArtifact" not in binding:
                raise ir.IRError(f"task '{task.name}': unsupported artifact binding {binding}")
            ref = binding["taskOutputArtifact"]
            arts[name] = result.steps[ref["producerTask"]].outputs[ref["outputArtifactKey"]]
        return arts

    def _import(self, task: ir.Task, params: dict, run_id: str, contexts) -> StepRecord:
        spec = task.executor["importer"]
        uri_spec = spec["artifactUri"]
        uri = params[uri_spec["runtimeParameter"]] if "runtimeParameter" in uri_spec else uri_spec["constant"]
        try:
            uri, fingerprint = self.store.resolve_import(uri)
        except (OSError, ValueError) as err:   # absent, unreadable, or not for this store
            raise StepFailed(task.name, str(err)) from err
        type_name = spec["typeSchema"]["schemaTitle"]
        with self.md_lock:
            exec_id = self.md.start_execution(IMPORTER_EXECUTION, {"task_name": task.name, "run_id": run_id},
                                              contexts)
            art = self.md.new_artifact(type_name, uri, "artifact", spec.get("metadata", {}), fingerprint, True)
            stored = self.md.finish_execution(exec_id, State.COMPLETE, {}, {}, {"artifact": art}, contexts)
        return StepRecord(task.name, "IMPORTED", 0.0, exec_id, outputs=stored)

    def _cache_key(self, task: ir.Task, params: dict, inputs: dict[str, StoredArtifact]) -> str:
        body = {"definition": task.definition_digest(), "parameters": params, "store": self.store.root_uri,
                "inputs": {k: a.fingerprint for k, a in inputs.items()}}
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()

    def _from_cache(self, task, cache_key, params, inputs, run_id, contexts) -> Optional[StepRecord]:
        with self.md_lock:
            hit = self.md.cached_outputs(cache_key)
            if hit is None:
                return None
            artifacts, extra = hit
            if set(artifacts) != set(task.output_artifacts()):
                return None
            stored = {n: self.md.stored_artifact(a) for n, a in artifacts.items()}
            if not all(self.store.exists(a.uri) for a in stored.values() if a.has_content):
                return None  # something deleted the outputs: run again
            exec_id = self.md.start_execution(CONTAINER_EXECUTION, {
                "task_name": task.name, "cache_key": cache_key, "run_id": run_id,
                "cached_from_execution": extra["execution_id"], "input_parameters": params}, contexts)
            self.md.finish_execution(exec_id, State.CACHED, {"output_parameters": extra["params"]},
                                     inputs, stored, contexts)
        return StepRecord(task.name, "CACHED", 0.0, exec_id, outputs=stored, parameters=extra["params"])

    def _resume_supported(self) -> bool:
        """The fork server forks a lightweight step only when its environment differs from the run's
        in PER_STEP_ENV alone (else it execs a fresh interpreter): the resume variable is given to
        its steps once it is one of them."""
        return RESUME_ENV in PER_STEP_ENV or not isinstance(self.launcher, ForkServerLauncher)

    def _execute(self, pipeline, task: ir.Task, params, inputs, run_id, contexts, progress) -> StepRecord:
        cache_key = self._cache_key(task, params, inputs)
        if self.cache and task.caching:
            try:
                cached = self._from_cache(task, cache_key, params, inputs, run_id, contexts)
            except Exception as err:  # the store cannot say whether the outputs exist (S3 unreachable)
                raise StepFailed(task.name, f"cannot look up its cached outputs: {err}") from err
            if cached:
                self._drop_resume(cache_key)   # a killed attempt's, now that another run committed it
                return cached
        staging = self.ws.staging / run_id / task.name
        remove_tree(staging)
        (staging / "outputs").mkdir(parents=True)
        resume, resume_lock = None, None
        if self._resume_supported():
            resume = self.ws.resume / cache_key
            resume_lock = lock_resume_dir(resume)
            if resume_lock is None:    # the same step runs in another live run: resume nothing of it
                resume = staging / "resume"
                resume.mkdir()
        try:
            return self._launch_and_commit(pipeline, task, params, inputs, run_id, contexts, progress,
                                           cache_key, staging, resume)
        finally:
            if resume_lock is not None:
                os.close(resume_lock)

    def _drop_resume(self, cache_key: str) -> None:
        path = self.ws.resume / cache_key
        if not path.is_dir():
            return
        fd = lock_resume_dir(path)
        if fd is not None:          # None: a live step uses it
            try:
                remove_tree(path)
            finally:
                os.close(fd)

    def _launch_and_commit(self, pipeline, task, params, inputs, run_id, contexts, progress, cache_key,
                           staging: Path, resume: Optional[Path]) -> StepRecord:
        scratch = staging / "inputs"
        try:
            executor_input = self._executor_input(task, params, inputs, staging, scratch)
        except Exception as err:  # a missing/unreadable input artifact, an unreachable store
            raise StepFailed(task.name, f"cannot stage its inputs: {err}") from err
        argv = [_substitute(a, executor_input) for a in task.container["command"] + task.container.get("args", [])]
        cpu, mem = ir.resources(task)
        log_path = self.ws.run_dir(run_id) / "logs" / f"{task.name}.log"
        local_inputs = {str(Path(a.uri).parent) for a in inputs.values() if "://" not in a.uri}
        writable = [str(staging)] + [p for p in (params.get("registry_uri"),) if p and "://" not in p]
        env = {**self.step_env, "KFX_RUN_ID": run_id, "KFX_TASK": task.name, "TMPDIR": str(staging / "tmp")}
        if resume is not None:
            env[RESUME_ENV] = str(resume)
            if not resume.is_relative_to(staging):
                writable.append(str(resume))
        # Temporary files (Beam's, the IR command's mktemp) go in the step's own staging: removed with it.
        (staging / "tmp").mkdir()
        step = Step(task.name, task.container.get("image", ""), argv, env,
                    staging, sorted(local_inputs), writable, cpu, mem)
        with self.md_lock:
            exec_id = self.md.start_execution(CONTAINER_EXECUTION, {
                "task_name": task.name, "cache_key": cache_key, "image": step.image,
                "launcher": self.launcher.name,
                "input_parameters": params, "log": str(log_path), "run_id": run_id}, contexts)
        started = time.time()
        try:
            code = self.launcher.launch(step, log_path, lambda line: progress.step_line(task.name, line))
            failure = f"exit code {code}\n--- last lines of {log_path} ---\n{_tail(log_path)}" if code else ""
            reason = (raised_error(log_path) or f"exit code {code}") if code else ""
        except Exception as err:  # the launcher could not start or follow the step
            code, failure = -1, f"{self.launcher.name} launcher: {err}"
            reason = failure
        if failure:
            with self.md_lock:
                self.md.finish_execution(exec_id, State.FAILED, {"exit_code": code,
                                         "seconds": time.time() - started}, inputs, {}, contexts)
            kept = self._keep_failed_outputs(staging, run_id, task.name)
            if kept:
                failure += f"\n--- its outputs (not registered, not reusable) are kept in {kept} ---"
            raise StepFailed(task.name, failure, log_path, kept, reason)
        try:
            outputs, out_params = self._commit(pipeline, task, run_id, executor_input, staging, cache_key)
        except Exception as err:  # an unreachable store, a malformed executor output
            with self.md_lock:
                self.md.finish_execution(exec_id, State.FAILED, {"exit_code": 0}, inputs, {}, contexts)
            raise StepFailed(task.name, f"cannot commit its outputs: {err}", log_path) from err
        with self.md_lock:
            new = {name: self.md.new_artifact(type_, uri, name, meta, fp, has_content)
                   for name, (type_, uri, meta, fp, has_content) in outputs.items()}
            stored = self.md.finish_execution(exec_id, State.COMPLETE, {
                "output_parameters": out_params, "seconds": time.time() - started},
                inputs, new, contexts)
        if resume is not None:
            remove_tree(resume)    # committed: nothing to resume any more (still under this step's lock)
        return StepRecord(task.name, "COMPLETE", 0.0, exec_id, str(log_path), stored, out_params)

    def _keep_failed_outputs(self, staging: Path, run_id: str, task: str) -> Optional[Path]:
        """Moves what a failed step wrote out of staging into the run's folder, for a person to read.

        Never committed to the store nor recorded in MLMD, so no later step, run or cache hit uses it.
        """
        outputs = staging / "outputs"
        if not outputs.is_dir() or not any(outputs.iterdir()):
            return None
        kept = self.ws.run_dir(run_id) / "failed" / task
        kept.parent.mkdir(parents=True, exist_ok=True)
        outputs.rename(kept)   # staging and runs/ are both under --root: one filesystem
        return kept

    def _executor_input(self, task, params, inputs, staging: Path, scratch: Path) -> dict:
        in_types = task.input_artifact_types()
        return {
            "inputs": {
                "parameterValues": params,
                "artifacts": {name: {"artifacts": [{
                    "name": str(art.id), "type": ir.artifact_type(in_types.get(name, art.type)),
                    "uri": self.store.local_path(art.uri, scratch / name) if art.has_content
                    else str(scratch / name),
                    # What made it (data, parameters, code), stable with or without the cache: a step
                    # may use it to recognise the same artifact (push: "already vN").
                    "metadata": {**art.metadata, INPUT_FINGERPRINT: art.fingerprint}}]}
                    for name, art in inputs.items()},
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

    def _commit(self, pipeline, task, run_id, executor_input, staging: Path, cache_key):
        """Moves each output from staging to its final URI; reads metadata and parameters."""
        executor_output = {}
        output_file = staging / "executor_output.json"
        if output_file.exists():
            executor_output = json.loads(output_file.read_text())
        reported = {name: a["artifacts"][0] for name, a in executor_output.get("artifacts", {}).items()}
        outputs = {}
        for name, type_ in task.output_artifacts().items():
            staged_uri = executor_input["outputs"]["artifacts"][name]["artifacts"][0]["uri"]
            runtime = reported.get(name, {})
            metadata = runtime.get("metadata", {})
            fingerprint = hashlib.sha256(f"{cache_key}:{name}".encode()).hexdigest()
            if runtime.get("uri", staged_uri) != staged_uri:
                # The component placed the artifact itself (push: the registry version).
                outputs[name] = (type_, runtime["uri"], metadata, fingerprint, False)
                continue
            uri = self.store.output_uri(pipeline.name, run_id, task.name, name)
            has_content = self.store.commit(Path(staged_uri), uri)
            outputs[name] = (type_, uri, metadata, fingerprint, has_content)
        params = dict(executor_output.get("parameterValues", {}))
        for name in task.output_parameters():
            path = staging / "parameters" / name
            if name not in params and path.exists():
                params[name] = _parse_parameter(path.read_text())
            if name not in params:
                raise StepFailed(task.name, f"output parameter '{name}' was not written")
        return outputs, params


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


def _parse_parameter(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def raised_error(log_path: Path) -> str:
    """The error a Python step raised, from its log: the `SomeError: message` line that ends the
    last traceback (its first line, for a message of several), or "" when the log has none.
    A ValueError is the stages' bad-input contract (its message names the file, column or
    parameter), so its type is left out; other types stay, they say what went wrong."""
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
            return message.strip() if sep and kind == "ValueError" else line.strip()
    return ""


def _error_line(err: Exception) -> str:
    if isinstance(err, StepFailed):
        log = f" (log: {err.log_path})" if err.log_path else ""
        return f"{err.task}: {err.reason}{log}"
    return str(err).splitlines()[0]


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _run_summary(result: RunResult) -> dict:
    return {
        "run_id": result.run_id, "pipeline": result.pipeline, "state": result.state,
        "error": result.error, "error_line": result.error_line, "seconds": round(result.seconds, 2), "parameters": result.parameters,
        "steps": {name: {"state": s.state, "seconds": round(s.seconds, 2), "execution_id": s.execution_id,
                         "log": s.log, "kept": s.kept, "parameters": s.parameters,
                         "outputs": {k: {"id": a.id, "type": a.type, "uri": a.uri, "metadata": a.metadata}
                                     for k, a in s.outputs.items()}}
                  for name, s in result.steps.items()},
    }
