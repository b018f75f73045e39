"""Helpers the reliability tests share: `kfx run` as a process of its own, waiting on files."""
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BOUND = 120   # seconds: a bound against a hang, not a speed check


def kfx_run(ir_path, root, *args, env=None, **popen):
    """`kfx run --ir` in its own process (the fork server preloading nothing)."""
    cmd = [sys.executable, "-m", "kfx.cli", "run", "--ir", str(ir_path), "--root", str(root), "--preload", "", *args]
    return subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def wait_for(predicate, proc=None, what="the condition"):
    deadline = time.monotonic() + BOUND
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (code {proc.returncode}) before {what}: "
                                 f"{proc.stdout.read() if proc.stdout else ''}{proc.stderr.read() if proc.stderr else ''}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
