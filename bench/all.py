"""Every benchmark, one after another, each rewriting its own block of docs/benchmarks.md,
then the summary plots (`make bench`); with --smoke, every method of every benchmark on tiny
inputs, writing nothing (`make bench-smoke`, tests/test_bench_smoke.py).

The scripts run as separate processes, in this order (a failing one is reported and the
rest still run; the exit code says whether all passed):

    runner_overhead.py   per-step overhead: in-process / kfx / kfx-subprocess / kfx-cached / kfp.local
    lifecycle.py         the whole lifecycle: kfx vs in-process
    families.py          the taxi lifecycle: model_family=network vs auto (trees beside the network)
    data_scale.py        ingest/validate/transform/evaluate cost and memory against rows
    columns.py           each stage's cost against the number of columns
    input_pipeline.py    training input: make_dataset vs tensors in memory
    containers.py        --executor docker vs process/subprocess on the same IR (needs Docker and images)
    quantize.py          the quantized variants: size, latency, AUC
    serving.py           (with --serving-model REGISTRY/MODEL/vN; in --smoke the smoke lifecycle's model)
    gates.py             the statistical gates' false-alarm and detection rates (docs/reliability.md)
    tfx_compare.py       kfx against TFX 1.16 on the taxi data (TFX in its own venv: make bench-tfx-venv)
    trust_tables.py, wild.py, ui.py   --smoke only here (`make bench-wild`, `make bench-ui`; trust_tables alone)

Then the per-step time plot for kfx / kfp.local / in-process is drawn from the tables the
first two wrote (docs/img/steps_*.png) into the `<!-- plots:begin -->` block.

    .venv/bin/python bench/all.py            # about 45-60 minutes on 2 cores
    .venv/bin/python bench/all.py --smoke    # every method on tiny inputs, writes nothing; a method that
                                             # needs what is absent here is skipped with one line saying so
    .venv/bin/python bench/all.py --only data_scale,input_pipeline
"""
import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

BENCH = Path(__file__).resolve().parent
BEGIN, END = "<!-- plots:begin -->", "<!-- plots:end -->"
# Scripts in bench/ that are no benchmark (helpers, this file).
NOT_BENCHES = {"all", "harness", "plots", "generate"}


def plan(smoke: bool, serving_model: str, scratch: str, only: frozenset = frozenset()) -> list:
    """[(name, argv or a function giving it just before the bench runs; None: nothing to run)] in run order."""
    lifecycle_root = f"{scratch}/lifecycle-root"
    full = {
        "runner_overhead": [],
        "lifecycle": [],
        "families": [],
        "data_scale": ["--multi-max", "100000", "--scratch", f"{scratch}/data_scale"],
        "columns": ["--columns", "10,50,200", "--scratch", f"{scratch}/columns"],
        "input_pipeline": ["--scratch", f"{scratch}/input_pipeline"],
        "containers": ["--lifecycle", "--lifecycle-reps", "2"],
        "quantize": [],
        "serving": ["--model", serving_model] if serving_model else None,
        "gates": [],
        "tfx_compare": [],
        "trust_tables": None,
        "wild": None,
        "ui": None,
    }
    tiny = {
        "runner_overhead": ["--n", "2", "--reps", "1", "--tf-n", "1", "--tf-reps", "1", "--probe-reps", "1",
                            "--no-doc"],
        # its kfx workspace is kept: the smoke quantizes its models and serves the one it pushed
        "lifecycle": ["--smoke", "--keep-root", lifecycle_root],
        "families": ["--smoke", "--scratch", f"{scratch}/families"],
        "data_scale": ["--sizes", "300,600", "--modes", "single", "--stages", "ingest,validate", "--no-doc",
                       "--scratch", f"{scratch}/scale"],
        "columns": ["--smoke", "--no-doc", "--scratch", f"{scratch}/columns"],
        "input_pipeline": ["--rows", "1500", "--reps", "1", "--no-doc", "--scratch", f"{scratch}/input"],
        "containers": ["--smoke", "--scratch", f"{scratch}/containers"],
        "quantize": lambda: _smoke_quantize(lifecycle_root),
        "serving": lambda: _smoke_serving(serving_model, lifecycle_root),
        "gates": ["--smoke"],
        # TFX's own pipeline in its own venv is minutes, not a smoke; its parsing and rendering are
        # tested in tests/test_bench_tfx_smoke.py
        "tfx_compare": lambda: _skip("tfx_compare", "runs TFX's pipeline: make bench-tfx-venv bench-tfx"),
        "trust_tables": ["--smoke"],
        "wild": ["--smoke"],
        "ui": ["--sizes", "20,20:5:old", "--no-doc"],
    }
    out = []
    for name, argv in (tiny if smoke else full).items():
        if argv is None or (only and name not in only) or not (BENCH / f"{name}.py").exists():
            continue
        if name == "containers" and not docker_ready():
            if not smoke:
                print("containers: skipped (no Docker engine or no kfx images)", flush=True)
                continue
            print("containers: docker skipped (no Docker engine or no kfx images); subprocess and process run",
                  flush=True)
            argv = argv + ["--methods", "subprocess,process"]
        out.append((name, argv))
    return out


