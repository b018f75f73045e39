"""How each stage's cost grows with columns: ingest, validate, transform, tune, train, evaluate, quantize.

Issue 26 item 1. Generated tables (half numeric, half text; `wide_table` below, seed 0) of
10, 50, 200, 1,000 feature columns at a fixed number of rows. For each table the stage
executors are called directly (no KFP), one after another, each in its own forked worker
like bench/data_scale.py: wall seconds of the executor call, CPU seconds of the worker and
its reaped children, and peak RSS of the process tree. Models are small on purpose (tune
1 trial x 1 epoch, train 1 epoch, quantize 1 fine-tuning epoch): the cost measured is what
grows with columns, not training. Marginal cost per column between two counts a < b:
(t_b - t_a) / (b - a), so the fixed start-up cancels.

A stage that fails is reported (one line) with its column count, and the stages that
need its output are skipped for that table.

    .venv/bin/python bench/columns.py                        # 10,50,200,1000 columns x 2,000 rows; rewrites its block
    .venv/bin/python bench/columns.py --columns 10,50,200 --no-doc
    .venv/bin/python bench/columns.py --smoke                # 6 columns x 300 rows, three stages, no doc
"""
import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (puts the repo on sys.path, sets TF env)
from data_scale import PeakTree, _tree_cpu_seconds  # noqa: E402

BEGIN, END = "<!-- columns:begin -->", "<!-- columns:end -->"
STAGES = ("ingest", "validate", "transform", "tune", "train", "evaluate", "quantize")
NEEDS = {"validate": "ingest", "transform": "validate", "tune": "transform", "train": "tune", "evaluate": "train",
         "quantize": "train"}
BEAM = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
LABEL = "target"


# ------------------------------------------------------------------ data
def wide_table(rows: int, columns: int, out: str, seed: int = 0) -> str:
    """A CSV of `columns` features, half numeric (num_i, 5% missing) and half text (txt_i: 3 to 60
    categories, 5% missing), and a binary `target` that depends on a few of each; deterministic."""
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(seed)
    data = {}
    numeric = columns // 2
    for i in range(numeric):
        v = rng.normal(i % 7, 1 + i % 5, rows).round(4)
        v[rng.random(rows) < 0.05] = np.nan
        data[f"num_{i}"] = v
    signal = np.zeros(rows)
    for i in range(columns - numeric):
        k = 3 + (i * 7) % 58
        codes = rng.integers(0, k, rows)
        v = np.array([f"t{i}_{j}" for j in range(k)], dtype=object)[codes]
        v[rng.random(rows) < 0.05] = None
        data[f"txt_{i}"] = v
        if i < 3:
            signal += (codes % 2) - 0.5
    for i in range(min(numeric, 3)):
        signal += np.nan_to_num(data[f"num_{i}"] - i % 7) / (1 + i % 5)
    data[LABEL] = (signal + rng.normal(0, 1, rows) > 0).astype(int)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    pd.DataFrame(data).to_csv(out + ".partial", index=False)
    os.replace(out + ".partial", out)
    return out


def ensure(rows: int, columns: int, directory: Path) -> str:
    out = directory / f"wide_{rows}x{columns}_s0.csv"
    return str(out) if out.exists() else wide_table(rows, columns, str(out))


# ------------------------------------------------------------------ stage calls (in a forked worker)
def _paths(root: Path) -> dict:
    return {k: str(root / k) for k in ("examples", "statistics", "schema", "anomalies", "graph", "transformed",
                                       "hyperparameters", "model", "checkpoint", "evaluation", "quantized")}


def _module(stage: str):
    import importlib
    name = {"train": "distributed_train"}.get(stage, stage)
    return importlib.import_module(f"kfx_components.{name}.executor")


def _call(stage: str, module, data: str, root: Path, p: dict, args) -> dict:
    facts = json.loads((root / "ingest.json").read_text()) if stage != "ingest" else {}
    problem = dict(label_key=LABEL, problem_type="binary", num_classes=facts.get("num_classes", 2))
    model = dict(transformed_examples_dir=p["transformed"], transform_graph_dir=p["graph"], **problem)
    if stage == "ingest":
        out = module.run(data_path=data, examples_dir=p["examples"], label=LABEL, problem_type="binary",
                         beam_pipeline_args=BEAM)
        (root / "ingest.json").write_text(json.dumps(out))
        return out
    if stage == "validate":
        return module.run(examples_dir=p["examples"], statistics_dir=p["statistics"], schema_dir=p["schema"],
                          anomalies_dir=p["anomalies"], report_path=str(root / "validate.html"), label_key=LABEL,
                          stop_on_anomalies=False, beam_pipeline_args=BEAM)
    if stage == "transform":
        return module.run(examples_dir=p["examples"], schema_dir=p["schema"], transform_graph_dir=p["graph"],
                          transformed_examples_dir=p["transformed"], label_key=LABEL, beam_pipeline_args=BEAM)
    if stage == "tune":
        # the network alone: with both families the choice (and so train and quantize) varies with the table
        return module.run(hyperparameters_dir=p["hyperparameters"], max_trials=1, epochs=1, model_family="network",
                          **model)
    if stage == "train":
        return module.run(hyperparameters_dir=p["hyperparameters"], model_dir=p["model"],
                          checkpoint_dir=p["checkpoint"], epochs=1, **model)
    if stage == "evaluate":
        return module.run(model_dir=p["model"], examples_dir=p["examples"], evaluation_dir=p["evaluation"],
                          report_path=str(root / "evaluate.html"), explain_rows=args["explain_rows"], **problem)
    return module.run(model_dir=p["model"], quantized_dir=p["quantized"], examples_dir=p["examples"],
                      finetune_epochs=1, **model)


