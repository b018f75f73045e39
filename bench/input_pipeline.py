"""Training input: examples/s through make_dataset's tf.data pipeline vs the same tensors in memory.

Setup (once, untimed): generated taxi rows -> ingest -> validate -> transform
(the stage executors, bench/data_scale.py's calls). Then, in one forked worker,
one compiled model (components/common/model.build_model) is trained one epoch
at a time on each input, interleaved over R repetitions:

* **in-memory**: the train split parsed once up front into one tensor per
  feature, then `model.fit(features, label, batch_size, shuffle=True)` (Keras
  gathers shuffled batches from memory): the rate of training alone, the ceiling;
* **make_dataset**: components/common/model.make_dataset as the stages call it
  (shuffle=True): a split that fits `IN_MEMORY_SPLIT_BYTES` is parsed once and
  batches are gathered from memory by shuffled row index;
* **make_dataset, streamed**: the same with `in_memory_bytes=0`, the path a split
  too large for memory takes: parallel reads, a 10,000-example shuffle buffer,
  parallel parsing per batch, prefetch.

Examples/s = train rows / seconds of one `fit(epochs=1)`, median over the
repetitions after a warm-up epoch each (graph tracing excluded); ratios are taken
per repetition. Target (issue 14): make_dataset at least 0.9x in-memory.
The pipeline alone (iterating the dataset, no model) is reported too.

    .venv/bin/python bench/input_pipeline.py                 # 100k rows, rewrites its docs block
    .venv/bin/python bench/input_pipeline.py --rows 2000 --reps 1 --no-doc   # smoke
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
import generate  # noqa: E402
import data_scale  # noqa: E402

BEGIN, END = "<!-- input:begin -->", "<!-- input:end -->"


def prepare(arg, tmp: Path) -> dict:
    rows, scratch = arg
    root = Path(scratch) / f"input-{rows}"
    root.mkdir(parents=True, exist_ok=True)
    data = generate.ensure(rows, str(Path(scratch) / "data"))
    if not (root / "transformed" / "train").exists():
        for stage in ("ingest", "validate", "transform"):
            data_scale.stage_call((stage, data, str(root), "single", "", "pandas"), tmp)
    return {"root": str(root)}


def measure(arg, tmp: Path) -> dict:
    root, reps, batch = arg
    import tensorflow as tf
    from kfx_components.common import model as m
    p = data_scale._paths(Path(root))
    out = m.load_transform_output(p["graph"])
    rows = m.count_examples(p["transformed"], "train")
    common = dict(transformed_examples_dir=p["transformed"], split="train", transform_output=out,
                  label_key="label", batch_size=batch, problem_type="binary")
    # The same tensors, parsed once, in memory.
    parsed = list(m.make_dataset(**common))
    feats = {k: tf.concat([b[0][k] for b in parsed], 0) for k in parsed[0][0]}
    labels = tf.concat([b[1] for b in parsed], 0)
    del parsed
    model = m.build_model(out, "label", "binary")
    datasets = {"make_dataset": m.make_dataset(**common, shuffle=True, seed=0),
                "make_dataset, streamed": m.make_dataset(**common, shuffle=True, seed=0, in_memory_bytes=0)}

    def fit_once(k):
        if k == "in-memory":   # Keras' own tensor input: shuffled index batches gathered from memory
            model.fit(feats, labels, batch_size=batch, shuffle=True, epochs=1, verbose=0)
        else:
            model.fit(datasets[k], epochs=1, verbose=0)

    names = ["in-memory", *datasets]
    for k in names:   # warm-up: tracing
        fit_once(k)
    fit = {k: [] for k in names}
    scan = {k: [] for k in datasets}
    for _ in range(reps):
        for k in names:
            t = time.perf_counter()
            fit_once(k)
            fit[k].append(rows / (time.perf_counter() - t))
        for k, ds in datasets.items():
            t = time.perf_counter()
            for _b in ds:
                pass
            scan[k].append(rows / (time.perf_counter() - t))
    return {"rows": rows, "batch": batch, "fit": fit, "scan": scan}


def render(r: dict, facts: dict, wall: float, png: str) -> str:
    fit, scan = r["fit"], r["scan"]
    ratio = {k: statistics.median(a / b for a, b in zip(fit[k], fit["in-memory"])) for k in fit}
    lines = [BEGIN, "## Training input pipeline (`bench/input_pipeline.py`)", "",
             "Issue 14 target 6: make_dataset at least 0.9x the rate of training on the same tensors in memory. "
             "The streamed row is the path a split larger than `IN_MEMORY_SPLIT_BYTES` (256 MiB parsed) takes.", "",
             f"Measured {facts['date']} on {facts['nproc']} CPUs, commit {facts['commit']} (working tree); "
             f"{r['rows']} train rows of generated taxi data, batch {r['batch']}, "
             f"{len(fit['in-memory'])} interleaved repetitions of one epoch each after a warm-up epoch; "
             f"the bench took {wall:.0f} s.", "",
             "| input | fit examples/s (median) | x in-memory (paired median; target >= 0.9) | "
             "pipeline alone examples/s |",
             "| --- | ---: | ---: | ---: |"]
    for k in fit:
        alone = f"{statistics.median(scan[k]):,.0f}" if k in scan else "-"
        lines.append(f"| {k} | {statistics.median(fit[k]):,.0f} | **{ratio[k]:.2f}x** | {alone} |")
    lines += ["", f"![examples per second by input]({png})", "", END]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--scratch", default="/tmp/kfx-bench-scale")
    ap.add_argument("--json", default="")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args(argv)
    facts = harness.machine_facts(("tensorflow",))
    t0 = time.time()
    Path(args.scratch).mkdir(parents=True, exist_ok=True)
    root = harness.in_worker(prepare, (args.rows, args.scratch), Path(args.scratch))["root"]
    r = harness.in_worker(measure, (root, args.reps, args.batch), Path(args.scratch))
    wall = time.time() - t0
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    for k in r["fit"]:
        print(f"{k:13} fit {statistics.median(r['fit'][k]):10,.0f} ex/s   pipeline "
              f"{statistics.median(r['scan'].get(k, [0])):10,.0f} ex/s")
    if not args.no_doc:
        import plots
        plots.bars({"fit": {k: statistics.median(v) for k, v in r["fit"].items()},
                    "pipeline alone": {k: statistics.median(v) for k, v in r["scan"].items()}},
                   harness.DOC.parent / "img" / "input_pipeline.png", "Training input: examples per second",
                   "examples/s")
        block = render(r, facts, wall, "img/input_pipeline.png")
        harness.write_block(BEGIN, END, block,
                            lambda text: text.rstrip("\n") + "\n\n" + block)
        print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
