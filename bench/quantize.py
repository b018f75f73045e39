"""The quantized variants of the taxi model: size, weight bytes, latency and AUC, measured.

Runs the stages' executors on the whole bundled Chicago taxi table (ingest ->
validate -> transform -> distributed_train with the default hyperparameters ->
distill with its defaults -> quantize with pruning and QAT), for the model the
pipeline publishes (the distilled student) and for its teacher, then times every
TFLite variant again with more calls (one interpreter thread, inputs already set:
the model's own cost; and a Python signature-runner call, what a caller pays).

Checks (issue 12): int8 weight bytes <= 0.3x the float32 TFLite model's, int8
single-example latency <= 0.5x the float32 TFLite model's, AUC within 0.01.
Writes the section between `<!-- quantize:begin -->` and `<!-- quantize:end -->`
at the end of docs/benchmarks.md (appended when absent; nothing else is touched).

    .venv/bin/python bench/quantize.py [--rows N] [--keep DIR] [--no-doc]
    .venv/bin/python bench/quantize.py --smoke    # 400 rows, 2 epochs, few timed calls: checks it runs
    .venv/bin/python bench/quantize.py --smoke --from-run ROOT   # the models of a finished `kfx run`
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DOC = REPO / "docs" / "benchmarks.md"
CONFIG = REPO / "pipelines" / "configs" / "chicago_taxi.yaml"
BEGIN, END = "<!-- quantize:begin -->", "<!-- quantize:end -->"
ROUNDS = 3            # latency: the best of ROUNDS medians (other load on the machine only adds time)
SINGLE_CALLS = 2000
BATCH_CALLS = 100
EPOCHS = 40           # teacher and student
FINETUNE_EPOCHS = 2   # quantize's own default (pruning and QAT fine-tuning)
# --smoke (`make bench-smoke`, tests/test_bench_smoke.py): every stage and variant, briefly; nothing written.
SMOKE = {"ROWS": 400, "ROUNDS": 1, "SINGLE_CALLS": 20, "BATCH_CALLS": 2, "EPOCHS": 2, "FINETUNE_EPOCHS": 1}


def build(work: Path, rows: int) -> dict:
    """Run the stages up to the student; returns {"teacher": dir, "student": dir, ...facts}."""
    import pandas as pd
    import yaml

    from kfx_components.common import facts as travelling
    from kfx_components.common import model as M
    from kfx_components.distill import executor as distill
    from kfx_components.distributed_train import executor as train
    from kfx_components.ingest import executor as ingest
    from kfx_components.transform import executor as transform
    from kfx_components.validate import executor as validate

    config = yaml.safe_load(CONFIG.read_text())
    data = (CONFIG.parent / config["data"]).resolve()
    if rows:
        sample = work / "data.csv"
        pd.read_csv(data, nrows=rows).to_csv(sample, index=False)
        data = sample
    t = time.time()
    ex = ingest.run(data_path=str(data), examples_dir=str(work / "examples"), label=config["label"],
                    problem_type=config["problem_type"], drop_columns=config["drop_columns"])
    validate.run(examples_dir=str(work / "examples"), statistics_dir=str(work / "statistics"),
                 schema_dir=str(work / "schema"), anomalies_dir=str(work / "anomalies"),
                 report_path=str(work / "validate.html"), label_key=ex["label_key"], stop_on_anomalies=False)
    transform.run(examples_dir=str(work / "examples"), schema_dir=str(work / "schema"),
                  transform_graph_dir=str(work / "graph"), transformed_examples_dir=str(work / "transformed"),
                  label_key=ex["label_key"], categorical_features=config["categorical_features"],
                  bucketize_features=config["bucketize_features"])
    args = dict(transformed_examples_dir=str(work / "transformed"), transform_graph_dir=str(work / "graph"),
                label_key=ex["label_key"], problem_type=ex["problem_type"], num_classes=ex["num_classes"])
    M.write_hyperparameters(str(work / "hp"), **M.DEFAULT_HYPERPARAMETERS)
    teacher = train.run(hyperparameters_dir=str(work / "hp"), model_dir=str(work / "teacher"),
                        checkpoint_dir=str(work / "ckpt"), epochs=EPOCHS, **args)
    student = distill.run(teacher_model_dir=str(work / "teacher"), model_dir=str(work / "student"), epochs=EPOCHS,
                          **args)
    return {"args": args, "examples": str(work / "examples"), "rows": ex["rows"], "rows_test": ex["rows_test"],
            "teacher": teacher, "student": student, "build_seconds": round(time.time() - t, 1),
            "carried": travelling.carried(ex), "models": {w: str(work / w) for w in ("teacher", "student")},
            "made": "teacher trained with the default hyperparameters, student distilled with distill's defaults"}


def from_run(root: Path) -> dict:
    """What build() returns, from the newest run of a finished `kfx run` workspace instead: the
    pipeline's own examples, transform, teacher and passed-on model, and their facts (as the run's
    MLMD store holds them). `bench/all.py --smoke` shares the lifecycle smoke's run this way."""
    from kfx.stores.metadata import MetadataStore
    from kfx_components.common import facts as travelling

    run = max((root / "artifacts" / "kfx-tabular").iterdir(), key=lambda p: p.stat().st_mtime)
    store = MetadataStore(str(root / "metadata.sqlite"))

    def output(task: str, name: str) -> tuple[str, dict]:
        path = str(run / task / name)
        [found] = store.artifacts_by_uri(path)
        return path, store.stored_artifact(found).metadata

    examples, ex = output("ingest", "examples")
    graph, _ = output("transform", "transform_graph")
    transformed, _ = output("transform", "transformed_examples")
    teacher_dir, teacher = output("distributed-train", "model")
    student_dir, student = output("distill", "model")
    args = dict(transformed_examples_dir=transformed, transform_graph_dir=graph, label_key=ex["label_key"],
                problem_type=ex["problem_type"], num_classes=int(ex.get("num_classes") or 0))
    return {"args": args, "examples": examples, "rows": ex["rows"], "rows_test": ex["rows_test"],
            "teacher": teacher, "student": student, "build_seconds": 0.0, "carried": travelling.carried(ex),
            "models": {"teacher": teacher_dir, "student": student_dir},
            "made": f"teacher and passed-on model of the `kfx run` in {root} (its tuned hyperparameters)"}