def stage_call(arg, tmp: Path) -> dict:
    stage, data, root, args = arg
    root = Path(root)
    p = _paths(root)
    module = _module(stage)
    for key in {"ingest": ["examples"], "validate": ["statistics", "schema", "anomalies"],
                "transform": ["graph", "transformed"], "tune": ["hyperparameters"],
                "train": ["model", "checkpoint"], "evaluate": ["evaluation"], "quantize": ["quantized"]}[stage]:
        shutil.rmtree(p[key], ignore_errors=True)
    cpu_start = _tree_cpu_seconds()
    with PeakTree() as mem:
        start = time.perf_counter()
        _call(stage, module, data, root, p, args)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_seconds": _tree_cpu_seconds() - cpu_start, "peak_kb": mem.peak}


# ------------------------------------------------------------------ analysis and the docs block
def analyse(results: list, columns: list) -> dict:
    """{stage: {"seconds"/"cpu"/"peak": {columns: x}, "failed": {columns: line}, "marg": [(a, b, s/col)],
    "cpu_marg": [(a, b, CPU s/col)]}}."""
    out = {}
    for r in results:
        d = out.setdefault(r["stage"], {"seconds": {}, "cpu": {}, "peak": {}, "failed": {}})
        if r.get("error"):
            d["failed"][r["columns"]] = r["error"]
        else:
            d["seconds"][r["columns"]], d["cpu"][r["columns"]] = r["seconds"], r["cpu_seconds"]
            d["peak"][r["columns"]] = r["peak_kb"]
    for d in out.values():
        have = [c for c in columns if c in d["seconds"]]
        d["marg"] = [(a, b, (d["seconds"][b] - d["seconds"][a]) / (b - a)) for a, b in zip(have, have[1:])]
        d["cpu_marg"] = [(a, b, (d["cpu"][b] - d["cpu"][a]) / (b - a)) for a, b in zip(have, have[1:])]
    return out


def render(analysis: dict, columns: list, rows: int, facts: dict, wall: float, plots: list) -> str:
    lines = [BEGIN, "## Columns: each stage's cost against the number of columns (`bench/columns.py`)", "",
             "Issue 26 item 1: columns scale like rows.", "",
             f"Measured {facts['date']} on {facts['nproc']} CPUs, {facts['mem']}, Python {facts['python']}, "
             f"commit {facts['commit']} (working tree as it was); {rows:,} rows of generated tables "
             f"(bench/columns.py `wide_table`: half numeric, half text, seed 0), columns "
             f"{', '.join(f'{c:,}' for c in columns)}; the bench took {wall:.0f} s. Each cell is one executor "
             f"call in its own forked worker: wall seconds (CPU seconds of the worker and its children). "
             f"tune 1 trial x 1 epoch (the network: `model_family=network`), train 1 epoch, quantize 1 fine-tuning epoch.", ""]
    pairs = list(zip(columns, columns[1:]))
    lines.append("| stage | " + " | ".join(f"{c:,} cols s (CPU s)" for c in columns) + " | " +
                 " | ".join(f"marginal {a}->{b} s/col wall (CPU)" for a, b in pairs) + " | " +
                 " | ".join(f"peak {c:,} MiB" for c in columns) + " |")
    lines.append("| " + " | ".join(["---"] + ["---:"] * (2 * len(columns) + len(pairs))) + " |")
    for stage in [s for s in STAGES if s in analysis]:
        d = analysis[stage]
        cells = [f"{d['seconds'][c]:.1f} ({d['cpu'][c]:.1f})" if c in d["seconds"] else
                 ("failed" if c in d["failed"] else "-") for c in columns]
        margs = {(a, b): (m, cm) for (a, b, m), (_, _, cm) in zip(d["marg"], d["cpu_marg"])}
        mcells = [f"{margs[pair][0]:.3f} ({margs[pair][1]:.3f})" if pair in margs else "-" for pair in pairs]
        peaks = [harness.mib(d["peak"][c]) if c in d["peak"] else "-" for c in columns]
        lines.append(f"| {stage} | " + " | ".join(cells + mcells + peaks) + " |")
    lines.append("")
    failures = [f"{stage} at {c:,} columns: {line}" for stage in STAGES if stage in analysis
                for c, line in sorted(analysis[stage]["failed"].items())]
    if failures:
        lines += ["Failed: " + "; ".join(failures) + ".", ""]
    for title, png in plots:
        lines += [f"![{title}]({png})", ""]
    lines.append(END)
    return "\n".join(lines) + "\n"


