"""Launchers start one step, wait for it and return its exit code.

The runner resolves everything first (command line, environment, paths), so
a launcher only decides *where* the step runs: a local process here, or a
container (kfx.docker_launcher).
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional, Protocol


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


class ProcessLauncher:
    """Each step is a child process running the component's real command.

    `python3` in the IR's command resolves to this interpreter, whose
    environment holds the stage libraries (as the stage image does).
    """
    name = "process"

    def launch(self, step: Step, log_path: Path, on_line: Callable[[str], None]) -> int:
        env = {**os.environ, **step.env}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        with open(log_path, "w") as log:
            proc = subprocess.Popen(step.argv, cwd=step.workdir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace")
            for line in proc.stdout:
                log.write(line)
                on_line(line.rstrip("\n"))
            return proc.wait()
