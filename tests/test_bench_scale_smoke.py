"""The scale benchmarks (issue 14) work end to end on tiny inputs: they run, report every
stage/method and draw their plots. Never a speed: the figures are in docs/benchmarks.md.
(containers.py, with the other benches, is in tests/test_bench_smoke.py.)"""
import json
import subprocess
import sys


def _run(repo, *args, timeout=600):
    out = subprocess.run([sys.executable, *args], cwd=repo, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def test_generator_is_deterministic(repo, tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.parquet"
    _run(repo, "bench/generate.py", "--rows", "250", "--out", str(a))
    _run(repo, "bench/generate.py", "--rows", "250", "--out", str(b))
    again = tmp_path / "again.csv"
    _run(repo, "bench/generate.py", "--rows", "250", "--out", str(again))
    assert a.read_bytes() == again.read_bytes()
    import pandas as pd
    assert len(pd.read_csv(a)) == len(pd.read_parquet(b)) == 250


def test_data_scale_bench_reports_each_stage(repo, tmp_path):
    raw = tmp_path / "scale.json"
    stdout = _run(repo, "bench/data_scale.py", "--sizes", "300,600", "--modes", "single", "--stages",
                  "ingest,validate", "--no-doc", "--scratch", str(tmp_path / "s"), "--json", str(raw))
    block = stdout[stdout.index("<!-- scale:begin -->"):]
    assert "| ingest | single |" in block and "| validate | single |" in block and "<!-- scale:end -->" in block
    results = json.loads(raw.read_text())["results"]
    assert {(r["stage"], r["size"]) for r in results} == {(s, n) for s in ("ingest", "validate") for n in (300, 600)}
    assert all(r["peak_kb"] > 0 and r["seconds"] > 0 and r["cpu_seconds"] > 0 for r in results)


def test_input_pipeline_bench_reports_every_input(repo, tmp_path):
    stdout = _run(repo, "bench/input_pipeline.py", "--rows", "1500", "--reps", "1", "--no-doc", "--scratch",
                  str(tmp_path / "s"))
    import re
    rates = {m[1].strip(): float(m[2].replace(",", "")) for m in re.finditer(r"^(.+?)\s+fit\s+([\d,]+) ex/s", stdout, re.M)}
    assert set(rates) == {"in-memory", "make_dataset", "make_dataset, streamed"}, stdout
    assert all(rate > 0 for rate in rates.values()), rates


def test_plots_draw_pngs(repo, tmp_path):
    sys.path.insert(0, str(repo / "bench"))
    import plots
    a = plots.lines({"x": [(1e4, 2.0), (1e5, 9.0), (1e6, 80.0)]}, tmp_path / "a.png", "t", "rows", "s")
    b = plots.bars({"g": {"kfx": 0.04, "kfp.local": 0.07}}, tmp_path / "b.png", "t", "s")
    for p in (a, b):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_make_bench_target_exists(repo):
    text = (repo / "bench" / "bench.mk").read_text()
    assert "\nbench:" in text and "bench/all.py" in text
