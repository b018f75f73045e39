"""Quantize: TFLite conversions of a model's ``transformed_logits`` signature, pruning and QAT.

The converted function takes the *transformed* feature tensors (see
docs/design.md, artifact "model"), so no tf.Example parsing and no TFT ops end
up inside TFLite. Variants written to ``quantized_dir``:

- ``float32.tflite``: no optimization; the reference every other variant's size
  and latency are compared with;
- ``dynamic_range.tflite``: weights int8, activations float (no calibration data);
- ``float16.tflite``: weights float16;
- ``int8.tflite``: full integer (TFLITE_BUILTINS_INT8 only, int8 float-inputs,
  int8 weights and activations, int8 output), calibrated on the train split.
  Integer index inputs (categorical features) stay int64: they are indices,
  not quantizable values;
- ``pruned.tflite`` (``pruning_sparsity`` > 0): the Keras model's Dense and
  Embedding kernels (the one table of every categorical feature's embeddings,
  pruned as a whole) pruned by magnitude with tensorflow-model-optimization
  (``prune_low_magnitude``, a ``PolynomialDecay`` sparsity schedule to
  ``pruning_sparsity`` over ``finetune_epochs`` of fine-tuning on the train
  split, then ``strip_pruning``), converted with dynamic-range quantization.
  Zeros compress: its ``gzip_bytes`` is the size that shows the pruning;
- ``qat.tflite`` (``qat``): quantization-aware training. tfmot's
  ``quantize_model`` rejects Embedding layers, so the dense part (every
  ``Dense`` layer) is annotated with ``quantize_annotate_layer`` and
  ``quantize_apply`` inserts fake-quantization there; the embeddings stay as
  trained. After ``finetune_epochs`` of fine-tuning it is converted full-int8
  like ``int8`` (the dense layers with their learned ranges).

Each variant is run with ``tf.lite.Interpreter`` over the test split and scored
with the same metric as the float SavedModel (AUC for binary, accuracy for
multiclass, RMSE for regression). A variant whose metric is worse than the
SavedModel's by more than ``tolerance`` (relative) is not published: its file
is not written, and ``rejected`` says why. Per variant: file size, gzipped
size, weight bytes (the constant buffers of the flatbuffer), and single-example
and batch latency on the same transformed test inputs (one interpreter thread).
The SavedModel's latency is measured beside them: ``transformed_logits`` on the
same inputs and, when ``examples_dir`` (the raw examples) is given,
``serving_default`` end to end (tf.Example parsing and the TFT graph included).
``recommended`` is the smallest published variant. A ``quantization.json``
summary is written.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time


from kfx_components.common import io, problem

SIGNATURE = problem.LOGITS_SIGNATURE
POST_TRAINING = ("float32", "dynamic_range", "float16", "int8")
TRAINED = ("pruned", "qat")
VARIANTS = POST_TRAINING + TRAINED
REPRESENTATIVE_SAMPLES = 300
EVAL_BATCH = 512
LATENCY_BATCH = 256
LATENCY_SINGLE_CALLS = 300
LATENCY_BATCH_CALLS = 20
FINETUNE_LEARNING_RATE = 3e-4


def signature_input_spec(signature) -> dict:
    """{name: tf.TensorSpec} of a loaded signature's keyword inputs."""
    args, kwargs = signature.structured_input_signature
    if args or not kwargs:
        raise ValueError(f"signature {SIGNATURE!r} must take named transformed-feature tensors")
    return dict(kwargs)


def load_split(transformed_examples_dir: str, split: str, transform_output, input_spec: dict,
               label_key: str, limit: int | None = None):
    """(features {name: np.ndarray}, labels np.ndarray) of one split, keyed by the signature's inputs."""
    import numpy as np

    from kfx_components.common import model as M

    ds = M.make_dataset(transformed_examples_dir, split, transform_output, label_key, batch_size=1024)
    cols: dict = {k: [] for k in input_spec}
    labels, n = [], 0
    for features, label in ds:
        by_arg = M.signature_args(features)
        missing = sorted(set(input_spec) - set(by_arg))
        if missing:
            raise ValueError(f"signature {SIGNATURE!r} wants features {missing} that the transformed "
                             f"examples in {transformed_examples_dir!r} do not hold")
        for k in input_spec:
            cols[k].append(features[by_arg[k]].numpy())
        labels.append(label.numpy().reshape(-1))
        n += len(labels[-1])
        if limit and n >= limit:
            break
    features = {}
    for name, spec in input_spec.items():
        value = np.concatenate(cols[name])[:limit]
        features[name] = value.astype(spec.dtype.as_numpy_dtype)
    return features, np.concatenate(labels)[:limit]