def plot(analysis: dict, columns: list, out_dir: Path) -> list:
    import plots
    series = {stage: [(c, analysis[stage]["seconds"][c]) for c in columns if c in analysis[stage]["seconds"]]
              for stage in STAGES if stage in analysis}
    png = plots.lines(series, out_dir / "columns_seconds.png", "Stage wall time against columns",
                      "feature columns", "seconds")
    return [("stage seconds against columns, log-log", png)]


# ------------------------------------------------------------------ main
def _preload() -> None:
    """Import the stages' libraries once, before forking: every worker starts with them."""
    import apache_beam  # noqa: F401
    import tensorflow  # noqa: F401
    import tensorflow_data_validation  # noqa: F401
    import tensorflow_transform.beam  # noqa: F401


def _first_line(error: str) -> str:
    lines = [ln.strip() for ln in error.splitlines() if ln.strip() and not ln.startswith((" ", "Traceback"))]
    return (lines[1] if len(lines) > 1 else lines[0] if lines else "failed")[:200]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--columns", default="10,50,200,1000")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--explain-rows", type=int, default=200, help="evaluate's SHAP rows (the pipeline's default)")
    ap.add_argument("--smoke", action="store_true", help="one table of 6 columns x 300 rows through "
                    "ingest/validate/transform, no doc (the CI's check that the bench runs)")
    ap.add_argument("--scratch", default="/tmp/kfx-bench-columns")
    ap.add_argument("--json", default="", help="also write the raw results here")
    ap.add_argument("--reuse", default="", help="a --json of an earlier run: its results for the stages not "
                    "run now are kept (e.g. to re-measure transform alone)")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--plots-dir", default=str(harness.REPO / "docs" / "img"))
    args = ap.parse_args(argv)
    if args.smoke:
        args.columns, args.rows, args.stages, args.no_doc = "6", 300, "ingest,validate,transform", True
    columns = sorted(int(c) for c in args.columns.split(","))
    stages = [s for s in STAGES if s in args.stages.split(",")]
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    facts = harness.machine_facts(("apache-beam", "tensorflow", "tensorflow-transform"))
    _preload()
    t0 = time.time()
    results = []
    for n in columns:
        data = ensure(args.rows, n, scratch / "data")
        root = scratch / f"{args.rows}x{n}"
        root.mkdir(exist_ok=True)
        failed = set()
        for stage in stages:
            if NEEDS.get(stage) in failed:
                failed.add(stage)
                continue
            try:
                r = harness.in_worker(stage_call, (stage, data, str(root), {"explain_rows": args.explain_rows}),
                                      scratch)
            except RuntimeError as e:
                failed.add(stage)
                r = {"error": _first_line(str(e))}
            r.update(stage=stage, columns=n)
            results.append(r)
            print(f"{n:>5} cols {stage:9} " + (f"{r['seconds']:8.1f} s  CPU {r['cpu_seconds']:7.1f} s  "
                                              f"peak {harness.mib(r['peak_kb'])} MiB" if "error" not in r
                                              else f"FAILED {r['error']}"), flush=True)
    wall = time.time() - t0
    if args.reuse:
        earlier = json.loads(Path(args.reuse).read_text())
        results = [r for r in earlier["results"] if r["stage"] not in stages and r["columns"] in columns] + results
        wall += earlier["wall"]
    if args.json:
        Path(args.json).write_text(json.dumps({"columns": columns, "rows": args.rows, "results": results,
                                               "facts": facts, "wall": wall}, indent=1))
    analysis = analyse(results, columns)
    print(render(analysis, columns, args.rows, facts, wall, []))
    if not args.no_doc:
        pngs = plot(analysis, columns, Path(args.plots_dir))
        block = render(analysis, columns, args.rows, facts, wall,
                       [(t, os.path.relpath(p, harness.DOC.parent)) for t, p in pngs])
        harness.write_block(BEGIN, END, block, lambda text: text.rstrip("\n") + "\n\n" + block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
