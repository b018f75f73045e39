"""Point 6: twenty back-to-back runs (cache off) of a small pipeline in one process leak
nothing: open files, threads and child processes of the runner's process, temporary files,
staging and resume directories are the same after the 20th run as after the 5th."""
import os
from pathlib import Path

from kfp import compiler

from kfx.runner.forkserver import ForkServerLauncher
from kfx.runner.orchestrator import Runner
from kfx.runner.run_context import Workspace
from tests.light_pipelines import toy

RUNS, WARM = 20, 5


def _children() -> list[int]:
    me, kids = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                kids.append(int(entry))
    return kids


def _tree(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()] if path.exists() else []
    return len(files), sum(p.stat().st_size for p in files)


def _rss_kb() -> int:
    return int(next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS")).split()[1])


def snapshot(root: Path, tmp: Path) -> dict:
    return {"fds": len(os.listdir("/proc/self/fd")), "threads": len(os.listdir("/proc/self/task")),
            "children": len(_children()), "tmp": _tree(tmp), "staging": _tree(root / ".staging"),
            "resume": _tree(root / ".resume")}


def test_twenty_runs_leak_no_files_threads_processes_or_temporary_disk(tmp_path, monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))          # the runner's and its fork server's temp dir
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    ir_path = tmp_path / "toy.yaml"
    compiler.Compiler().compile(toy, str(ir_path))
    data = tmp_path / "data.csv"
    data.write_text("name,value\na,1\nb,2\nc,6\n")
    root = tmp_path / "root"
    runner = Runner(Workspace(root), launcher=ForkServerLauncher(), cache=False, echo=lambda _: None)
    # Children this test process already had (a session's S3 server, in the full suite) are not the runs'.
    children_before = len(_children())
    seen, rss, per_run = {}, {}, []
    for i in range(1, RUNS + 1):
        before = _tree(root / "artifacts")[1] + _tree(root / "runs")[1]
        result = runner.run(ir_path, {"data_uri": str(data)})
        assert result.state == "COMPLETE", result.error
        assert [s.state for s in result.steps.values()] == ["IMPORTED", "COMPLETE", "COMPLETE"]
        per_run.append(_tree(root / "artifacts")[1] + _tree(root / "runs")[1] - before)
        if i in (WARM, RUNS):
            seen[i], rss[i] = snapshot(root, tmp), _rss_kb()
    print(f"after run {WARM}: {seen[WARM]}, rss {rss[WARM]} kB; after run {RUNS}: {seen[RUNS]}, "
          f"rss {rss[RUNS]} kB; artifacts+records per run: {sorted(set(per_run))} bytes")
    assert seen[RUNS] == seen[WARM]
    assert seen[RUNS]["children"] == children_before
    assert seen[RUNS]["staging"] == (0, 0) and seen[RUNS]["tmp"] == (0, 0)
    # What each run adds on disk is its own artifacts and records, the same for every run.
    assert max(per_run[WARM:]) - min(per_run[WARM:]) < 256   # run ids and timings differ by a few bytes
