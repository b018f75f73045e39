"""bench/tfx_compare.py without TFX: its reading of `kfx run`'s progress lines, its stage table
and ratios on recorded figures, and its process-tree memory sampler on real processes."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import tfx_compare  # noqa: E402

# As `kfx run` prints them (from a taxi run on this machine).
KFX_LOG = """\
[    0.7s] (1/15) resolve            COMPLETE     0.5s
[    0.8s] (2/15) importer           IMPORTED     0.1s
[   30.8s] running: ingest (30s)
[   36.7s] (3/15) ingest             COMPLETE    35.9s
[   50.0s] (4/15) validate           COMPLETE    13.3s
[   50.4s] (5/15) check-drift        COMPLETE     0.4s
[   72.0s] (6/15) transform          COMPLETE    21.6s
[   99.0s] (7/15) tune               COMPLETE    27.0s
[  120.0s] (8/15) distributed-train  COMPLETE    21.0s
[  130.0s] (9/15) distill            COMPLETE    10.0s
[  160.0s] (10/15) quantize          COMPLETE    30.0s
[  200.0s] (11/15) evaluate          COMPLETE    40.0s
[  210.0s] (12/15) infra-validate    FAILED      10.0s
[  210.2s] (13/15) notify            COMPLETE     0.2s
"""
TFX_STEPS = {"CsvExampleGen": 20.0, "latest_blessed_model_resolver": 0.5, "StatisticsGen": 15.0,
             "SchemaGen": 2.0, "ExampleValidator": 3.0, "Transform": 70.0, "Trainer": 40.0,
             "Evaluator": 60.0, "Pusher": 1.0}


def test_kfx_progress_lines_give_each_finished_steps_seconds():
    steps = tfx_compare.kfx_steps(KFX_LOG)
    assert steps["ingest"] == 35.9 and steps["evaluate"] == 40.0 and steps["notify"] == 0.2
    assert "infra-validate" not in steps       # failed: no time to compare
    assert "importer" not in steps             # imports an artifact, runs nothing


def test_stages_sum_the_steps_that_do_the_same_work():
    kfx = tfx_compare.by_stage(tfx_compare.kfx_steps(KFX_LOG), "kfx")
    assert kfx["training"] == 58.0                               # tune + distributed-train + distill
    assert kfx["statistics, schema, validation"] == 13.7         # validate + check-drift
    assert kfx[tfx_compare.OTHER] == 0.2                         # notify
    tfx = tfx_compare.by_stage(TFX_STEPS, "TFX")
    assert tfx["statistics, schema, validation"] == 20.0
    assert "quantize" not in tfx and tfx_compare.OTHER not in tfx


def _results(kfx_walls, tfx_walls):
    kfx_steps = tfx_compare.kfx_steps(KFX_LOG)
    return {"reps": len(kfx_walls), "data": "/x/data.csv",
            "facts": {"date": "2026-12-07 13:00 UTC", "commit": "abc", "nproc": 2, "usable_cpus": 2,
                      "mem": "23.5 GiB", "python": "3.11.7", "kfp": "2.13.0", "versions": {}},
            "runs": {"kfx": [{"wall_s": w, "peak_mib": 1700, "exit": 0, "steps": kfx_steps} for w in kfx_walls],
                     "TFX": [{"wall_s": w, "peak_mib": 3000, "exit": 0, "steps": TFX_STEPS} for w in tfx_walls]}}


def test_rendered_block_gives_median_ratios_per_stage_and_in_total():
    block = tfx_compare.render(_results([170.0, 180.0], [250.0, 260.0]))
    assert block.startswith(tfx_compare.BEGIN) and block.rstrip().endswith(tfx_compare.END)
    assert "| wall time, s | 255.0 (250-260) | 175.0 (170-180) | **0.69x** |" in block
    assert "| peak RSS of the process tree, MiB | 3000 (3000) | 1700 (1700) | 0.57x |" in block
    assert "| evaluate | Evaluator | 60.0 | evaluate | 40.0 | 0.67x |" in block
    assert "| transform | Transform | 70.0 | transform | 21.6 | 0.31x |" in block
    assert "| quantize | (none) | - | quantize | 30.0 | - |" in block   # kfx only: no ratio
    assert "| sum of steps | | 211.5 |" in block
    # The stages both have: all but quantize, infra validation and kfx's importer and notify.
    assert "The stages both systems have: TFX 211.5 s, kfx 169.7 s (0.80x)" in block


def test_reruns_are_rows_and_the_last_is_the_unchanged_rerun():
    results = _results([170.0, 180.0], [250.0, 260.0])
    for system, walls in (("kfx", [(90.0, 2.5), (95.0, 2.9)]), ("TFX", [(40.0, 27.0), (42.0, 28.0)])):
        for run, (second, third) in zip(results["runs"][system], walls):
            run["reruns"] = [{"wall_s": second, "exit": 0}, {"wall_s": third, "exit": 0}]
    results["runs"]["kfx"][1]["reruns"][1]["exit"] = 1          # a failed rerun is left out
    block = tfx_compare.render(results)
    assert "| run 2 (second run, same data), wall s | 41.0 (40.0-42.0) | 92.5 (90.0-95.0) | 2.26x |" in block
    assert "| run 3 (unchanged rerun), wall s | 27.5 (27.0-28.0) | 2.5 (2.5) | 0.09x |" in block
    assert "run 2" not in tfx_compare.render(_results([170.0], [250.0]))   # no reruns recorded


def test_plot_draws_the_stages_both_systems_have(tmp_path):
    path = tfx_compare.plot(_results([170.0], [250.0]), tmp_path / "p.png")
    from PIL import Image
    with Image.open(path) as img:
        assert img.size == (760, 440)
        assert len(img.getcolors(maxcolors=100000)) > 10   # bars and labels, not a blank page


def test_sampler_counts_grandchildren():
    """A child that starts a grandchild holding 200 MiB: the tree's peak includes it."""
    code = textwrap.dedent("""
        import subprocess, sys
        grandchild = "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
        subprocess.run([sys.executable, "-c", grandchild])
    """)
    proc = subprocess.Popen([sys.executable, "-c", code])
    with tfx_compare.PeakSampler(proc.pid, interval=0.05) as sampler:
        proc.wait(timeout=30)
    assert sampler.peak >= 200 * 2**20
    assert tfx_compare.harness.tree_rss_kb(proc.pid) == 0       # gone: nothing left to count


@pytest.mark.parametrize("missing", ["--tfx-python", "--from-json"])
def test_command_line_names_what_is_missing(tmp_path, missing, repo):
    argv = [sys.executable, "bench/tfx_compare.py", "--no-doc", missing, str(tmp_path / "absent")]
    out = subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "absent" in out.stderr
