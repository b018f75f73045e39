"""The Docker executor against the process executors on the same IR (issue 14, target 3).

Two pipelines, each compiled once and run by kfx's Runner with three launchers,
interleaved per repetition (each run in its own forked worker):

* **subprocess**: `kfx run --executor subprocess`: a fresh interpreter per step,
  no preloading: the reference the target is set against (docker at most 1.3x);
* **process**: `kfx run`'s default: steps forked from a server that imported the
  TensorFlow stack once (nothing for the trivial steps, as `--preload ''`);
* **docker**: `kfx run --executor docker`: each step in its stage's image
  (kfx/kfx-<stage>:<tag>, built by `make images`), non-root, read-only root,
  limits from the IR.

Pipelines: **trivial** (an importer and N steps that read a small CSV, in the
local kfx/push-runtime image, which carries kfp): the per-step container overhead
is (docker - subprocess) / N; **lifecycle** (`--lifecycle`): the nine-stage taxi
lifecycle of bench/lifecycle.py (its fast parameters), per stage.

    .venv/bin/python bench/containers.py                      # trivial, R=3; rewrites its docs block
    .venv/bin/python bench/containers.py --lifecycle --lifecycle-reps 2   # plus the full lifecycle (~10 min a rep)
    .venv/bin/python bench/containers.py --smoke   # 2 trivial steps once per executor, the smoke lifecycle in docker
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

from kfp import compiler, dsl  # noqa: E402
from kfp.dsl import Dataset, Input, Metrics, Output  # noqa: E402

BEGIN, END = "<!-- containers:begin -->", "<!-- containers:end -->"
IMAGE = "kfx/push-runtime:0.1.0"
METHODS = ("subprocess", "process", "docker")


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def touch(data: Input[Dataset], out: Output[Dataset]):
    with open(data.path) as f:
        rows = f.read().splitlines()
    with open(out.path, "w") as f:
        f.write("\n".join(rows))
    out.metadata["rows"] = len(rows) - 1


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def touch_last(data: Input[Dataset], out: Output[Dataset], metrics: Output[Metrics]):
    with open(data.path) as f:
        rows = f.read().splitlines()
    with open(out.path, "w") as f:
        f.write("\n".join(rows))
    metrics.log_metric("rows", len(rows) - 1)


def run_ir(arg, tmp: Path) -> dict:
    method, ir_path, params, preload = arg
    from kfx.runner.execute import run_pipeline
    from kfx.runner.preload import TF_STACK
    tmp.chmod(0o755)   # the worker's mkdtemp is 0700: the containers' non-root user must traverse it
    root = tmp / "root"
    if "registry_uri" in params:
        params = {**params, "registry_uri": str(root / "registry")}
    started = time.perf_counter()
    # `kfx run --executor METHOD`; trivial steps import nothing heavy: no preload for them
    result = run_pipeline(Path(ir_path), params, root, executor=method, cache=False,
                          preload=",".join(TF_STACK) if preload else "")
    seconds = time.perf_counter() - started
    if result.state != "COMPLETE":
        raise RuntimeError(f"{method}: run failed: {result.error_line or result.error}")
    steps = {t: s.seconds for t, s in result.steps.items() if s.state != "IMPORTED"}
    return {"seconds": seconds, "steps": steps}


def render(results: dict, facts: dict, wall: float, png: str) -> str:
    out = [BEGIN, "## Containers: `--executor docker` vs the process executors (`bench/containers.py`)", "",
           "Issue 14 target 3: docker at most 1.3x `--executor subprocess` (no preloading) on the same IR.", "",
           f"Measured {facts['date']} on {facts['nproc']} CPUs, commit {facts['commit']} (working tree); "
                      f"the bench took {wall:.0f} s. Docker {facts['versions'].get('docker', '?')} SDK; images "
                      f"as built by `make images` (the stage images carry the code of their build). The lifecycle runs "
                      f"with the bench/lifecycle.py budget, `schema_uri=''` and `stop_on_anomalies=False` for every "
                      f"executor (the docker launcher does not mount a curated schema named by a parameter).", ""]
    for name, runs in results.items():
        first = next(iter(runs.values()))
        n = len(first[0]["steps"])
        reps = len(first)
        med = {m: statistics.median(r["seconds"] for r in runs[m]) for m in runs}
        # Against subprocess, the reference; a smoke run may leave it out (then no ratios, "-").
        ref = runs.get("subprocess")
        ratio = {m: f"**{statistics.median(a['seconds'] / b['seconds'] for a, b in zip(runs[m], ref)):.2f}x**"
                 if ref else "-" for m in runs}
        out += [f"### {name}: {n} steps, {reps} interleaved repetition(s)", "",
                "| executor | median s | x subprocess (paired median; docker target <= 1.3) | per-step overhead "
                "vs subprocess s |", "| --- | ---: | ---: | ---: |"]
        for m in runs:
            over = f"{(med[m] - med['subprocess']) / n:+.2f}" if ref else "-"
            out.append(f"| {m} | {med[m]:.1f} | {ratio[m]} | {over} |")
        if name == "lifecycle":
            both = ref and "docker" in runs
            out += ["", "| step | " + " | ".join(f"{m} s" for m in runs) + " | docker - subprocess s |",
                    "| --- | " + " | ".join("---:" for _ in runs) + " | ---: |"]
            for step in first[0]["steps"]:
                cells = [statistics.median(r["steps"][step] for r in runs[m]) for m in runs]
                d = "-"
                if both:
                    d = f"{cells[list(runs).index('docker')] - statistics.median(r['steps'][step] for r in ref):+.1f}"
                out.append(f"| {step} | " + " | ".join(f"{c:.1f}" for c in cells) + f" | {d} |")
        out.append("")
    if "lifecycle" in results and {"docker", "subprocess"} <= set(results["lifecycle"]):
        runs = results["lifecycle"]
        ratio = statistics.median(a["seconds"] / b["seconds"] for a, b in zip(runs["docker"], runs["subprocess"]))
        trivial = results.get("trivial", {})
        per_step = ""
        if {"docker", "subprocess"} <= set(trivial):
            n = len(trivial["docker"][0]["steps"])
            over = (statistics.median(r["seconds"] for r in trivial["docker"]) -
                    statistics.median(r["seconds"] for r in trivial["subprocess"])) / n
            per_step = f" A container costs {over:+.2f} s per step over a fresh interpreter (trivial steps)."
        out += [f"**Target 3: docker / subprocess over the whole lifecycle {ratio:.2f}x (target <= 1.3: "
                f"{'met' if ratio <= 1.3 else 'not met'}).**{per_step} Every step completed in its container, "
                f"deploy included, with a filesystem registry on the host.", ""]
    out += [f"![seconds per executor]({png})", "", END]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--lifecycle", action="store_true", help="also run the full taxi lifecycle per executor")
    ap.add_argument("--lifecycle-reps", type=int, default=1, help="interleaved repetitions of the lifecycle")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--lifecycle-methods", default="", help="executors for the lifecycle (default: --methods)")
    ap.add_argument("--smoke", action="store_true",
                    help="--n 2 --reps 1 --no-doc, and the lifecycle at bench/lifecycle.py's smoke budget in "
                         "docker only (its process executor is lifecycle.py's kfx method; subprocess runs above)")
    ap.add_argument("--scratch", default="/tmp/kfx-bench-containers")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--from-json", default="", help="render (and write) the block of a saved results.json; "
                    "run nothing")
    args = ap.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        return _publish(saved["results"], saved["facts"], saved["wall"], args)
    methods = args.methods.split(",")
    if args.smoke:
        args.n, args.reps, args.no_doc = 2, 1, True
        args.lifecycle_methods = args.lifecycle_methods or "docker"
        args.lifecycle = args.lifecycle_methods != "docker" or "docker" in methods
        if not args.lifecycle:
            print("containers: the lifecycle in docker skipped (docker is not among --methods)", flush=True)
    lifecycle_methods = args.lifecycle_methods.split(",") if args.lifecycle_methods else methods
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    facts = harness.machine_facts(("docker",))
    t0 = time.time()
    csv = scratch / "data.csv"
    csv.write_text("a,b\n" + "\n".join(f"{i},{i * i}" for i in range(200)) + "\n")
    csv.chmod(0o644)
    trivial_ir = scratch / "trivial.yaml"
    compiler.Compiler().compile(harness.chain_pipeline("bench-containers", args.n, touch, touch_last),
                                str(trivial_ir))
    pipelines = {"trivial": (trivial_ir, {"data_uri": str(csv)})}
    if args.lifecycle:
        import lifecycle
        (scratch / "lifecycle").mkdir(exist_ok=True)     # its IR and (smoke) data apart from the trivial ones
        setup = lifecycle.Setup(scratch / "lifecycle", smoke=args.smoke)
        # schema_uri "" (schema inferred): the docker launcher mounts artifacts, not files named by
        # parameters, so the curated schema (a host path) is not visible in its containers; the same
        # parameters for every executor keep the comparison fair.
        pipelines["lifecycle"] = (setup.ir_path, {**setup.given, "registry_uri": "", "schema_uri": "",
                                                  "stop_on_anomalies": False})
    results = {}
    for name, (ir_path, params) in pipelines.items():
        runs = {m: [] for m in (methods if name == "trivial" else lifecycle_methods)}
        for rep in range(args.reps if name == "trivial" else args.lifecycle_reps):
            for m in runs:
                r = harness.in_worker(run_ir, (m, str(ir_path), params, name == "lifecycle"), scratch)
                runs[m].append(r)
                print(f"{name:9} {m:10} rep {rep}: {r['seconds']:.1f} s", flush=True)
        results[name] = runs
    wall = time.time() - t0
    (scratch / "results.json").write_text(json.dumps({"results": results, "facts": facts, "wall": wall}, indent=1))
    return _publish(results, facts, wall, args)


def _publish(results: dict, facts: dict, wall: float, args) -> int:
    block = render(results, facts, wall, "img/containers.png")
    print(block)
    if not args.no_doc:
        import plots
        plots.bars({name: {m: statistics.median(r["seconds"] for r in runs[m]) for m in runs}
                    for name, runs in results.items()}, harness.DOC.parent / "img" / "containers.png",
                   "Wall seconds per executor (same IR)", "seconds")
        harness.write_block(BEGIN, END, block, lambda text: text.rstrip("\n") + "\n\n" + block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
