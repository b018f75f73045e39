"""Point 8: `kfx gc` removes old runs (records, logs, failed-step folders, their artifacts),
unused resume dirs, dead runs' staging and unpinned registry versions; never a live run, an
artifact a kept run's lineage needs, the version an alias points to, one a kept run refers to,
or the newest version."""
import fcntl
import os
import time
from pathlib import Path

from kfp import compiler, dsl

from kfx.stores.metadata import MetadataStore
from kfx.runner.orchestrator import Runner, take_lease
from kfx.runner.run_context import Workspace
from kfx_formats import registry
from tests.light_pipelines import checked_pipeline, toy

DAY = 86400


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def evaluate_against(baseline: str) -> str:
    return baseline


@dsl.pipeline(name="baseline")
def uses_baseline(baseline: str):
    evaluate_against(baseline=baseline)


def _age(run, days):
    t = time.time() - days * DAY
    for p in (run.run_dir / "pipeline.yaml", run.run_dir / "logs", run.run_dir):
        os.utime(p, (t, t))


def _gc(root, *flags):
    import contextlib
    import io

    from kfx.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["gc", "--root", str(root), *flags]) == 0
    return out.getvalue()


def test_gc_keeps_what_kept_runs_and_aliases_need_and_removes_the_rest(tmp_path):
    for name, fn in (("toy", toy), ("checked", checked_pipeline), ("baseline", uses_baseline)):
        compiler.Compiler().compile(fn, str(tmp_path / f"{name}.yaml"))
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("name,value\na,1\nb,2\nc,6\n")
    b.write_text("name,value\na,1\nb,2\nc,9\n")
    root = tmp_path / "root"
    runner = Runner(Workspace(root), echo=lambda _: None)
    reg = str(root / "registry")
    versions = [registry.publish({}, {"model.txt": f"m{i}".encode()}, reg, "m") for i in range(1, 6)]
    registry.set_alias(reg + "/m", "production", 2)   # as `kfx rollout` promotes a version

    run_a = runner.run(tmp_path / "toy.yaml", {"data_uri": str(a)})                  # oldest
    run_b = runner.run(tmp_path / "toy.yaml", {"data_uri": str(b)})
    failed = runner.run(tmp_path / "checked.yaml", {"data_uri": str(a)})
    assert failed.state == "FAILED" and (failed.run_dir / "failed" / "check-rows").is_dir()
    base = runner.run(tmp_path / "baseline.yaml", {"baseline": versions[2].uri})       # refers to v3
    run_a2 = runner.run(tmp_path / "toy.yaml", {"data_uri": str(a)})                 # newest: cached from run_a
    assert run_a2.steps["fit"].state == "CACHED"
    for i, run in enumerate((run_a, run_b, failed, base, run_a2)):
        _age(run, 50 - i)
    # A live run (its lease held, as a runner holds it) that looks old: never touched.
    live_dir = root / "runs" / "live-run"
    (live_dir / "logs").mkdir(parents=True)
    lease = take_lease(live_dir)
    (root / ".staging" / "live-run" / "step").mkdir(parents=True)
    (root / ".staging" / "dead-run" / "step").mkdir(parents=True)
    (root / ".staging" / "dead-run" / "step" / "x").write_bytes(b"x" * 100)
    t = time.time() - 60 * DAY
    os.utime(live_dir / "logs", (t, t))
    # Resume dirs: an old unused one goes; one a live step holds stays; a fresh one stays.
    old, held, fresh = (root / ".resume" / k for k in ("old", "held", "fresh"))
    for d in (old, held, fresh):
        d.mkdir(parents=True)
        (d / "ckpt").write_bytes(b"c" * 1000)
    for d in (old, held):
        os.utime(d, (t, t))
    held_fd = os.open(held, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held_fd, fcntl.LOCK_EX)

    def tree():
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".lock" not in p.name)
    before = tree()
    dry = _gc(root, "--keep-runs", "2", "--older-than", "30", "--keep-versions", "1", "--dry-run")
    assert tree() == before and "would remove" in dry
    out = _gc(root, "--keep-runs", "2", "--older-than", "30", "--keep-versions", "1")
    assert out.replace("removed", "would remove") == dry            # the dry run said exactly this
    # While a run is live no artifact goes (it may be about to reuse one from the cache).
    assert "1 live run(s) (live-run): artifacts of expired runs are kept this time" in out
    assert (root / "artifacts" / "toy" / run_b.run_id).exists()
    # The live run, its staging and the resume dir a live step holds are untouched; the rest goes.
    assert live_dir.is_dir() and (root / ".staging" / "live-run").exists() and held.exists()
    assert not (root / ".staging" / "dead-run").exists() and not old.exists() and fresh.exists()
    # Once its runner is gone (the lease released), the same policy removes it: it is 60 days old.
    os.close(lease)
    os.close(held_fd)
    second = _gc(root, "--keep-runs", "2", "--older-than", "30", "--keep-versions", "1")
    *items, last = second.splitlines()
    assert int(last.split(", ")[1].split()[0]) > 0 and last.startswith(f"removed {len(items)} item(s)")
    out += second
    assert f"removed artifact {root / 'artifacts' / 'toy' / run_b.run_id / 'fit' / 'model'}" in out
    # Runs: the three oldest and the dead one expired; the two newest stay.
    assert sorted(p.name for p in (root / "runs").iterdir()) == sorted([base.run_id, run_a2.run_id]), out
    # run_a expired, but run_a2 (kept) reused its outputs from the cache: they stay.
    for step in ("count-rows", "fit"):
        for art in run_a2.steps[step].outputs.values():
            assert (Path(art.uri).exists() or not art.has_content) and run_a.run_id in art.uri
    assert not (root / "artifacts" / "toy" / run_b.run_id).exists()              # nobody needs run_b's
    md = MetadataStore(str(root / "metadata.sqlite"))
    states = {a.uri: a.state for a in md.store.get_artifacts()}
    b_model = run_b.steps["fit"].outputs["model"].uri
    assert states[b_model] == 4 and states[run_a2.steps["fit"].outputs["model"].uri] == 2   # DELETED / LIVE
    assert not (root / ".staging" / "live-run").exists() and not held.exists() and fresh.exists()
    # Registry: newest (v5), the production alias (v2) and the baseline a kept run used (v3).
    assert sorted(p.name for p in (root / "registry" / "m").iterdir() if p.name.startswith("v")) == ["v2", "v3", "v5"]
    assert [v.number for v in registry.versions(reg, "m")] == [2, 3, 5]
    assert f"removed registry version m v1 {root / 'registry' / 'm' / 'v1'}" in out

    # What stayed still works: run_a2's lineage is served from cache; run_b's data runs again.
    again = runner.run(tmp_path / "toy.yaml", {"data_uri": str(a)})
    assert [s.state for s in again.steps.values()] == ["IMPORTED", "CACHED", "CACHED"]
    redo = runner.run(tmp_path / "toy.yaml", {"data_uri": str(b)})
    assert [s.state for s in redo.steps.values()] == ["IMPORTED", "COMPLETE", "COMPLETE"]
    # A new version is never a reused number.
    assert registry.publish({}, {"model.txt": b"m6"}, reg, "m").number == 6


def test_the_retention_setting_applies_when_no_flag_is_given(tmp_path):
    compiler.Compiler().compile(toy, str(tmp_path / "toy.yaml"))
    data = tmp_path / "a.csv"
    data.write_text("name,value\na,1\n")
    root = tmp_path / "root"
    runner = Runner(Workspace(root), cache=False, echo=lambda _: None)
    runs = [runner.run(tmp_path / "toy.yaml", {"data_uri": str(data)}) for _ in range(3)]
    for i, run in enumerate(runs):
        _age(run, 3 - i)
    (root / "retention.yaml").write_text("keep_runs: 1\n")
    out = _gc(root)
    assert sorted(p.name for p in (root / "runs").iterdir()) == [runs[-1].run_id]
    assert out.count("removed run ") == 2
    assert _gc(root, "--keep-runs", "0", "--older-than", "10").count("removed run ") == 0   # flags win: too young
