"""bench/families.py (issue 25): the taxi lifecycle with model_family=network against auto. Its rendering
of recorded runs (seconds, in `make test`), and the smoke (`make bench-smoke`): both methods run the
whole pipeline on 1,200 rows with a tiny budget and the block names each one's figures."""
import re
import sys
from pathlib import Path

import pytest

from tests.test_bench_smoke import first_cells, smoke

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import families  # noqa: E402


def _run(wall: float, chosen: str, auc: float, steps: dict) -> dict:
    return {"wall_s": wall, "peak_mib": 1800, "exit": 0, "load": 2.0, "steps": steps, "pushed": True,
            "metric": "auc", "model": {"metric": auc, "ci": [auc - 0.01, auc + 0.01]},
            "boosting": {"metric": 0.9486, "ci": [0.941, 0.9553]}, "chosen": chosen, "family_reason": "",
            "families": {"network": {"eval_metric": 0.94, "trials": 4, "seconds": 60.0},
                         "gradient_boosted_trees": {"eval_metric": 0.95, "trials": 2, "seconds": 30.0}},
            "passed_on": "teacher"}


def test_the_block_gives_each_run_the_step_table_and_the_wall_ratio(tmp_path):
    results = {"reps": 1, "smoke": False, "params": [], "runs": {
        "network": [_run(200.0, "network", 0.9403, {"ingest": 30.0, "tune": 60.0, "notify": 0.2})],
        "auto": [_run(260.0, "gradient_boosted_trees", 0.951, {"ingest": 31.0, "tune": 95.0, "notify": 0.2})]},
        "facts": {"date": "2026-12-07 20:00 UTC", "commit": "abc", "usable_cpus": 2, "mem": "23.5 GiB"}}
    block = families.render(results)
    assert block.startswith(families.BEGIN) and block.rstrip().endswith(families.END)
    runs, steps = block.split("Mean seconds per step")
    assert [c for c in first_cells(runs) if c.isdigit()] == ["0", "0"]
    assert "| gradient_boosted_trees (teacher) |" in runs and "| auc 0.9510 (0.9410-0.9610) |" in runs
    assert "| +0.0024 |" in runs and "| -0.0083 |" in runs     # each run's gap to HistGradientBoosting
    assert "| tune | 60.0 | 95.0 | +35.0 |" in steps
    assert "**1.30x**" in block and "NOT met" in block          # 260 / 200 against the 1.2x target
    png = families.plot(results, tmp_path / "steps.png")
    assert png.stat().st_size > 1000


@pytest.mark.e2e
@pytest.mark.bench
def test_families_bench_runs_network_and_auto(repo, tmp_path):
    """Both model_family values run the taxi lifecycle to a push; each row names its chosen family, its test
    AUC and the HistGradientBoosting reference, and the block its wall ratio."""
    out = smoke(repo, "families", tmp_path, timeout=1800)
    block = out[out.index(families.BEGIN):]
    rows = {c[2]: c for c in ([x.strip() for x in line.split("|")] for line in block.splitlines())
            if len(c) > 3 and c[2] in families.METHODS}
    assert set(rows) == set(families.METHODS), block
    assert rows["network"][7].startswith("network (")                     # network only: no trees tried
    for cells in rows.values():
        assert cells[3] == "0", block                                     # exit
        assert re.match(r"auc 0\.\d{4} \(", cells[9]) and re.match(r"0\.\d{4} \(", cells[10]), cells
    assert re.search(r"Wall time auto / network: \*\*[0-9.]+x\*\*", block), block
