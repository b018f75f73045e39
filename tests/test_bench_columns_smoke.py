"""The column-scaling benchmark (issue 26) works end to end on tiny tables: every stage it
runs reports a row per column count, and the table generator is deterministic. Never a
speed: the figures are in docs/benchmarks.md."""
import json
import subprocess
import sys


def test_wide_table_is_deterministic(repo, tmp_path):
    sys.path.insert(0, str(repo / "bench"))
    import columns
    a, b = columns.wide_table(50, 6, str(tmp_path / "a.csv")), columns.wide_table(50, 6, str(tmp_path / "b.csv"))
    assert open(a, "rb").read() == open(b, "rb").read()
    import pandas as pd
    df = pd.read_csv(a)
    assert list(df.columns) == ["num_0", "num_1", "num_2", "txt_0", "txt_1", "txt_2", "target"]
    assert df.txt_0.dtype == object and set(df.target) == {0, 1}


def test_columns_bench_smoke_reports_every_stage(repo, tmp_path):
    raw = tmp_path / "columns.json"
    out = subprocess.run([sys.executable, "bench/columns.py", "--smoke", "--scratch", str(tmp_path / "s"),
                          "--json", str(raw)], cwd=repo, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    block = out.stdout[out.stdout.index("<!-- columns:begin -->"):]
    assert "<!-- columns:end -->" in block
    for stage in ("ingest", "validate", "transform"):
        assert f"| {stage} |" in block
    results = json.loads(raw.read_text())["results"]
    assert not [r for r in results if r.get("error")], results
    assert {(r["stage"], r["columns"]) for r in results} == \
        {(s, 6) for s in ("ingest", "validate", "transform")}
    assert all(r["seconds"] > 0 and r["cpu_seconds"] > 0 and r["peak_kb"] > 0 for r in results)


def test_marginal_cost_per_column_and_failures_in_the_block(repo):
    sys.path.insert(0, str(repo / "bench"))
    import columns
    results = [dict(stage="transform", columns=10, seconds=20.0, cpu_seconds=10.0, peak_kb=2048),
               dict(stage="transform", columns=50, seconds=40.0, cpu_seconds=18.0, peak_kb=4096),
               dict(stage="tune", columns=10, seconds=5.0, cpu_seconds=5.0, peak_kb=1024),
               dict(stage="tune", columns=50, error="ValueError: too wide")]
    analysis = columns.analyse(results, [10, 50])
    assert analysis["transform"]["marg"] == [(10, 50, 0.5)] and analysis["transform"]["cpu_marg"] == [(10, 50, 0.2)]
    assert analysis["tune"]["marg"] == [] and analysis["tune"]["failed"] == {50: "ValueError: too wide"}
    facts = dict(date="d", nproc=2, mem="m", python="3", commit="c")
    block = columns.render(analysis, [10, 50], 2000, facts, 1.0, [])
    assert "| transform | 20.0 (10.0) | 40.0 (18.0) | 0.500 (0.200) | 2 | 4 |" in block
    assert "| tune | 5.0 (5.0) | failed | - | 1 | - |" in block and "tune at 50 columns: ValueError: too wide" in block