def _batches(features: dict, n: int, size: int):
    for start in range(0, n, size):
        yield {k: v[start:start + size] for k, v in features.items()}


def saved_model_logits(signature, features: dict, n: int):
    import numpy as np

    out = [signature(**batch)["logits"].numpy() for batch in _batches(features, n, EVAL_BATCH)]
    return np.concatenate(out)


def _quantize(value, detail):
    """Float -> the tensor's integer type with its (scale, zero_point)."""
    import numpy as np

    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    q = np.round(np.asarray(value, dtype=np.float64) / scale + zero)
    return np.clip(q, info.min, info.max).astype(detail["dtype"])


def tflite_logits(model_path: str, features: dict, n: int):
    """Run a .tflite file's signature over features; quantized ints are (de)quantized here."""
    import numpy as np
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=model_path)
    runner = interpreter.get_signature_runner(SIGNATURE)
    in_details = runner.get_input_details()
    out_detail = runner.get_output_details()["logits"]
    out = []
    for batch in _batches(features, n, EVAL_BATCH):
        feed = _tflite_feed(in_details, batch)
        res = runner(**feed)["logits"]
        if out_detail["dtype"] in (np.int8, np.uint8, np.int16):
            scale, zero = out_detail["quantization"]
            res = (res.astype(np.float32) - zero) * scale
        out.append(np.asarray(res, dtype=np.float32))
    return np.concatenate(out)


def tensor_dtypes(model_path: str) -> dict:
    """Facts about a .tflite file's tensors: input/output dtypes and weight dtypes counted."""
    import numpy as np
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=model_path)
    runner = interpreter.get_signature_runner(SIGNATURE)
    inputs = {k: np.dtype(d["dtype"]).name for k, d in runner.get_input_details().items()}
    outputs = {k: np.dtype(d["dtype"]).name for k, d in runner.get_output_details().items()}
    counts: dict = {}
    try:
        ops = sorted({op["op_name"] for op in interpreter._get_ops_details()})  # pylint: disable=protected-access
    except Exception:  # private API; the op list is informative only
        ops = []
    for d in interpreter.get_tensor_details():
        counts[np.dtype(d["dtype"]).name] = counts.get(np.dtype(d["dtype"]).name, 0) + 1
    return {"inputs": inputs, "outputs": outputs, "tensor_dtype_counts": counts, "ops": ops}


def convert(model_dir: str, variant: str, representative=None) -> bytes:
    """TFLite flatbuffer of ``model_dir``'s transformed_logits signature for a post-training variant
    (``float32``, ``dynamic_range``, ``float16``, ``int8``)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(model_dir, signature_keys=[SIGNATURE])
    if variant == "float32":
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        converter.representative_dataset = representative
        # Full integer only: a builtin op with no int8 kernel makes conversion fail
        # (no silent float fallback).
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif variant != "dynamic_range":
        raise ValueError(f"unknown variant {variant!r}")
    return converter.convert()


def weight_bytes(blob: bytes) -> int:
    """Bytes of the constant buffers (weights, biases, quantization tables) in a TFLite flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(blob, 0)
    return int(sum(model.Buffers(i).DataLength() for i in range(model.BuffersLength())))


def gzip_bytes(blob: bytes) -> int:
    """Size of the file gzipped (level 9): what pruning's zeros save in transfer and storage."""
    import gzip

    return len(gzip.compress(blob, compresslevel=9, mtime=0))


def _timed(call, repeats: int) -> dict:
    """Median and 90th percentile of ``repeats`` calls, in milliseconds (after 3 warm-up calls)."""
    import numpy as np

    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return {"median_ms": round(float(np.median(times)) * 1e3, 5),
            "p90_ms": round(float(np.percentile(times, 90)) * 1e3, 5)}


