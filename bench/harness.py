"""What the benchmarks share: the environment every step inherits, a process launcher
that times its steps, one method per forked worker (so peak RSS is per method), the
machine's facts, and rewriting a generated block of docs/benchmarks.md.

Imported by the bench scripts, which run as `python bench/<script>.py` (bench/ is then
first on sys.path); importing it puts the repository on sys.path too.
"""
import contextlib
import datetime
import multiprocessing
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from importlib.metadata import version
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DOC = REPO / "docs" / "benchmarks.md"

# Inherited by every step process (the runners pass os.environ on).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kfx.runner import launchers  # noqa: E402
from kfx.runner.forkserver import ForkServerLauncher  # noqa: E402


class TimedLauncher:
    """A launcher (default: the fork server, as `kfx run`), recording each step process's
    (start, end) wall times and its peak RSS: the fork server reports each step's own; a
    subprocess's is read as the running peak of the reaped children (RUSAGE_CHILDREN)."""

    def __init__(self, inner=None):
        self.inner = inner or ForkServerLauncher()
        self.name = self.inner.name
        self.spans: dict[str, tuple[float, float]] = {}
        self.rss_after: dict[str, int] = {}

    def session(self, run_env, log_dir):
        return launchers.session(self.inner, run_env, log_dir)

    def launch(self, step, log_path, on_line):
        start = time.time()
        try:
            return self.inner.launch(step, log_path, on_line)
        finally:
            self.spans[step.task] = (start, time.time())
            reported = getattr(self.inner, "max_rss_kb", {}).get(step.task)
            self.rss_after[step.task] = reported or resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def _worker(conn, fn: Callable, arg, tmp: Path) -> None:
    log = open(tmp / "worker.log", "w")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    # Temporary files of the method itself (kfp.local's component `mktemp -d`, Beam's) land here.
    os.environ["TMPDIR"] = str(tmp / "t")
    (tmp / "t").mkdir()
    tempfile.tempdir = None
    try:
        out = fn(arg, tmp)
        out["rss_self_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["rss_children_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        out["mktemp_dirs"] = len(list((tmp / "t").iterdir()))
        conn.send(("ok", out))
    except BaseException:  # noqa: BLE001 - reported by the parent
        conn.send(("error", traceback.format_exc()))
    finally:
        log.flush()
        conn.close()
        os._exit(0)


def chain_pipeline(name: str, n: int, step, last):
    """importer -> step x (n-1) -> last: a KFP pipeline of n executed steps (the importer runs no
    process), each reading the previous step's `out` Dataset; its one parameter is `data_uri`."""
    from kfp import dsl

    @dsl.pipeline(name=name)
    def chain(data_uri: str):
        prev = dsl.importer(artifact_uri=data_uri, artifact_class=dsl.Dataset, reimport=False).output
        for _ in range(n - 1):
            prev = step(data=prev).outputs["out"]
        last(data=prev)
    return chain


def in_worker(fn: Callable, arg, scratch: Path, keep: bool = False) -> dict:
    """`fn(arg, tmp)` in a forked process; its result plus its own and its children's peak RSS."""
    tmp = Path(tempfile.mkdtemp(prefix="rep-", dir=scratch))
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker, args=(send, fn, arg, tmp))
    proc.start()
    send.close()
    try:
        status, payload = recv.recv()
    except EOFError:
        status, payload = "error", f"worker died (exit code {proc.exitcode})"
    proc.join()
    if status != "ok":
        tail = (tmp / "worker.log").read_text(errors="replace")[-4000:] if (tmp / "worker.log").exists() else ""
        raise RuntimeError(f"{fn.__name__} failed:\n{payload}\n--- worker log tail ({tmp}) ---\n{tail}")
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return payload


def machine_facts(packages: tuple[str, ...] = ()) -> dict:
    mem = ""
    with contextlib.suppress(OSError):
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem = f"{int(m.group(1)) / 2**20:.1f} GiB" if m else ""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    versions = {}
    for package in ("kfp", *packages):
        with contextlib.suppress(Exception):
            versions[package] = version(package)
    return {"date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "nproc": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)), "mem": mem,
            "python": platform.python_version(), "kfp": versions.pop("kfp", "?"), "versions": versions,
            "platform": platform.platform(), "commit": commit or "?"}


def tree_rss_kb(root: int) -> int:
    """The summed resident memory (KiB) of `root` and every process descending from it, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/statm") as f:
                pages = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE") // 1024
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total


def mib(kb: float) -> str:
    return f"{kb / 1024:.0f}"


def write_block(begin: str, end: str, block: str, when_absent: Callable[[str], str], doc: Path = DOC) -> None:
    """Replaces the text between `begin` and `end` in `doc` (docs/benchmarks.md) with `block` (which
    carries the markers); where they are absent, writes `when_absent(current text)`."""
    text = doc.read_text() if doc.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        if block.endswith("\n") and tail.startswith("\n"):
            tail = tail[1:]   # the block carries its own newline: rewriting it adds no blank line
        doc.write_text(head + block + tail)
    else:
        doc.write_text(when_absent(text))
