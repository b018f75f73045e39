"""What a run carries from start to end: the workspace, the records of its steps, its progress
display, and the one RunContext object the runner's parts (kfx.runner orchestrates, kfx.runner.dispatch
runs one task, kfx.runner.commit stores its outputs) hand each other."""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from kfx.runner import ir
from kfx.runner.launchers import Launcher
from kfx.stores.metadata import MetadataStore, StoredArtifact
from kfx.stores.local import ArtifactStore


class Workspace:
    """The layout under --root: artifacts, metadata, per-run logs and reports."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.metadata_path = self.root / "metadata.sqlite"
        self.artifacts = self.root / "artifacts"
        # Shared with steps: a step may write under it when one of its parameters names a path in it
        # (a model registry a pipeline publishes to); nothing else outside its staging.
        self.registry = self.root / "registry"
        self.staging = self.root / ".staging"
        self.resume = self.root / ".resume"

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id


class StepFailed(RuntimeError):
    """`reason` is one line for a person (the step's own error message when it raised one);
    the exception's text adds the log tail and where a failed step's outputs were kept."""

    def __init__(self, task: str, detail: str, log_path: Optional[Path] = None,
                 kept: Optional[Path] = None, reason: str = "", exit_code: Optional[int] = None):
        self.task, self.log_path, self.kept, self.exit_code = task, log_path, kept, exit_code
        self.reason = reason or detail.splitlines()[0]
        super().__init__(f"step '{task}' failed: {detail}")


@dataclasses.dataclass
class StepRecord:
    task: str
    state: str                      # COMPLETE | CACHED | FAILED | IMPORTED | SKIPPED
    seconds: float
    execution_id: Optional[int] = None
    log: Optional[str] = None
    outputs: dict = dataclasses.field(default_factory=dict)      # name -> StoredArtifact
    parameters: dict = dataclasses.field(default_factory=dict)   # output parameters
    kept: Optional[str] = None      # a failed step's unregistered outputs, moved aside for a person
    skipped: str = ""               # why a SKIPPED step did not run
    error: str = ""                 # why a FAILED task failed, in one line (an exit handler reads it)
    exit_code: Optional[int] = None  # a FAILED step's process exit code, when it had one


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


@dataclasses.dataclass
class RunContext:
    """Everything run-wide that the orchestration, the dispatch of a task and the commit of its
    outputs share: one object instead of the same seven arguments through every call."""
    run_id: str
    pipeline: ir.Pipeline
    values: dict                     # the pipeline's parameter values
    contexts: list[int]              # the run's MLMD contexts (pipeline, run)
    progress: Progress
    result: RunResult
    ws: Workspace
    store: ArtifactStore
    md: MetadataStore
    md_lock: threading.Lock          # MLMD's store object is not thread-safe
    launcher: Launcher
    step_env: dict
    cache: bool
    job_uuid: str = ""               # {{$.pipeline_job_uuid}}
    created: str = ""                # {{$.pipeline_job_create_time_utc}} (and schedule time): RFC 3339

    @property
    def run_dir(self) -> Path:
        return self.ws.run_dir(self.run_id)


@dataclasses.dataclass
class TaskCall:
    """One container or importer task to run: the task, its name in this run (with the loop
    iterations it is in: `square[2]`) and its resolved inputs."""
    task: ir.Task
    name: str
    params: dict
    inputs: dict                     # name -> StoredArtifact, or a list of them (dsl.Collected)

    def input_artifacts(self) -> list[StoredArtifact]:
        return [a for v in self.inputs.values() for a in (v if isinstance(v, list) else [v])]
