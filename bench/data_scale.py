"""How the data stages' cost grows with rows: ingest (Beam), validate, transform, evaluate.

For each size (taxi data grown by bench/generate.py) the four stage executors are
called directly (no KFP), each in its own forked worker: wall seconds of the
executor call (imports done before the clock starts) and peak RSS of the worker
and every process under it (sampled from /proc every 0.1 s: what a pod's memory
limit sees, Beam's multi-process workers included). Beam runs single-process
(`--direct_running_mode=in_memory`) and multi-process
(`--direct_running_mode=multi_processing --direct_num_workers=2`); evaluate
takes no beam_pipeline_args (TFMA runs its own DirectRunner), so it is measured
once per size.

Marginal per-row cost between two sizes a < b: (t_b - t_a) / (b - a): the fixed
start-up cancels. Target (issue 14): marginal 100k->1M at most 1.2x marginal
10k->100k; peak memory at 1M at most 2x the peak at 100k.

    .venv/bin/python bench/data_scale.py                       # 10k,100k,1M; rewrites its docs block
    .venv/bin/python bench/data_scale.py --sizes 2000,6000 --no-doc --json out.json   # smoke
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (puts the repo on sys.path, sets TF env)
import generate  # noqa: E402

BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"
TAXI = dict(label="tips > 0.2 * fare", problem_type="binary", drop_columns=["tips", "trip_start_timestamp"],
            categorical_features=["trip_start_hour", "trip_start_day", "trip_start_month", "pickup_community_area",
                                  "dropoff_community_area", "pickup_census_tract", "dropoff_census_tract"],
            bucketize_features=["pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude"],
            slice_features=["trip_start_hour", "payment_type"], crossed_slices=["trip_start_day,payment_type"])
MODES = {
    "single": ["--runner=DirectRunner", "--direct_running_mode=in_memory"],
    "multi": ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
}
STAGES = ("ingest", "validate", "transform", "evaluate")


# ------------------------------------------------------------------ memory
class PeakTree:
    """Peak summed RSS of this process and its descendants while the block runs."""

    def __enter__(self):
        self.peak, self.stop = harness.tree_rss_kb(os.getpid()), threading.Event()
        self.start_kb = self.peak
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while not self.stop.wait(0.1):
            self.peak = max(self.peak, harness.tree_rss_kb(os.getpid()))

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, harness.tree_rss_kb(os.getpid()))
        return False


def _tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its reaped children (Beam's worker processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


# ------------------------------------------------------------------ stage calls (in a forked worker)
def _paths(root: Path) -> dict:
    return {k: str(root / k) for k in ("examples", "statistics", "schema", "anomalies", "graph", "transformed",
                                       "evaluation")}


def _import(stage: str):
    from kfx_components.ingest import executor as ingest  # noqa: F401
    if stage == "ingest":
        import apache_beam  # noqa: F401
        import tensorflow  # noqa: F401
        from kfx_components.ingest import beam_path  # noqa: F401
        return ingest
    import importlib
    return importlib.import_module(f"kfx_components.{stage}.executor")


def stage_call(arg, tmp: Path) -> dict:
    stage, data, root, mode, model_dir, engine = arg
    p = _paths(Path(root))
    module = _import(stage)
    args = MODES[mode]
    cpu_start = _tree_cpu_seconds()
    with PeakTree() as mem:
        start = time.perf_counter()
        if stage == "ingest":
            shutil.rmtree(p["examples"], ignore_errors=True)
            facts = module.run(data_path=data, examples_dir=p["examples"], label=TAXI["label"],
                               problem_type=TAXI["problem_type"], drop_columns=TAXI["drop_columns"],
                               engine=engine, beam_pipeline_args=args)
            json.dump(facts, open(Path(root) / "ingest.json", "w"))
        elif stage == "validate":
            for k in ("statistics", "schema", "anomalies"):
                shutil.rmtree(p[k], ignore_errors=True)
            facts = module.run(examples_dir=p["examples"], statistics_dir=p["statistics"], schema_dir=p["schema"],
                               anomalies_dir=p["anomalies"], report_path=str(Path(root) / "validate.html"),
                               label_key="label", beam_pipeline_args=args, stop_on_anomalies=False,
                               curated_schema_path=str(harness.REPO / "pipelines/schemas/chicago_taxi.pbtxt"))
        elif stage == "transform":
            for k in ("graph", "transformed"):
                shutil.rmtree(p[k], ignore_errors=True)
            facts = module.run(examples_dir=p["examples"], schema_dir=p["schema"], transform_graph_dir=p["graph"],
                               transformed_examples_dir=p["transformed"], label_key="label",
                               categorical_features=TAXI["categorical_features"],
                               bucketize_features=TAXI["bucketize_features"], beam_pipeline_args=args)
        else:
            shutil.rmtree(p["evaluation"], ignore_errors=True)
            facts = module.run(model_dir=model_dir, examples_dir=p["examples"], evaluation_dir=p["evaluation"],
                               report_path=str(Path(root) / "evaluate.html"), label_key="label",
                               problem_type="binary", num_classes=2, slice_features=TAXI["slice_features"],
                               crossed_slices=TAXI["crossed_slices"], explain_rows=0)
        seconds = time.perf_counter() - start
    cpu = _tree_cpu_seconds() - cpu_start
    rows = json.load(open(Path(root) / "ingest.json"))
    n = rows["rows_test"] if stage == "evaluate" else rows["rows"]
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_kb": mem.peak, "start_kb": mem.start_kb, "stage_rows": n,
            "facts_keys": sorted(facts)[:3]}


def train_model(arg, tmp: Path) -> dict:
    """A small model for evaluate: tune 1 trial x 1 epoch, train 1 epoch, on the smallest size."""
    root = Path(arg)
    p = _paths(root)
    from kfx_components.distributed_train import executor as train
    from kfx_components.tune import executor as tune
    m = json.load(open(root / "ingest.json"))
    common = dict(transformed_examples_dir=p["transformed"], transform_graph_dir=p["graph"], label_key="label",
                  problem_type="binary", num_classes=m["num_classes"])
    hp, model = str(root / "hyperparameters"), str(root / "model")
    tune.run(hyperparameters_dir=hp, max_trials=1, epochs=1, **common)
    train.run(hyperparameters_dir=hp, model_dir=model, checkpoint_dir=str(root / "ckpt"), epochs=1, **common)
    return {"model": model}


# ------------------------------------------------------------------ analysis
def marginal(points: dict, a: int, b: int):
    if a in points and b in points:
        return (points[b] - points[a]) / (b - a)
    return None


def analyse(results: list, sizes: list) -> dict:
    """{(stage, mode): {"seconds"/"cpu"/"peak"/"rows": {size: x}, "marg"/"cpu_marg": [(a, b, m)],
    "ratio": r, "basis": "CPU"|"wall", "mem_ratio": m}}. The marginal ratio is taken on CPU seconds
    where every size has them (other engineers' load on this shared machine moves wall time, not the
    worker's own CPU time), else on wall seconds."""
    cells: dict = {}
    for r in results:   # a cell measured more than once (repetitions) counts as its median
        cell = cells.setdefault((r["stage"], r["mode"], r["size"]), {"seconds": [], "cpu": [], "peak": []})
        cell["seconds"].append(r["seconds"])
        if r.get("cpu_seconds") is not None:
            cell["cpu"].append(r["cpu_seconds"])
        cell["peak"].append(r["peak_kb"])
        cell["rows"] = r["stage_rows"]
    out = {}
    for (stage, mode, size), cell in cells.items():
        d = out.setdefault((stage, mode), {"seconds": {}, "cpu": {}, "peak": {}, "rows": {}, "reps": {}})
        d["seconds"][size] = statistics.median(cell["seconds"])
        if cell["cpu"]:
            d["cpu"][size] = statistics.median(cell["cpu"])
        d["peak"][size] = statistics.median(cell["peak"])
        d["rows"][size] = cell["rows"]
        d["reps"][size] = len(cell["seconds"])
    for d in out.values():
        have = [s for s in sizes if s in d["seconds"]]
        d["marg"] = [(a, b, marginal(d["seconds"], a, b)) for a, b in zip(have, have[1:])]
        d["cpu_marg"] = [(a, b, marginal(d["cpu"], a, b)) for a, b in zip(have, have[1:])]
        d["basis"] = "CPU" if all(s in d["cpu"] for s in have) else "wall"
        ms = [m for _, _, m in (d["cpu_marg"] if d["basis"] == "CPU" else d["marg"])]
        d["ratio"] = ms[-1] / ms[-2] if len(ms) >= 2 and ms[-2] and ms[-2] > 0 else None
        d["mem_ratio"] = d["peak"][have[-1]] / d["peak"][have[-2]] if len(have) >= 2 else None
    return out


def _n(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows >= 1_000_000 and rows % 1_000_000 == 0 else \
        f"{rows // 1000}k" if rows >= 1000 and rows % 1000 == 0 else str(rows)


def render(analysis: dict, sizes: list, facts: dict, wall: float, notes: list, plots: list) -> str:
    lines = [BEGIN, "## Data scale: cost and memory against rows (`bench/data_scale.py`)", "",
             "Issue 14 target 4; docs/scale.md explains the Beam ingest engine and extrapolates these "
             "figures to 100M rows.", "",
             f"Measured {facts['date']} on {facts['nproc']} CPUs, {facts['mem']}, Python {facts['python']}, "
             f"commit {facts['commit']} (working tree as it was); sizes {', '.join(_n(s) for s in sizes)} rows of "
             f"generated taxi data (bench/generate.py, seed 0); the bench took {wall:.0f} s. Each cell is one "
             f"executor call in its own forked worker; rows are the table's rows (evaluate: its test split's rows).",
             ""]
    pairs = list(zip(sizes, sizes[1:]))
    head = "| stage | runner | " + " | ".join(f"{_n(s)} s (CPU s)" for s in sizes) + " | " + \
        " | ".join(f"marginal {_n(a)}->{_n(b)} µs/row wall (CPU)" for a, b in pairs) + \
        " | marginal ratio (target <= 1.2) | " + " | ".join(f"peak {_n(s)} MiB" for s in sizes) + \
        " | peak ratio last/prev (target <= 2) |"
    lines += [head, "| " + " | ".join(["---", "---"] + ["---:"] * (2 * len(sizes) + len(pairs) + 2)) + " |"]
    for (stage, mode), d in sorted(analysis.items(), key=lambda kv: (STAGES.index(kv[0][0]), kv[0][1])):
        secs = [(f"{d['seconds'][s]:.1f}" + (f" ({d['cpu'][s]:.1f})" if s in d["cpu"] else ""))
                if s in d["seconds"] else "-" for s in sizes]
        margs = {(a, b): m for a, b, m in d["marg"]}
        cpu_margs = {(a, b): m for a, b, m in d["cpu_marg"]}
        mcells = [(f"{margs[(a, b)] * 1e6:.0f}" if margs.get((a, b)) is not None else "-") +
                  (f" ({cpu_margs[(a, b)] * 1e6:.0f})" if cpu_margs.get((a, b)) is not None else "")
                  for a, b in pairs]
        ratio = f"**{d['ratio']:.2f}x** ({d['basis']})" if d["ratio"] is not None else "-"
        peaks = [harness.mib(d["peak"][s]) if s in d["peak"] else "-" for s in sizes]
        mem = f"**{d['mem_ratio']:.2f}x**" if d["mem_ratio"] is not None else "-"
        lines.append(f"| {stage} | {mode} | " + " | ".join(secs + mcells + [ratio] + peaks + [mem]) + " |")
    lines.append("")
    multi = []
    for stage in STAGES:
        s, m = analysis.get((stage, "single")), analysis.get((stage, "multi"))
        if s and m:
            big = max(set(s["seconds"]) & set(m["seconds"]))
            multi.append(f"{stage} {m['seconds'][big] / s['seconds'][big]:.2f}x at {_n(big)} rows "
                         f"(peak RSS {m['peak'][big] / s['peak'][big]:.2f}x)")
    if multi:
        lines += ["Multi-process DirectRunner (2 workers) / single-process, wall: " + ", ".join(multi) + ".", ""]
    lines += ["Marginal µs/row is per row of the table (evaluate reads its test split, 20% of it): the "
              "difference of two sizes, so a stage's fixed start-up cancels. CPU is user + system seconds of "
              "the worker and its reaped children (Beam's worker processes): other engineers' load on this "
              "shared machine stretches wall time, not the worker's CPU time, so the ratio is taken on CPU "
              "where a row has it. A ratio is '-' where the smaller marginal is not positive (inside the "
              "noise of the fixed start-up).", ""]
    repeated = [f"{stage} ({mode}) at {', '.join(f'{_n(s)} x{k}' for s, k in d['reps'].items() if k > 1)}"
                for (stage, mode), d in analysis.items() if any(k > 1 for k in d["reps"].values())]
    if repeated:
        lines += ["Cells measured more than once show the median: " + "; ".join(repeated) + ".", ""]
    lines += notes + [""] if notes else []
    for title, png in plots:
        lines += [f"![{title}]({png})", ""]
    lines.append(END)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--modes", default="single,multi")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--multi-max", type=int, default=10**12, help="largest size run with the multi-process runner")
    ap.add_argument("--evaluate-max", type=int, default=10**12, help="largest size evaluate runs on")
    ap.add_argument("--engine", default="beam", help="ingest engine (beam, pandas, auto)")
    ap.add_argument("--scratch", default="/tmp/kfx-bench-scale")
    ap.add_argument("--json", default="", help="also write the raw results here")
    ap.add_argument("--reuse", default="", help="a --json of an earlier run: its results for the stages not "
                    "run now are kept (e.g. to re-measure ingest alone)")
    ap.add_argument("--from-json", default="", help="render (and write) the block of a saved --json run; "
                    "measure nothing")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--plots-dir", default=str(harness.REPO / "docs" / "img"))
    args = ap.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    modes = args.modes.split(",")
    stages = args.stages.split(",")
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    facts = harness.machine_facts(("apache-beam", "tensorflow"))
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        sizes, results, facts = saved["sizes"], saved["results"], saved["facts"]
        notes = list(saved.get("notes", []))
        if len({r["size"] for r in results if r["mode"] == "multi"} or sizes) < len(sizes):
            top = max(r["size"] for r in results if r["mode"] == "multi")
            notes.append(f"The multi-process runner ran up to {_n(top)} rows only (time on this machine).")
        return _publish(results, sizes, facts, saved.get("wall", 0.0), notes, args)
    t0 = time.time()
    data = {s: generate.ensure(s, str(scratch / "data")) for s in sizes}
    results, notes = [], []
    model_dir = ""
    for size in sizes:
        for mode in modes:
            if mode == "multi" and size > args.multi_max:
                continue
            root = scratch / f"{size}-{mode}"
            root.mkdir(exist_ok=True)
            for stage in stages:
                if stage == "evaluate":
                    if mode != modes[0] or size > args.evaluate_max:
                        continue
                    if not model_dir:
                        model_dir = harness.in_worker(train_model, str(root), scratch)["model"]
                r = harness.in_worker(stage_call, (stage, data[size], str(root), mode, model_dir, args.engine),
                                      scratch)
                r.update(stage=stage, mode=mode if stage != "evaluate" else "tfma", size=size)
                results.append(r)
                print(f"{_n(size):>5} {mode:6} {stage:9} {r['seconds']:8.1f} s  peak {harness.mib(r['peak_kb'])} MiB",
                      flush=True)
    wall = time.time() - t0
    if args.reuse:
        earlier = json.loads(Path(args.reuse).read_text())
        kept = [r for r in earlier["results"] if r["stage"] not in stages and r["size"] in sizes]
        results = kept + results
        notes.append(f"Stages {', '.join(sorted({r['stage'] for r in kept}))} are from the run of "
                     f"{earlier['facts']['date']} (same sizes and data); {', '.join(stages)} re-measured "
                     f"{facts['date']}.")
    if args.evaluate_max < max(sizes):
        notes.append(f"evaluate (TFMA) ran up to {_n(args.evaluate_max)} rows only (time on this machine).")
    if args.json:
        Path(args.json).write_text(json.dumps({"sizes": sizes, "results": results, "facts": facts, "wall": wall,
                                               "notes": notes}, indent=1))
    if args.multi_max < max(sizes):
        notes.append(f"The multi-process runner ran up to {_n(args.multi_max)} rows only (time on this machine).")
    return _publish(results, sizes, facts, wall, notes, args)


def _publish(results, sizes, facts, wall, notes, args) -> int:
    analysis = analyse(results, sizes)
    print(render(analysis, sizes, facts, wall, notes, []))
    if not args.no_doc:
        import plots
        pngs = plots.scale_plots(analysis, sizes, Path(args.plots_dir))
        block = render(analysis, sizes, facts, wall, notes,
                       [(t, os.path.relpath(p, harness.DOC.parent)) for t, p in pngs])
        harness.write_block(BEGIN, END, block, lambda text: text.rstrip("\n") + "\n\n" + block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
