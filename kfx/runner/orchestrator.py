"""The local runner: executes compiled KFP IR on this machine.

Split as kfp.local splits it. This module orchestrates: the run's lifecycle (lease, MLMD
contexts, recovery of runs whose runner died, run.json) and the scheduling of the pipeline's
DAGs, control flow included (dsl.If / Elif / Else, dsl.ParallelFor, dsl.Collected, pipelines
used as components). kfx.runner.dispatch runs one container or importer task (cache, executor input,
placeholders, launcher); kfx.runner.commit stores its outputs and records them in ml-metadata. Run-wide
state travels between them in one RunContext (kfx.runner.run_context).
"""
from __future__ import annotations

import collections
import concurrent.futures as futures
import dataclasses
import fcntl
import json
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from kfx.runner import dispatch, expressions, ir
from kfx.runner.forkserver import ForkServerLauncher
from kfx.runner.launchers import Launcher, session
from kfx.stores.metadata import (CONTAINER_EXECUTION, IMPORTER_EXECUTION, PIPELINE_CONTEXT, RUN_CONTEXT,
                          MetadataStore)
from kfx.runner.run_context import (Progress, RunContext, RunResult, StepFailed, StepRecord, TaskCall,
                             Workspace)
from kfx.stores.local import ArtifactStore, LocalStore, remove_tree

HEARTBEAT_SECONDS = 30
NOT_RUN = "NOT_RUN"   # a task that never started: after a failure, or below a task that failed
LEASE = ".lease"   # in runs/<run>/: locked (flock) while its runner lives; the kernel drops it when it dies


