"""kfx.views.run_records on a tiny synthetic root: the Runs page's rows, sorting, filtering and pages, a live
run, the registry, compare and monitoring."""
import os

import pytest

from kfx.runner.orchestrator import take_lease
from kfx.ui import monitoring, registry
from kfx.views import run_records
from tests.ui import synthetic


@pytest.fixture
def root(tmp_path):
    synthetic.write_runs(tmp_path, 12, failed_every=5)
    synthetic.write_registry(tmp_path)
    synthetic.write_monitor_run(tmp_path, 1, retrain=False, online=0.89)
    synthetic.write_monitor_run(tmp_path, 2, retrain=True, online=0.80)
    return run_records.Root(tmp_path)


def test_runs_page_rows_carry_the_record_summary(root):
    page = run_records.runs_page(root, text="kfx-tabular", per_page=50)
    assert page["total"] == 12
    newest = page["rows"][0]
    assert newest["run"] == synthetic.run_id(11)     # newest first by default
    assert newest["pipeline"] == "kfx-tabular" and newest["span"] == 11 % 4 + 1
    assert newest["steps"] == 4 and newest["cached"] == 1
    assert newest["metric"]["name"] == "auc" and newest["metric"]["low"] < newest["metric"]["value"] < newest["metric"]["high"]
    assert newest["outcome"] == "pushed taxi v12 (auc 0.910)"
    failed = next(r for r in page["rows"] if r["state"] == "FAILED")
    assert failed["outcome"] == "validate: anomalies found"


def test_runs_sort_filter_and_paginate_server_side(root):
    by_metric = run_records.runs_page(root, text="kfx-tabular", sort="metric", desc=True)["rows"]
    values = [r["metric"]["value"] for r in by_metric]
    assert values == sorted(values, reverse=True)
    ascending = [r["seconds"] for r in run_records.runs_page(root, sort="seconds", desc=False)["rows"]]
    assert ascending == sorted(ascending)
    failed = run_records.runs_page(root, state="FAILED")
    assert failed["total"] == 2 and {r["state"] for r in failed["rows"]} == {"FAILED"}
    first, second = (run_records.runs_page(root, text="tabular", per_page=5, page=p) for p in (1, 3))
    assert first["pages"] == 3 and len(first["rows"]) == 5 and len(second["rows"]) == 2
    assert not {r["run"] for r in first["rows"]} & {r["run"] for r in second["rows"]}
    assert run_records.runs_page(root, sort="no such column")["sort"] == "started"


def test_a_run_without_a_record_is_running_while_its_runner_holds_the_lease(root):
    run_dir = root.path / "runs" / "kfx-tabular-20260103-000000-abcdef"
    (run_dir / "logs").mkdir(parents=True)
    lease = take_lease(run_dir)
    try:
        assert run_records.run_state(root, run_dir.name) == "RUNNING"
        row = next(r for r in run_records.runs_page(root, state="RUNNING")["rows"])
        assert row["run"] == run_dir.name and row["pipeline"] == "kfx-tabular"
    finally:
        os.close(lease)
    assert run_records.run_state(root, run_dir.name) == "UNFINISHED"   # its runner died without a record


def test_models_read_versions_aliases_rollouts_and_cards(root):
    [model] = registry.models(root)
    assert model["name"] == "taxi" and [v["version"] for v in model["versions"]] == [2, 1]
    v2, v1 = model["versions"]
    assert v2["aliases"] == ["production"] and v1["aliases"] == ["staging"]
    assert v2["metric"]["value"] == 0.93 and v2["size"] > v1["size"] > 1000
    assert v2["card"] == "registry/taxi/v2/model_card.html"
    assert model["alias_history"][0]["note"] == "canary passed"
    assert model["rollouts"][0]["status"] == "promoted"


def test_compare_flags_differing_parameters_and_collects_curves(root):
    found = run_records.compare(root, [synthetic.run_id(0), synthetic.run_id(1), "no-such-run"])
    assert found["missing"] == ["no-such-run"]
    rows = {p["name"]: p for p in found["parameters"]}
    assert rows["train_epochs"]["differs"] and rows["train_epochs"]["values"] == [4, 5]
    assert len(found["rocs"]) == 2 and found["primary"][0]["name"] == "auc"
    assert any(m["name"] == "evaluate / auc" and m["differs"] for m in found["metrics"])


def test_monitoring_reads_span_drift_and_monitor_windows(root):
    windows = monitoring.windows(root)
    spans = [w for w in windows if w["kind"].startswith("span")]
    monitors = [w for w in windows if w["kind"] == "monitor window"]
    assert len(monitors) == 2 and monitors[1]["retrain"] and monitors[1]["skew"]["fare"] == 0.24
    assert monitors[1]["flagged"] == ["fare"] and monitors[0]["online"]["value"] == 0.89
    drifted = [w for w in spans if w["retrain"]]
    assert drifted and all(w["drift"] == {"trip_miles": None} for w in drifted)
    stopped = [w for w in spans if w["kind"].endswith("(stopped)")]   # runs 4 and 9: check-drift blocked them
    assert len(stopped) == 2 and all(w["flagged"] == ["trip_miles"] for w in stopped)


def test_memory_stays_bounded_the_default_view_reads_one_page_and_the_cache_is_capped(root, monkeypatch):
    reads = []
    real = run_records.read_record
    monkeypatch.setattr(run_records, "read_record", lambda run_dir, name="run.json": reads.append(run_dir.name) or real(run_dir, name))
    page = run_records.runs_page(root, per_page=4, page=2)
    assert [r["run"] for r in page["rows"]] == sorted(reads, reverse=True) and len(reads) == 4
    assert page["total"] == 14 and page["pages"] == 4
    monkeypatch.setattr(run_records, "SUMMARY_CACHE", 3)
    run_records.runs_page(root, sort="metric", per_page=2)   # every record read once, three rows kept
    assert len(root._summaries) == 3


def test_the_runs_page_reads_the_runners_listing_and_old_roots_alike(tmp_path):
    """With summary.json (what the runner writes now) the rows are those run.json gives, and
    run.json is not parsed (made unreadable here); a root without it still lists its runs."""
    new, old = tmp_path / "new", tmp_path / "old"
    synthetic.write_runs(new, 6, failed_every=4)
    synthetic.write_runs(old, 6, failed_every=4, listing=False)
    expected = run_records.runs_page(run_records.Root(old), sort="metric")["rows"]
    for run in (new / "runs").iterdir():
        stamp = (run / "run.json").stat()
        (run / "run.json").write_text("not json")
        os.utime(run / "run.json", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    rows = run_records.runs_page(run_records.Root(new), sort="metric")["rows"]
    assert [{k: v for k, v in r.items() if k != "started"} for r in rows] == \
        [{k: v for k, v in r.items() if k != "started"} for r in expected]
    assert len(rows) == 6 and all(r["metric"] for r in rows) and any(r["state"] == "FAILED" for r in rows)