def _smoke_serving(serving_model: str, lifecycle_root: str):
    """serving.py's tiny argv on the given model, else on the one the smoke lifecycle pushed; None (said
    why) when it cannot run."""
    if not (harness.REPO / ".venv-serving" / "bin" / "python").exists():
        return _skip("serving", "no .venv-serving (make serving-venv)")
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        return _skip("serving", "no nginx (make serving-nginx)")
    models = [serving_model] if serving_model else _pushed(lifecycle_root)
    if not models:
        return _skip("serving", f"no model pushed in {lifecycle_root} (run the lifecycle smoke first)")
    return ["--model", models[0], "--seconds", "0.5", "--concurrency", "1"]


def _smoke_quantize(lifecycle_root: str) -> list:
    """quantize.py on the smoke lifecycle's run when it finished (its examples and models), else on
    stages of its own."""
    if _pushed(lifecycle_root):
        return ["--smoke", "--from-run", lifecycle_root]
    print(f"quantize: no finished lifecycle smoke in {lifecycle_root} to share: it runs the stages itself",
          flush=True)
    return ["--smoke"]


def _pushed(lifecycle_root: str) -> list:
    """The model directories of the registry of the kept lifecycle workspace that hold a version."""
    return sorted(str(p) for p in Path(lifecycle_root, "registry").glob("*") if any(p.glob("v*")))


def _skip(name: str, why: str) -> None:
    print(f"{name}: skipped ({why})", flush=True)
    return None


def docker_ready() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        out = subprocess.run(["docker", "images", "-q", "kfx/push-runtime"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


# ------------------------------------------------------------------ summary plots
def _table_after(text: str, marker: str, heading: str) -> list:
    """Rows (lists of cells) of the first markdown table after `heading` inside the block at `marker`."""
    if marker not in text:
        return []
    block = text.split(marker, 1)[1]
    if heading and heading in block:
        block = block.split(heading, 1)[1]
    rows, started = [], False
    for line in block.splitlines():
        if line.startswith("|"):
            started = True
            cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
            if not set("".join(cells)) <= set("-: "):
                rows.append(cells)
        elif started:
            break
    return rows


def _num(cell: str):
    m = re.match(r"^[+-]?[0-9.]+", cell.replace(",", ""))
    return float(m.group(0)) if m else None


def summary_plots(doc: Path) -> str:
    import plots
    text = doc.read_text() if doc.exists() else ""
    img = doc.parent / "img"
    lines, made = [BEGIN, "## Per-step time: kfx / kfp.local / in-process (plots by `bench/all.py`)", ""], []
    trivial = _table_after(text, "BEGIN GENERATED by bench/runner_overhead.py", "### Trivial steps")
    tf = _table_after(text, "BEGIN GENERATED by bench/runner_overhead.py", "### Steps that `import tensorflow`")
    groups = {}
    for title, rows in (("trivial step", trivial), ("TF step", tf)):
        values = {}
        for r in rows[1:]:
            over = _num(r[3]) if len(r) > 3 else None
            if r[0] in ("kfx", "kfx-subprocess", "kfp.local") and over is not None:
                values[r[0]] = over
        if values:
            groups[title] = values
    if groups:
        made.append(("per-step overhead over in-process: kfx / kfx-subprocess / kfp.local",
                     plots.bars(groups, img / "steps_overhead.png", "Per-step overhead over in-process (s)",
                                "seconds per step")))
    life = _table_after(text, "BEGIN GENERATED by bench/lifecycle.py", "")
    if life:
        head = life[0]
        try:
            i_in, i_kfx = head.index("in-process s"), head.index("kfx step s")
        except ValueError:
            i_in = i_kfx = None
        if i_in is not None:
            stages = {r[0]: {"in-process": _num(r[i_in]), "kfx": _num(r[i_kfx])} for r in life[1:]
                      if not r[0].startswith("sum") and _num(r[i_in]) is not None}
            made.append(("per-stage seconds of the lifecycle: kfx vs in-process",
                         plots.bars(stages, img / "steps_lifecycle.png", "Lifecycle: seconds per stage",
                                    "seconds")))
    for title, png in made:
        lines += [f"![{title}]({png.relative_to(doc.parent)})", ""]
    if not made:
        lines += ["(no runner_overhead or lifecycle tables found to plot)", ""]
    lines.append(END)
    block = "\n".join(lines) + "\n"
    harness.write_block(BEGIN, END, block,
                        lambda t: t.rstrip("\n") + "\n\n" + block)
    return block


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny inputs, no docs written")
    ap.add_argument("--only", default="", help="comma-separated bench names")
    ap.add_argument("--serving-model", default="", help="REGISTRY/MODEL/vN for bench/serving.py")
    ap.add_argument("--scratch", default="/tmp/kfx-bench-all")
    args = ap.parse_args(argv)
    only = set(filter(None, args.only.split(",")))
    failed = []
    for name, bench_args in plan(args.smoke, args.serving_model, args.scratch, frozenset(only)):
        if callable(bench_args):
            bench_args = bench_args()
            if bench_args is None:
                continue
        cmd = [sys.executable, str(BENCH / f"{name}.py"), *bench_args]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t = time.time()
        code = subprocess.run(cmd, cwd=harness.REPO).returncode
        print(f"== {name}: exit {code} after {time.time() - t:.0f} s", flush=True)
        if code:
            failed.append(name)
    if not args.smoke:
        print(summary_plots(harness.DOC))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