def take_lease(run_dir: Path, wait: bool = False) -> Optional[int]:
    """The run's lease (an exclusive flock on runs/<run>/.lease, held through the returned fd),
    or None when a live runner holds it. A runner that dies, even by SIGKILL, loses it.
    `wait`: block until it is free (a new run's own runner: observers such as `kfx ui` or
    `kfx gc` probe the lease for an instant, and must not make the run fail)."""
    fd = os.open(run_dir / LEASE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


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

    def run(self, ir_path: str | Path, parameters: Optional[dict] = None,
            run_id: Optional[str] = None) -> RunResult:
        pipeline = ir.load(ir_path)
        values = pipeline.resolve_parameters(parameters or {})
        created = datetime.now(timezone.utc)
        run_id = run_id or f"{pipeline.name}-{created:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        run_dir = self.ws.run_dir(run_id)
        (run_dir / "logs").mkdir(parents=True)
        lease = take_lease(run_dir, wait=True)    # before anything of this run is in MLMD or staging
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
                    run = RunContext(run_id, pipeline, values, contexts, progress, result, self.ws, self.store,
                                     self.md, self.md_lock, self.launcher, self.step_env, self.cache,
                                     job_uuid=str(uuid.uuid4()),
                                     created=created.isoformat(timespec="seconds").replace("+00:00", "Z"))
                    _Scheduler(run, self.parallelism).execute()
            except (StepFailed, ir.IRError) as err:
                result.state, result.error, result.error_line = "FAILED", str(err), _error_line(err)
            finally:
                result.seconds = time.monotonic() - started
                remove_tree(self.ws.staging / run_id)
                record = _run_summary(result)
                (run_dir / "run.json").write_text(json.dumps(record, indent=2, default=str))
                (run_dir / "summary.json").write_text(json.dumps(run_listing(record), default=str))
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


# ------------------------------------------------------------------ scheduling the DAGs
class _Skipped(Exception):
    """A task that does not run: why, in a few words."""


@dataclasses.dataclass(eq=False)
class _Scope:
    """One instance of a DAG: the root, a condition's branch, a loop's iteration, a pipeline used
    as a component. Its tasks' records, by task name, are what its later tasks read."""
    dag: ir.Dag
    parameters: dict                 # its input parameters (the root's: the pipeline's)
    artifacts: dict                  # its input artifacts
    indices: tuple[int, ...]         # the loop iterations it is in, outermost first
    on_done: Callable[["_Scope"], None]
    done: dict[str, StepRecord] = dataclasses.field(default_factory=dict)
    pending: list[str] = dataclasses.field(default_factory=list)
    active: int = 0                  # tasks started, not done
    finished: bool = False
    failure: Optional[StepRecord] = None   # its first task that failed or never ran

    def name(self, task: ir.Task) -> str:
        """A task's name in this run: `square`, or `square[2]` in a loop's third iteration."""
        return (task.label or task.name) + "".join(f"[{i}]" for i in self.indices)


class _Scheduler:
    """Runs the DAG tree: ready container and importer tasks go to a thread pool (up to
    `parallelism` at once); sub-DAGs open scopes here, in the scheduling thread, which alone
    touches the scopes. The first failure stops new starts (the running steps end first), except
    for tasks that run whatever their upstream did (dsl.ExitHandler's exit task,
    `ignore_upstream_failure()`); the run still fails with that first failure."""

    def __init__(self, run: RunContext, parallelism: int):
        self.run, self.parallelism = run, parallelism
        self.ready: collections.deque[tuple[_Scope, TaskCall]] = collections.deque()
        self.failure: Optional[BaseException] = None   # the run's first; later starts only for exit tasks

    def execute(self) -> None:
        root = _Scope(self.run.pipeline.root, self.run.values, {}, (), on_done=lambda scope: None)
        self._enter(root)
        running: dict[futures.Future, tuple[_Scope, TaskCall]] = {}
        with futures.ThreadPoolExecutor(self.parallelism) as pool:
            while True:
                while self.ready and len(running) < self.parallelism:
                    scope, call = self.ready.popleft()
                    if self.failure is not None and not call.task.runs_after_failure:
                        self._task_done(scope, call.task.name, self._not_run(call.name))
                        continue
                    running[pool.submit(dispatch.run_task, self.run, call)] = (scope, call)
                if not running:
                    break
                done, _ = futures.wait(running, timeout=HEARTBEAT_SECONDS, return_when=futures.FIRST_COMPLETED)
                if not done:
                    self.run.progress.still_running(sorted(call.name for _, call in running.values()))
                for fut in done:
                    scope, call = running.pop(fut)
                    try:
                        record = fut.result()
                    except BaseException as err:  # noqa: BLE001 - reported once the run ends
                        log, kept = getattr(err, "log_path", None), getattr(err, "kept", None)
                        record = StepRecord(call.name, "FAILED", 0.0, log=str(log) if log else None,
                                            kept=str(kept) if kept else None,
                                            error=f"{call.name}: " + (getattr(err, "reason", "") or
                                                                      str(err).splitlines()[0]),
                                            exit_code=getattr(err, "exit_code", None))
                        self.failure = self.failure or err
                    self.run.result.steps[call.name] = record
                    self._task_done(scope, call.task.name, record)
        if self.failure is not None:
            raise self.failure
        if not root.finished:
            raise ir.IRError(f"tasks {root.pending} can never run: their inputs are never produced")

    # --- scopes
    def _enter(self, scope: _Scope) -> None:
        scope.pending = list(scope.dag.order)
        self._advance(scope)

    def _advance(self, scope: _Scope) -> None:
        progressed = True
        while progressed:
            progressed = False
            for name in list(scope.pending):
                task = scope.dag.tasks[name]
                if name not in scope.pending or not task.upstream <= scope.done.keys():
                    continue
                scope.pending.remove(name)
                upstream_ok = all(scope.done[u].state not in ("FAILED", NOT_RUN) for u in task.upstream)
                if task.runs_after_failure or (upstream_ok and self.failure is None):
                    scope.active += 1
                    self._start(scope, task)
                else:   # after a failure, or below a task that failed: never runs (as on KFP)
                    scope.done[name] = self._not_run(name)
                    scope.failure = scope.failure or scope.done[name]
                    progressed = True
        if not scope.pending and not scope.active and not scope.finished:
            scope.finished = True
            scope.on_done(scope)

    def _not_run(self, name: str) -> StepRecord:
        first = self.failure
        why = (f"{first.task}: {first.reason}" if isinstance(first, StepFailed)
               else str(first).splitlines()[0] if first else "an upstream task failed")
        return StepRecord(name, NOT_RUN, 0.0, error=why, exit_code=getattr(first, "exit_code", None))

    def _task_done(self, scope: _Scope, task: str, record: StepRecord) -> None:
        scope.done[task] = record
        if record.state in ("FAILED", NOT_RUN) and scope.failure is None:
            scope.failure = record
        scope.active -= 1
        self._advance(scope)

    # --- tasks
    def _start(self, scope: _Scope, task: ir.Task) -> None:
        try:
            params, artifacts = _inputs(self.run, scope, task)
            if task.dag is None:
                self.ready.append((scope, TaskCall(task, scope.name(task), params, artifacts)))
                return
            if task.condition and not expressions.condition(task.condition, params):
                raise _Skipped(f"its condition is false: {task.condition}")
            if not task.iterator:
                self._enter(_Scope(task.dag, params, artifacts, scope.indices,
                                   on_done=lambda child: self._task_done(scope, task.name, _dag_record(task, [child]))))
                return
            self._loop(scope, task, params, artifacts, _items(task, params, artifacts))
        except _Skipped as why:
            self._skip(scope, task, str(why))

    def _loop(self, scope: _Scope, task: ir.Task, params: dict, artifacts: dict, items: list) -> None:
        """dsl.ParallelFor: one scope per item, at most `parallelismLimit` of them open at once; the
        loop's outputs are each iteration's, collected in item order (dsl.Collected)."""
        if not items:
            self._skip(scope, task, "its loop has no items", outputs=_dag_record(task, [], loop=True))
            return
        self.run.progress.total += (len(items) - 1) * len(task.dag.leaves())
        item_input = task.iterator["itemInput"]
        item_type = task.input_parameter_types().get(item_input, "")
        limit = task.spec.get("iteratorPolicy", {}).get("parallelismLimit") or len(items)
        waiting = collections.deque(range(len(items)))
        finished: dict[int, _Scope] = {}
        open_scopes, filling = 0, False

        def fill() -> None:
            # An iteration that ends at once (all of it skipped) calls back into fill(); the loop
            # below goes on instead, so a long loop never recurses once per item.
            nonlocal open_scopes, filling
            if filling:
                return
            filling = True
            while waiting and open_scopes < limit:
                i = waiting.popleft()
                open_scopes += 1
                p, a = dict(params), dict(artifacts)
                if "artifactIterator" in task.spec:
                    a[item_input] = items[i]
                else:
                    p[item_input] = ir.coerce(item_type, items[i])
                self._enter(_Scope(task.dag, p, a, scope.indices + (i,), on_done=lambda child, i=i: done(i, child)))
            filling = False

        def done(i: int, child: _Scope) -> None:
            nonlocal open_scopes
            finished[i] = child
            open_scopes -= 1
            if len(finished) == len(items):
                self._task_done(scope, task.name, _dag_record(task, [finished[k] for k in range(len(items))], loop=True))
            else:
                fill()

        fill()

    def _skip(self, scope: _Scope, task: ir.Task, why: str, outputs: Optional[StepRecord] = None) -> None:
        """A task that does not run, and every container task in it: SKIPPED in the progress, the
        run's record and MLMD (its execution CANCELED, `skipped` saying why); not a failure."""
        run = self.run
        run.progress.say(f"{task.name}{''.join(f'[{i}]' for i in scope.indices)} skipped: {why}")
        for leaf in (task.dag.leaves() if task.dag else [task]):
            name = scope.name(leaf)
            kind = IMPORTER_EXECUTION if leaf.is_importer else CONTAINER_EXECUTION
            with run.md_lock:
                exec_id = run.md.skipped_execution(kind, {"task_name": name, "run_id": run.run_id, "skipped": why},
                                                   run.contexts)
            run.result.steps[name] = StepRecord(name, "SKIPPED", 0.0, exec_id, skipped=why)
            run.progress.finished(name, "SKIPPED", 0.0)
        record = outputs or StepRecord(task.name, "SKIPPED", 0.0)
        record.state, record.skipped = "SKIPPED", why
        self._task_done(scope, task.name, record)


def _inputs(run: RunContext, scope: _Scope, task: ir.Task) -> tuple[dict, dict]:
    """A task's input parameters (as their declared types) and artifacts, from its DAG's inputs,
    constants and its upstream tasks' outputs; _Skipped when an upstream task that was skipped
    never produced one. An input nobody gave takes its component's default (a pipeline used as a
    component: its own parameter defaults), as KFP's driver does."""
    bindings = task.spec.get("inputs", {})
    params = {}
    for name, binding in bindings.get("parameters", {}).items():
        if "componentInputParameter" in binding:
            key = binding["componentInputParameter"]
            if key not in scope.parameters:
                continue   # an optional input nobody gave: the component's own default (below)
            value = scope.parameters[key]
        elif "taskFinalStatus" in binding:
            value = _final_status(run, scope.done[binding["taskFinalStatus"]["producerTask"]])
        elif "runtimeValue" in binding:
            value = binding["runtimeValue"]["constant"]
        elif "taskOutputParameter" in binding:
            producer = scope.done[binding["taskOutputParameter"]["producerTask"]]
            if task.runs_after_failure and producer.state in ("FAILED", NOT_RUN):
                continue   # ignore_upstream_failure(): the input's default applies, as on KFP
            value = _upstream(scope, binding["taskOutputParameter"], "outputParameterKey", name, "parameters")
        else:
            raise ir.IRError(f"task '{task.name}': unsupported parameter binding {binding}")
        if "parameterExpressionSelector" in binding:
            value = expressions.select(binding["parameterExpressionSelector"], value)
        params[name] = value
    artifacts = {}
    for name, binding in bindings.get("artifacts", {}).items():
        if "componentInputArtifact" in binding:
            if binding["componentInputArtifact"] in scope.artifacts:
                artifacts[name] = scope.artifacts[binding["componentInputArtifact"]]
        elif "taskOutputArtifact" in binding:
            artifacts[name] = _upstream(scope, binding["taskOutputArtifact"], "outputArtifactKey", name, "outputs")
        else:
            raise ir.IRError(f"task '{task.name}': unsupported artifact binding {binding}")
    for name, binding in bindings.get("parameters", {}).items():
        if "runtimeValue" in binding:   # an f-string over the task's other inputs
            params[name] = expressions.fill_inputs(params[name], params)
    for name, definition in task.component.get("inputDefinitions", {}).get("parameters", {}).items():
        if name not in params and "defaultValue" in definition:
            params[name] = definition["defaultValue"]
    types = task.input_parameter_types()
    return {name: ir.coerce(types.get(name, ""), value) for name, value in params.items()}, artifacts


def _final_status(run: RunContext, producer: StepRecord) -> dict:
    """dsl.PipelineTaskFinalStatus of the task an exit handler guards, as KFP's driver hands it
    to the exit task (kfp's executor reads these keys)."""
    failed = producer.state in ("FAILED", NOT_RUN)
    error = {"code": producer.exit_code or 1, "message": producer.error} if failed else {}
    return {"state": "FAILED" if failed else "SUCCEEDED", "pipelineJobResourceName": run.run_id,
            "pipelineTaskName": producer.task, "error": error}


def _upstream(scope: _Scope, ref: dict, key_field: str, input_name: str, kind: str):
    producer = scope.done[ref["producerTask"]]
    produced = getattr(producer, kind)
    if ref[key_field] not in produced:
        why = "was skipped" if producer.state == "SKIPPED" else "did not complete"
        raise _Skipped(f"its input '{input_name}' comes from {ref['producerTask']}, which {why}")
    return produced[ref[key_field]]


def _items(task: ir.Task, params: dict, artifacts: dict) -> list:
    """What a dsl.ParallelFor iterates over: a literal list, a list parameter or a list of artifacts."""
    spec = task.iterator["items"]
    if "raw" in spec:
        items = json.loads(spec["raw"])
    elif "inputParameter" in spec:
        items = params.get(spec["inputParameter"])
        if isinstance(items, str):
            try:
                items = json.loads(items)
            except json.JSONDecodeError:
                pass
    else:
        items = artifacts.get(spec.get("inputArtifact", ""))
    if not isinstance(items, list):
        raise ir.IRError(f"loop '{task.name}' iterates over {items!r}, not a list")
    return items


def _dag_record(task: ir.Task, scopes: list[_Scope], loop: bool = False) -> StepRecord:
    """A sub-DAG's outputs as its DAG declares them: each output from the first of its selectors
    whose producer made it (dsl.OneOf picks the branch that ran); for a loop, the list of every
    iteration's (dsl.Collected)."""
    params, artifacts = {}, {}
    outputs = task.dag.outputs
    for kind, found, specs in (("parameters", params, outputs.get("parameters", {})),
                               ("outputs", artifacts, outputs.get("artifacts", {}))):
        for name, spec in specs.items():
            if kind == "parameters":
                selectors = [spec["valueFromParameter"]] if "valueFromParameter" in spec else \
                    spec.get("valueFromOneof", {}).get("parameterSelectors", [])
                key = "outputParameterKey"
            else:
                selectors, key = spec.get("artifactSelectors", []), "outputArtifactKey"
            values = []
            for scope in scopes:
                for selector in selectors:
                    record = scope.done.get(selector["producerSubtask"])
                    if record is not None and selector[key] in getattr(record, kind):
                        values.append(getattr(record, kind)[selector[key]])
                        break
            if loop and kind == "outputs":   # an artifact list is flat (nested loops' included), as in KFP
                found[name] = [a for v in values for a in (v if isinstance(v, list) else [v])]
            elif loop:
                found[name] = values
            elif values:
                found[name] = values[0]
    failure = next((s.failure for s in scopes if s.failure), None)
    if failure is not None:
        return StepRecord(task.name, "FAILED", 0.0, outputs=artifacts, parameters=params,
                          error=failure.error, exit_code=failure.exit_code)
    return StepRecord(task.name, "COMPLETE", 0.0, outputs=artifacts, parameters=params)


# ------------------------------------------------------------------ the run's record
def _error_line(err: Exception) -> str:
    if isinstance(err, StepFailed):
        log = f" (log: {err.log_path})" if err.log_path else ""
        return f"{err.task}: {err.reason}{log}"
    return str(err).splitlines()[0]


def run_listing(record: dict) -> dict:
    """run.json without what a list of runs never shows (kfx ui's Runs page reads this, ~1 KB, not
    the ~150 KB record): each step's state and, of each output's metadata, the `summary` line and
    the `trust` metric with its interval."""
    def slim(metadata: dict) -> dict:
        kept = {k: metadata[k] for k in ("summary", "primary_metric") if k in metadata}
        if isinstance(metadata.get("trust"), dict):
            kept["trust"] = {k: metadata["trust"][k] for k in ("metric", "model") if k in metadata["trust"]}
        return kept
    steps = {name: {"state": step["state"], "outputs": {k: {"metadata": slim(a["metadata"])}
                                                        for k, a in step["outputs"].items() if slim(a["metadata"])}}
             for name, step in record["steps"].items()}
    return {**{k: record[k] for k in ("run_id", "pipeline", "state", "error_line", "seconds", "parameters")},
            "steps": steps}


def _run_summary(result: RunResult) -> dict:
    return {
        "run_id": result.run_id, "pipeline": result.pipeline, "state": result.state,
        "error": result.error, "error_line": result.error_line, "seconds": round(result.seconds, 2),
        "parameters": result.parameters,
        "steps": {name: {"state": s.state, "seconds": round(s.seconds, 2), "execution_id": s.execution_id,
                         "log": s.log, "kept": s.kept, "parameters": s.parameters,
                         **({"skipped": s.skipped} if s.skipped else {}),
                         "outputs": {k: {"id": a.id, "type": a.type, "uri": a.uri, "metadata": a.metadata}
                                     for k, a in s.outputs.items()}}
                  for name, s in result.steps.items()},
    }
