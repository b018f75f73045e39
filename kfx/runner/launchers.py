"""Launchers start one step, wait for it and return its exit code.

The runner resolves everything first (command line, environment, paths), so
a launcher only decides *where* the step runs: a process forked from a warm
server (kfx.runner.forkserver, the default), a fresh interpreter per step, or a
container (kfx.runner.docker_launcher).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, ContextManager, Optional, Protocol

# Environment the runner sets per step (not per run). None of it is read when an interpreter
# starts or a library is imported, so a step whose environment differs from the run's only
# here can run in a process forked from one started for the whole run.
PER_STEP_ENV = ("KFX_RUN_ID", "KFX_TASK", "TMPDIR", "KFX_RESUME_DIR")


@dataclasses.dataclass
class Step:
    task: str
    image: str
    argv: list[str]                  # the IR's command + args, placeholders resolved
    env: dict[str, str]
    workdir: Path                    # the step's private scratch/staging directory
    readable: list[str]              # host paths the step reads (mounted read-only in a container)
    writable: list[str]              # host paths the step writes
    cpu_limit: Optional[float] = None
    memory_limit: Optional[str] = None


class Launcher(Protocol):
    name: str

    def launch(self, step: Step, log_path: Path, on_line: Callable[[str], None]) -> int: ...

    # Optional: `session(run_env, log_dir)`, a context manager the runner holds open for the whole
    # run (the fork server lives in it). Launchers without one need no per-run set-up.


def session(launcher, run_env: dict[str, str], log_dir: Path) -> ContextManager:
    """The launcher's per-run session, or nothing when it needs none."""
    opener = getattr(launcher, "session", None)
    return opener(run_env, log_dir) if opener else contextlib.nullcontext()


def process_env(extra: dict[str, str]) -> dict[str, str]:
    """A local step's environment: the runner's own plus `extra`, `python3` resolving to this
    interpreter (whose environment holds the stage libraries, as the stage image does)."""
    env = {**os.environ, **extra}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def copy_lines(stream, log, on_line: Callable[[str], None]) -> None:
    """A step's output, line by line, into its log file and to the progress display."""
    for line in stream:
        log.write(line)
        on_line(line.rstrip("\n"))


class SubprocessLauncher:
    """Each step is a fresh interpreter running the component's real command (`--executor
    subprocess`): every step pays its interpreter start and imports again."""
    name = "subprocess"

    def __init__(self):
        self.running: dict[str, int] = {}   # task -> pid of its process (a step's timeout kills it)

    def launch(self, step: Step, log_path: Path, on_line: Callable[[str], None]) -> int:
        with open(log_path, "w") as log:
            proc = subprocess.Popen(step.argv, cwd=step.workdir, env=process_env(step.env),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace")
            self.running[step.task] = proc.pid
            try:
                copy_lines(proc.stdout, log, on_line)
                return proc.wait()
            finally:
                self.running.pop(step.task, None)