def measure(work: Path, built: dict, which: str) -> dict:
    from kfx_components.quantize import executor as quantize, latency, splits, tflite

    model_dir = built["models"][which]
    facts = quantize.run(model_dir=model_dir, quantized_dir=str(work / f"q_{which}"), tolerance=0.02,
                         examples_dir=built["examples"], finetune_epochs=FINETUNE_EPOCHS,
                         finetune_when="always", **built["args"])  # every variant measured, int8 passing or not
    # Re-time with more calls; the best of ROUNDS medians.
    from kfx_components.common import io, model as M
    import tensorflow as tf

    transform_output = M.load_transform_output(built["args"]["transform_graph_dir"])
    signature = tf.saved_model.load(model_dir).signatures[tflite.SIGNATURE]
    spec = splits.signature_input_spec(signature)
    x, _ = splits.load_split(built["args"]["transformed_examples_dir"], io.TEST, transform_output, spec,
                             built["args"]["label_key"])
    for name, v in facts["variants"].items():
        path = str(work / f"q_{which}" / v["file"])
        best = None
        for _ in range(ROUNDS):
            lat = latency.tflite_latency(path, x, single_calls=SINGLE_CALLS, batch_calls=BATCH_CALLS)
            if best is None:
                best = lat
            else:
                for key in ("single_invoke", "single_call", "batch_invoke"):
                    if lat[key]["median_ms"] < best[key]["median_ms"]:
                        best[key] = lat[key]
        v["latency"] = best
    import collections

    for name in ("float32", "int8"):
        if name in facts["variants"]:
            ops = tf.lite.Interpreter(model_path=str(work / f"q_{which}" / f"{name}.tflite"))._get_ops_details()
            facts["variants"][name]["ops"] = dict(collections.Counter(o["op_name"] for o in ops))
    base = facts["variants"]["float32"]
    for v in facts["variants"].values():
        v["latency_ratio_to_float32"] = round(v["latency"]["single_invoke"]["median_ms"]
                                              / base["latency"]["single_invoke"]["median_ms"], 3)
    return facts