def _tflite_feed(in_details: dict, batch: dict) -> dict:
    import numpy as np

    feed = {}
    for name, value in batch.items():
        d = in_details[name]
        if d["dtype"] in (np.int8, np.uint8, np.int16) and np.issubdtype(value.dtype, np.floating):
            feed[name] = _quantize(value, d)
        else:
            feed[name] = value.astype(d["dtype"])
    return feed


def tflite_latency(model_path: str, features: dict, batch_size: int = LATENCY_BATCH,
                   single_calls: int = LATENCY_SINGLE_CALLS, batch_calls: int = LATENCY_BATCH_CALLS) -> dict:
    """Single-example and batch latency of a .tflite file on one thread.

    ``invoke``: the interpreter's own time, inputs already set (what the model costs);
    ``call``: a signature-runner call from Python with one example (what a caller pays,
    input copies included).
    """
    import tensorflow as tf

    out = {}
    for label, size, repeats in (("single", 1, single_calls), ("batch", batch_size, batch_calls)):
        interpreter = tf.lite.Interpreter(model_path=model_path, num_threads=1)
        in_details = interpreter.get_signature_runner(SIGNATURE).get_input_details()
        feed = _tflite_feed(in_details, {k: v[:size] for k, v in features.items()})
        for name, value in feed.items():
            interpreter.resize_tensor_input(in_details[name]["index"], list(value.shape))
        interpreter.allocate_tensors()
        for name, value in feed.items():
            interpreter.set_tensor(in_details[name]["index"], value)
        out[f"{label}_invoke"] = _timed(interpreter.invoke, repeats)
        if label == "single":
            runner = tf.lite.Interpreter(model_path=model_path, num_threads=1).get_signature_runner(SIGNATURE)
            out["single_call"] = _timed(lambda: runner(**feed), repeats)
    out["batch_size"] = int(min(batch_size, len(next(iter(features.values())))))
    return out


