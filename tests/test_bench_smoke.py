"""The runner-overhead benchmark works end to end on a tiny input (it checks the bench runs and
reports every method, never that the machine was fast; speed is read in docs/benchmarks.md)."""
import subprocess
import sys


def test_runner_overhead_bench_runs_every_method(repo):
    out = subprocess.run([sys.executable, "bench/runner_overhead.py", "--no-tf", "--no-doc", "--reps", "1",
                          "--n", "2"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    block = out.stdout[out.stdout.index("<!-- BEGIN GENERATED"):]
    for method in ("in-process", "kfx", "kfx-cached", "kfp.local"):
        assert f"\n| {method} | " in block
    assert "kfx / kfp.local:" in block and "<!-- END GENERATED -->" in block