def _single_invoke_us(blob: bytes, work: Path, name: str, inputs: dict) -> float:
    """Best-of-ROUNDS median single-example invoke time (µs) of a TFLite flatbuffer, as tflite_latency
    times the variants (one thread, the interpreter's default delegates, inputs already set)."""
    import numpy as np
    import tensorflow as tf

    from kfx_components.quantize import latency, tflite

    path = work / f"{name}.tflite"
    path.write_bytes(blob)
    best = None
    for _ in range(ROUNDS):
        interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=1)
        details = interpreter.get_input_details()
        for d in details:
            interpreter.resize_tensor_input(d["index"], [1] + list(d["shape"][1:]))
        interpreter.allocate_tensors()
        for d in details:
            value = inputs[d["name"]] if d["name"] in inputs else np.zeros(d["shape"], np.float32)
            if d["dtype"] == np.int8:
                value = tflite.quantize(value, d)
            interpreter.set_tensor(d["index"], np.asarray(value, d["dtype"]).reshape([1] + list(d["shape"][1:])))
        best = min(best or float("inf"), latency.timed(interpreter.invoke, SINGLE_CALLS)["median_ms"])
    return round(best * 1000, 2)


def floor(work: Path, built: dict, which: str) -> dict:
    """What int8 can save at one example: the interpreter's per-invoke floor (a one-op model), and the
    model's dense part alone (its encoded-feature input -> Dense layers -> logits) in float32 and int8."""
    import tensorflow as tf

    from kfx_components.common import model as M

    class OneAdd(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def __call__(self, x):
            return x + 1.0

    one = OneAdd()
    blob = tf.lite.TFLiteConverter.from_concrete_functions([one.__call__.get_concrete_function()], one).convert()
    out = {"one_op_us": _single_invoke_us(blob, work, "one_op", {})}

    loaded = tf.keras.models.load_model(built["models"][which], compile=False)
    encoder = tf.keras.Model(loaded.inputs, loaded.get_layer("features").output)
    width = int(encoder.output_shape[-1])
    x = inp = tf.keras.Input(shape=(width,), name="encoded")
    for layer in loaded.layers:   # the Dense stack after the encoding, in order (logits last)
        if isinstance(layer, tf.keras.layers.Dense) or layer.name == "logits":
            x = layer(x)
    dense = tf.keras.Model(inp, x)
    transform_output = M.load_transform_output(built["args"]["transform_graph_dir"])
    train = M.make_dataset(built["args"]["transformed_examples_dir"], "train", transform_output,
                           built["args"]["label_key"], batch_size=300, with_label=False)
    encoded = encoder(next(iter(train)), training=False).numpy()

    def representative():
        for row in encoded:
            yield [row[None, :]]

    for variant in ("float32", "int8"):
        converter = tf.lite.TFLiteConverter.from_keras_model(dense)
        if variant == "int8":   # the settings components/quantize uses for its int8 variant
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        blob = converter.convert()
        name = tf.lite.Interpreter(model_content=blob).get_input_details()[0]["name"]
        out[f"dense_{variant}_us"] = _single_invoke_us(blob, work, f"dense_{variant}", {name: encoded[:1]})
    out["encoded_width"] = width
    return out


def _us(ms: float) -> str:
    return f"{ms * 1000:.2f}"


def section(built: dict, results: dict, seconds: float) -> str:
    from importlib.metadata import version

    lines = [BEGIN, "## Quantized variants of the taxi model (bench/quantize.py)", "",
             f"Measured {datetime.date.today().isoformat()} on {platform.machine()} "
             f"({os.cpu_count()} cores, Python {platform.python_version()}, tensorflow {version('tensorflow')}, "
             f"tensorflow-model-optimization {version('tensorflow-model-optimization')}); the taxi table "
             f"({built['rows']:,} rows, {built['rows_test']:,} test rows), {built['made']}. Latency: one "
             f"interpreter thread and "
             f"the interpreter's default kernels and delegate (XNNPACK) for every variant, "
             f"median of {SINGLE_CALLS} single-example / {BATCH_CALLS} batch-{LATENCY_BATCH} invocations with the "
             f"inputs already set (best of {ROUNDS} rounds); *call* is a Python signature-runner call with one "
             f"example (input copies included). Every variant runs on the same transformed test inputs. "
             f"Total {seconds / 60:.1f} min.", ""]
    for which, facts in results.items():
        t = built[which] if which == "student" else built["teacher"]
        params = (f"{built['student']['student_params']:,} parameters, {built['student']['param_ratio']:.2f}x the "
                  f"teacher's {built['student']['teacher_params']:,}; eval AUC {built['student']['student_metric']:.4f}"
                  f" vs {built['student']['teacher_metric']:.4f}, passed on: {built['student']['passed_on']}"
                  if which == "student" else f"{t.get('params', 0):,} parameters")
        ref = facts["reference"]
        lines += [f"### {which} ({params})", "",
                  f"SavedModel: test AUC {ref['metric']:.4f}; {ref['saved_model_bytes']:,} bytes on disk; "
                  + "; ".join(f"{k.replace('_', ' ')} {v['median_ms']:.3f} ms" for k, v in ref["latency"].items()
                              if isinstance(v, dict)) + " (end to end = tf.Example parsing + TFT + model).", "",
                  "| variant | file bytes | gzipped | weight bytes | weights vs float32 | single (µs) | "
                  "single vs float32 | call (µs) | batch (ms) | test AUC | change |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        base = facts["variants"]["float32"]
        for name, v in facts["variants"].items():
            lat = v["latency"]
            lines.append(f"| {name}{' (recommended)' if name == facts['recommended'] else ''} | {v['size_bytes']:,} | "
                         f"{v['gzip_bytes']:,} | {v['weight_bytes']:,} | "
                         f"{v['weight_bytes'] / base['weight_bytes']:.2f}x | {_us(lat['single_invoke']['median_ms'])} | "
                         f"{v['latency_ratio_to_float32']:.2f}x | {_us(lat['single_call']['median_ms'])} | "
                         f"{lat['batch_invoke']['median_ms']:.3f} | {v['metric']:.4f} | {v['metric_delta']:+.4f} |")
        for name, reason in facts["rejected"].items():
            lines.append(f"| {name} (not published) | | | | | | | | | | {reason} |")
        lines.append("")
        if "int8" in facts["variants"]:
            i8 = facts["variants"]["int8"]
            checks = [
                ("int8 weight bytes <= 0.3x float32", i8["weight_bytes"] / base["weight_bytes"], 0.3,
                 f"{i8['weight_bytes']:,} / {base['weight_bytes']:,} bytes (files {i8['size_bytes']:,} / "
                 f"{base['size_bytes']:,} = {i8['size_bytes'] / base['size_bytes']:.2f}x)"),
                ("int8 single-example latency <= 0.5x float32", i8["latency_ratio_to_float32"], 0.5,
                 f"{_us(i8['latency']['single_invoke']['median_ms'])} / "
                 f"{_us(base['latency']['single_invoke']['median_ms'])} µs (batch "
                 f"{i8['latency']['batch_invoke']['median_ms'] / base['latency']['batch_invoke']['median_ms']:.2f}x)"),
                ("int8 AUC within 0.01 of the SavedModel", abs(i8["metric_delta"]), 0.01,
                 f"{i8['metric']:.4f} vs {ref['metric']:.4f}"),
            ]
            lines += ["| check | measured | target | met |", "| --- | ---: | ---: | --- |"]
            lines += [f"| {name} ({detail}) | {value:.3f} | {target:g} | {'yes' if value <= target else '**no**'} |"
                      for name, value, target, detail in checks]
            lines.append("")
            ops = i8.get("ops") or {}
            fl = facts.get("floor")
            if i8["latency_ratio_to_float32"] > 0.5 and ops and fl:
                total = base["latency"]["single_invoke"]["median_ms"] * 1000
                dense_share = max(0.0, fl["dense_float32_us"] - fl["one_op_us"])
                fc = ops.get("FULLY_CONNECTED", 0)
                lines += [f"Why the single-example target is not met, and cannot be by a conversion setting: an example "
                          f"costs {sum(ops.values())} ops ({', '.join(f'{n} {op}' for op, n in sorted(ops.items()))}); "
                          f"int8 changes the arithmetic of the {fc} FULLY_CONNECTED only, the rest (stacking the "
                          f"inputs, the one embedding lookup on int64 indices, the concatenation) is the same work "
                          f"in both models. The dense part alone (a {fl['encoded_width']}-wide encoded input -> the "
                          f"Dense layers) takes {fl['dense_float32_us']:.2f} µs in float32 and "
                          f"{fl['dense_int8_us']:.2f} µs in int8 per example; a one-op model takes "
                          f"{fl['one_op_us']:.2f} µs (the interpreter's per-invoke floor). So int8 can save at most "
                          f"{dense_share:.2f} µs of the float32 model's {total:.2f} µs: even with free int8 "
                          f"arithmetic the ratio would be at least {(total - dense_share) / total:.2f}x. "
                          f"At batch {LATENCY_BATCH} int8 takes "
                          f"{i8['latency']['batch_invoke']['median_ms'] / base['latency']['batch_invoke']['median_ms']:.2f}x "
                          f"the float32 time.", ""]
        if facts.get("notes"):
            lines += [f"- {k}: {v}" for k, v in facts["notes"].items()] + [""]
    lines.append(END)
    return "\n".join(lines)


LATENCY_BATCH = 256


def write_doc(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else ""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: text, doc)
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    DOC.write_text(doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=0, help="use the first N rows (default: the whole table)")
    parser.add_argument("--keep", default="", help="work directory to keep (default: a temporary one)")
    parser.add_argument("--no-doc", action="store_true", help="print the section, do not write docs/benchmarks.md")
    parser.add_argument("--smoke", action="store_true", help=f"tiny budget {SMOKE}; implies --no-doc")
    parser.add_argument("--from-run", type=Path, default=None,
                        help="take the data and models from this finished `kfx run` workspace (ROOT) instead of "
                             "running the stages")
    opts = parser.parse_args()
    if opts.smoke:
        globals().update({k: v for k, v in SMOKE.items() if k != "ROWS"})
        opts.rows, opts.no_doc = SMOKE["ROWS"], True
    import kfx_components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

    start = time.time()
    work = Path(opts.keep) if opts.keep else Path(tempfile.mkdtemp(prefix="kfx-bench-quantize-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        built = from_run(opts.from_run) if opts.from_run else build(work, opts.rows)
        results = {which: measure(work, built, which) for which in ("student", "teacher")}
        for which, facts in results.items():
            facts["floor"] = floor(work, built, which)
        text = section(built, results, time.time() - start)
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(text)
    if not opts.no_doc:
        write_doc(text)
        print(f"written to {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