def saved_model_latency(signature, features: dict, serving=None, records=None,
                        batch_size: int = LATENCY_BATCH) -> dict:
    """The SavedModel's latency: ``transformed_logits`` on the transformed inputs and, with
    ``serving`` and raw ``records``, ``serving_default`` end to end (parsing + TFT + model)."""
    import tensorflow as tf

    out = {}
    one = {k: tf.constant(v[:1]) for k, v in features.items()}
    many = {k: tf.constant(v[:batch_size]) for k, v in features.items()}
    out["transformed_single"] = _timed(lambda: signature(**one), LATENCY_SINGLE_CALLS // 3)
    out["transformed_batch"] = _timed(lambda: signature(**many), LATENCY_BATCH_CALLS)
    if serving is not None and records:
        one_raw, many_raw = tf.constant(records[:1]), tf.constant(records[:batch_size])
        out["end_to_end_single"] = _timed(lambda: serving(examples=one_raw), LATENCY_SINGLE_CALLS // 3)
        out["end_to_end_batch"] = _timed(lambda: serving(examples=many_raw), LATENCY_BATCH_CALLS)
    out["batch_size"] = int(min(batch_size, len(next(iter(features.values())))))
    return out


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


# ------------------------------------------------------------------ pruning and QAT (tfmot)

def _keras_core(model_dir: str, transform_output, label_key: str):
    """The SavedModel's Keras graph (transformed features -> logits) as a plain functional model
    taking ``{transformed feature: tensor}``, as ``model.build_model``'s does.

    ``tf.keras.models.load_model`` revives the exported model with its TFT layer attached; a new
    ``Model(inputs, outputs)`` over the same layers leaves that layer (not part of the graph) out,
    so tfmot can clone the graph. Its inputs are keyed by feature again: each Input is named
    ``names.safe_name(feature)``, not after the feature ('2nd col', 'lambda')."""
    import tensorflow as tf

    from kfx_components.common import model as M

    loaded = tf.keras.models.load_model(model_dir, compile=False)
    features = M.feature_keys(transform_output, label_key)
    # A model built before names.safe_name named its Inputs after the features themselves.
    feature_of = {**{f: f for f in features}, **M.signature_args(features)}
    unknown = sorted(set(loaded.input_names) - set(feature_of))
    if unknown:
        raise ValueError(f"model_dir {model_dir!r} takes inputs {unknown} that the transform graph does not produce")
    return tf.keras.Model(dict(zip((feature_of[n] for n in loaded.input_names), loaded.inputs)), loaded.outputs)


def _compile(model, problem_type: str):
    """The loss ``model.build_model`` trains with (the model outputs logits)."""
    import tensorflow as tf

    if problem_type == "binary":
        loss = tf.keras.losses.BinaryCrossentropy(from_logits=True)
    elif problem_type == "multiclass":
        loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        loss = tf.keras.losses.MeanSquaredError()
    model.compile(optimizer=tf.keras.optimizers.Adam(FINETUNE_LEARNING_RATE), loss=loss)


def _finetune(model, transformed_examples_dir, transform_output, label_key, problem_type, epochs, seed,
              callbacks=()):
    from kfx_components.common import model as M

    plan = M.fit_plan(M.count_examples(transformed_examples_dir, "train"), epochs)
    train = M.make_dataset(transformed_examples_dir, "train", transform_output, label_key,
                           batch_size=plan["batch_size"], shuffle=True, repeat=True, seed=seed,
                           problem_type=problem_type)
    model.fit(train, epochs=plan["epochs"], steps_per_epoch=plan["steps_per_epoch"], verbose=0,
              callbacks=list(callbacks))
    return plan


def pruned_model(model_dir, transformed_examples_dir, transform_output, label_key, problem_type,
                 sparsity: float, epochs: int, seed: int):
    """(stripped Keras model with ``sparsity`` of its Dense/Embedding kernels zero, facts)."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    from kfx_components.common import model as M

    core = _keras_core(model_dir, transform_output, label_key)
    plan = M.fit_plan(M.count_examples(transformed_examples_dir, "train"), epochs)
    steps = plan["epochs"] * plan["steps_per_epoch"]
    schedule = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=float(sparsity),
                                                    begin_step=0, end_step=max(1, int(steps * 0.7)),
                                                    frequency=max(1, steps // 20))

    def wrap(layer):
        if isinstance(layer, (tf.keras.layers.Dense, tf.keras.layers.Embedding)):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    pruning = tf.keras.models.clone_model(core, clone_function=wrap)
    _compile(pruning, problem_type)
    _finetune(pruning, transformed_examples_dir, transform_output, label_key, problem_type, epochs, seed,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruning)
    kernels = [w.numpy() for layer in stripped.layers
               if isinstance(layer, (tf.keras.layers.Dense, tf.keras.layers.Embedding))
               for w in layer.weights if w.name.split("/")[-1].split(":")[0] in ("kernel", "embeddings")]
    zeros = sum(int(np.sum(k == 0)) for k in kernels)
    total = sum(int(k.size) for k in kernels)
    return stripped, {"target_sparsity": float(sparsity), "sparsity": round(zeros / max(1, total), 4),
                      "pruned_weights": int(total), "finetune_steps": int(steps),
                      "schedule": f"PolynomialDecay 0 -> {float(sparsity):g} over {int(steps * 0.7)} steps"}


def qat_model(model_dir, transformed_examples_dir, transform_output, label_key, problem_type,
              epochs: int, seed: int):
    """(quantization-aware fine-tuned Keras model, facts): Dense layers annotated, embeddings not."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    core = _keras_core(model_dir, transform_output, label_key)
    annotated_layers = []

    def annotate(layer):
        if isinstance(layer, tf.keras.layers.Dense):
            annotated_layers.append(layer.name)
            return tfmot.quantization.keras.quantize_annotate_layer(layer)
        return layer

    annotated = tf.keras.models.clone_model(core, clone_function=annotate)
    with tfmot.quantization.keras.quantize_scope():
        qat = tfmot.quantization.keras.quantize_apply(annotated)
    _compile(qat, problem_type)
    plan = _finetune(qat, transformed_examples_dir, transform_output, label_key, problem_type, epochs, seed)
    skipped = sorted({type(layer).__name__ for layer in core.layers
                      if isinstance(layer, tf.keras.layers.Embedding)})
    return qat, {"annotated_layers": annotated_layers,
                 "not_annotated": skipped,
                 "finetune_steps": int(plan["epochs"] * plan["steps_per_epoch"]),
                 "why": ("tfmot quantize_model rejects Embedding layers: the Dense layers are annotated "
                         "(quantize_annotate_layer) and trained with fake quantization; the embeddings are "
                         "quantized post-training by the full-int8 conversion")}


def run(model_dir: str, transformed_examples_dir: str, transform_graph_dir: str, quantized_dir: str,
        label_key: str, problem_type: str, num_classes: int, tolerance: float = 0.02,
        examples_dir: str = "", pruning_sparsity: float = 0.5, qat: bool = True,
        finetune_epochs: int = 2, seed: int = 42) -> dict:
    """Convert, score, time and gate every variant; see the module doc."""
    start = time.time()
    _check_arguments(model_dir, problem_type, tolerance, pruning_sparsity, finetune_epochs, examples_dir)
    ref = _reference(model_dir, transformed_examples_dir, transform_graph_dir, label_key, problem_type,
                     examples_dir)
    representative, n_rep = _representative(transformed_examples_dir, ref, label_key)
    # Built aside and moved into quantized_dir only when every variant converted and ran.
    with io.Staging() as stage:
        out_dir = stage.dir(quantized_dir)
        blobs, training = _convert_all(model_dir, transformed_examples_dir, ref.transform_output, label_key,
                                       problem_type, representative, float(pruning_sparsity), bool(qat),
                                       int(finetune_epochs), int(seed))
        variants, rejected = _score(blobs, training, out_dir, ref, problem_type, float(tolerance))
        summary = _summary(ref, variants, rejected, _notes(variants, training), problem_type,
                           int(num_classes), float(tolerance), n_rep)
        with open(os.path.join(out_dir, "quantization.json"), "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
    summary["seconds"] = round(time.time() - start, 2)
    return summary


def _check_arguments(model_dir: str, problem_type: str, tolerance, pruning_sparsity, finetune_epochs,
                     examples_dir: str) -> None:
    """One clear error per bad parameter, before anything is loaded."""
    problem.check_problem_type(problem_type)
    problem.require_saved_model(model_dir, "model_dir")
    if not 0.0 <= float(tolerance) < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    if not 0.0 <= float(pruning_sparsity) < 1.0:
        raise ValueError(f"pruning_sparsity must be in [0, 1) (0: no pruned variant), got {pruning_sparsity!r}")
    if int(finetune_epochs) != finetune_epochs or int(finetune_epochs) < 1:
        raise ValueError(f"finetune_epochs must be an integer >= 1, got {finetune_epochs!r}")
    if examples_dir and not os.path.isfile(io.split_file(examples_dir, io.TEST)):
        raise ValueError(f"examples_dir {examples_dir!r} has no test split ({io.split_file(examples_dir, io.TEST)})")


@dataclasses.dataclass
class _Reference:
    """The float SavedModel on the test split: what every variant is scored and timed against."""
    transform_output: object
    input_spec: dict    # the signature's {name: tf.TensorSpec}
    eval_x: dict        # test features keyed by the signature's inputs
    eval_y: object      # test labels
    logits: object      # the SavedModel's logits on eval_x
    facts: dict         # quantization.json's "reference": metric, sizes, latency

    @property
    def n_eval(self) -> int:
        return len(self.eval_y)


def _reference(model_dir: str, transformed_examples_dir: str, transform_graph_dir: str, label_key: str,
               problem_type: str, examples_dir: str) -> _Reference:
    """Load the SavedModel and the test split; score and time the SavedModel."""
    import tensorflow as tf

    from kfx_components.common import model as M

    transform_output = M.load_transform_output(transform_graph_dir)
    M.transformed_feature_spec(transform_output, label_key)  # raises naming label_key if absent

    loaded = tf.saved_model.load(model_dir)
    if SIGNATURE not in loaded.signatures:
        raise ValueError(f"model {model_dir!r} has no {SIGNATURE!r} signature "
                         f"(has {sorted(loaded.signatures)})")
    signature = loaded.signatures[SIGNATURE]
    input_spec = signature_input_spec(signature)

    eval_x, eval_y = load_split(transformed_examples_dir, io.TEST, transform_output, input_spec, label_key)
    if len(eval_y) == 0:
        raise ValueError(f"test split of {transformed_examples_dir} is empty")
    logits = saved_model_logits(signature, eval_x, len(eval_y))
    records = ([r for _, r in zip(range(LATENCY_BATCH), io.read_records(io.split_file(examples_dir, io.TEST)))]
               if examples_dir else [])
    facts = {
        "metric": M.metric_from_logits(problem_type, eval_y, logits),
        "saved_model_bytes": _dir_bytes(model_dir),
        "variables_bytes": _dir_bytes(os.path.join(model_dir, "variables")),
        "latency": saved_model_latency(signature, eval_x,
                                       loaded.signatures.get(problem.SERVING_SIGNATURE), records),
    }
    return _Reference(transform_output, input_spec, eval_x, eval_y, logits, facts)


def _representative(transformed_examples_dir: str, ref: _Reference, label_key: str):
    """(int8 calibration generator over the first train examples, how many examples it yields)."""
    rep_x, _ = load_split(transformed_examples_dir, "train", ref.transform_output, ref.input_spec, label_key,
                          limit=REPRESENTATIVE_SAMPLES)
    n_rep = len(next(iter(rep_x.values())))

    def representative():
        for i in range(n_rep):
            yield {k: v[i:i + 1] for k, v in rep_x.items()}

    return representative, n_rep


def _convert_all(model_dir: str, transformed_examples_dir: str, transform_output, label_key: str,
                 problem_type: str, representative, pruning_sparsity: float, qat: bool, finetune_epochs: int,
                 seed: int) -> tuple[dict, dict]:
    """({variant: TFLite flatbuffer}, {trained variant: its training facts}): the post-training
    variants, then the pruned (``pruning_sparsity`` > 0) and QAT (``qat``) ones."""
    import shutil
    import tempfile

    import tensorflow as tf

    from kfx_components.common import model as M

    blobs, training = {}, {}
    for name in POST_TRAINING:
        blobs[name] = _convert_or_raise(model_dir, name, representative if name == "int8" else None)
    scratch = tempfile.mkdtemp(prefix="kfx-quantize-")  # the fine-tuned SavedModels, converted from disk
    try:
        if pruning_sparsity > 0:
            tf.keras.utils.set_random_seed(seed)
            model, training["pruned"] = pruned_model(model_dir, transformed_examples_dir, transform_output,
                                                     label_key, problem_type, pruning_sparsity,
                                                     finetune_epochs, seed)
            path = M.export_serving_model(model, transform_output, label_key, problem_type,
                                          os.path.join(scratch, "pruned"))
            blobs["pruned"] = _convert_or_raise(path, "dynamic_range", None, label="pruned")
        if qat:
            tf.keras.utils.set_random_seed(seed)
            model, training["qat"] = qat_model(model_dir, transformed_examples_dir, transform_output,
                                               label_key, problem_type, finetune_epochs, seed)
            path = M.export_serving_model(model, transform_output, label_key, problem_type,
                                          os.path.join(scratch, "qat"))
            blobs["qat"] = _convert_or_raise(path, "int8", representative, label="qat")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return blobs, training


def _score(blobs: dict, training: dict, out_dir: str, ref: _Reference, problem_type: str,
           tolerance: float) -> tuple[dict, dict]:
    """({variant: facts} published, {variant: why} rejected): each blob written to ``out_dir``, scored
    on test, gated on ``tolerance`` (a rejected file is removed) and described; ratios to float32."""
    from kfx_components.common import model as M

    variants, rejected = {}, {}
    primary = problem.primary_metric(problem_type)
    float32_weights = weight_bytes(blobs["float32"])
    for name, blob in blobs.items():
        path = os.path.join(out_dir, f"{name}.tflite")
        with open(path, "wb") as f:
            f.write(blob)
        logits = tflite_logits(path, ref.eval_x, ref.n_eval)
        value = M.metric_from_logits(problem_type, ref.eval_y, logits)
        if problem.worse_by_more_than(value, ref.facts["metric"], problem_type, tolerance):
            os.remove(path)
            rejected[name] = (f"{primary} {value:.4f} is worse than the SavedModel's "
                              f"{ref.facts['metric']:.4f} by more than the tolerance {tolerance:g}")
            continue
        variants[name] = _describe(path, blob, value, logits, ref, float32_weights, training.get(name))
    base = variants.get("float32")
    if base:
        for v in variants.values():
            v["size_ratio_to_float32"] = round(v["size_bytes"] / base["size_bytes"], 4)
            v["latency_ratio_to_float32"] = round(
                v["latency"]["single_invoke"]["median_ms"]
                / max(1e-9, base["latency"]["single_invoke"]["median_ms"]), 4)
    return variants, rejected


def _describe(path: str, blob: bytes, value: float, logits, ref: _Reference, float32_weights: int,
              training: dict | None) -> dict:
    """A published variant's facts: sizes, metric, distance to the SavedModel, latency, tensors."""
    import numpy as np

    return {
        "file": os.path.basename(path),
        "size_bytes": len(blob),
        "gzip_bytes": gzip_bytes(blob),
        "weight_bytes": weight_bytes(blob),
        "weight_ratio_to_float32": round(weight_bytes(blob) / max(1, float32_weights), 4),
        "metric": value,
        "metric_delta": value - ref.facts["metric"],
        "max_abs_logit_diff": float(np.max(np.abs(logits - ref.logits))),
        "latency": tflite_latency(path, ref.eval_x),
        "tensors": tensor_dtypes(path),
        **({"training": training} if training is not None else {}),
    }


def _notes(variants: dict, training: dict) -> dict:
    """What each special variant is, in a sentence."""
    notes = {}
    if "int8" in variants:
        int8_inputs = variants["int8"]["tensors"]["inputs"]
        notes["int8"] = ("full integer (TFLITE_BUILTINS_INT8 only): float inputs, weights, activations "
                         "and output are int8; integer index inputs stay " +
                         ", ".join(sorted({v for v in int8_inputs.values() if v != "int8"}) or ["-"]) +
                         " (they index embeddings, they are not quantized values)")
    if "qat" in training:
        notes["qat"] = training["qat"]["why"]
    if "pruned" in training:
        notes["pruned"] = (f"{training['pruned']['sparsity']:.0%} of the Dense/Embedding weights are zero "
                           "(magnitude pruning, stripped); dynamic-range conversion; the gzipped size "
                           "shows what the zeros save")
    return notes


def _summary(ref: _Reference, variants: dict, rejected: dict, notes: dict, problem_type: str, num_classes: int,
             tolerance: float, n_rep: int) -> dict:
    """quantization.json: the reference, the variants, the rejected ones and the recommended one."""
    primary = problem.primary_metric(problem_type)
    recommended = min(variants, key=lambda k: (variants[k]["size_bytes"], -variants[k]["metric"])) \
        if variants else ""
    return {
        "signature": SIGNATURE,
        "primary_metric": primary,
        "problem_type": problem_type,
        "num_classes": num_classes,
        "test_rows": int(ref.n_eval),
        "tolerance": tolerance,
        "representative_samples": int(n_rep),
        "reference": ref.facts,
        "variants": variants,
        "rejected": rejected,
        "recommended": recommended,
        "recommendation": _recommendation(recommended, variants, ref.facts, primary, tolerance),
        "notes": notes,
    }


def _convert_or_raise(model_dir: str, variant: str, representative, label: str = "") -> bytes:
    try:
        return convert(model_dir, variant, representative)
    except Exception as err:  # say precisely which variant could not be built and why
        raise RuntimeError(f"TFLite {label or variant} conversion of {model_dir} ({SIGNATURE}) failed: {err}") from err


def _recommendation(name: str, variants: dict, reference: dict, primary: str, tolerance: float) -> str:
    if not name:
        return "no variant is within the tolerance: serve the SavedModel"
    v = variants[name]
    base = variants.get("float32")
    vs = (f", {v['size_bytes'] / base['size_bytes']:.2f}x the float32 TFLite file"
          f" and {v.get('latency_ratio_to_float32', 0):.2f}x its single-example latency") if base else ""
    return (f"{name}: the smallest variant within the tolerance {tolerance:g} ({v['size_bytes']:,} bytes{vs}; "
            f"{primary} {v['metric']:.4f} vs the SavedModel's {reference['metric']:.4f})")
