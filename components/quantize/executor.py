"""Quantize: TFLite conversions of a model's ``transformed_logits`` signature.

The converted function takes the *transformed* feature tensors (see
docs/design.md, artifact "model"), so no tf.Example parsing and no TFT ops end
up inside TFLite. Three variants are written to ``quantized_dir``:

- ``dynamic_range.tflite``: weights int8, activations float (no calibration data);
- ``float16.tflite``: weights float16;
- ``int8.tflite``: full integer (TFLITE_BUILTINS_INT8 only, int8 float-inputs,
  int8 weights and activations, int8 output), calibrated on the train split.
  Integer index inputs (categorical features) stay int64: they are indices,
  not quantizable values.

Each variant is run with ``tf.lite.Interpreter`` over the test split and scored
with the same metric as the float SavedModel (AUC for binary, accuracy for
multiclass, RMSE for regression). A variant whose metric is worse than the
SavedModel's by more than ``tolerance`` (relative) is not published: its file
is not written, and ``rejected`` says why. A ``quantization.json`` summary is
written.
"""
from __future__ import annotations

import json
import os
import time


from kfx_components.common import io, problem

SIGNATURE = problem.LOGITS_SIGNATURE
VARIANTS = ("dynamic_range", "float16", "int8")
REPRESENTATIVE_SAMPLES = 300
EVAL_BATCH = 512


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
        feed = {}
        for name, value in batch.items():
            d = in_details[name]
            if d["dtype"] in (np.int8, np.uint8, np.int16) and np.issubdtype(value.dtype, np.floating):
                feed[name] = _quantize(value, d)
            else:
                feed[name] = value.astype(d["dtype"])
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
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(model_dir, signature_keys=[SIGNATURE])
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


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def run(model_dir: str, transformed_examples_dir: str, transform_graph_dir: str, quantized_dir: str,
        label_key: str, problem_type: str, num_classes: int, tolerance: float = 0.02) -> dict:
    start = time.time()
    problem.check_problem_type(problem_type)
    problem.require_saved_model(model_dir, "model_dir")
    if not 0.0 <= float(tolerance) < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")

    import numpy as np
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
    n_eval = len(eval_y)
    if n_eval == 0:
        raise ValueError(f"test split of {transformed_examples_dir} is empty")
    primary = problem.primary_metric(problem_type)
    ref_logits = saved_model_logits(signature, eval_x, n_eval)
    reference = {
        "metric": M.metric_from_logits(problem_type, eval_y, ref_logits),
        "saved_model_bytes": _dir_bytes(model_dir),
        "variables_bytes": _dir_bytes(os.path.join(model_dir, "variables")),
    }

    rep_x, _ = load_split(transformed_examples_dir, "train", transform_output, input_spec, label_key,
                          limit=REPRESENTATIVE_SAMPLES)
    n_rep = len(next(iter(rep_x.values())))

    def representative():
        for i in range(n_rep):
            yield {k: v[i:i + 1] for k, v in rep_x.items()}

    # Built aside and moved into quantized_dir only when every variant converted and ran.
    with io.Staging() as stage:
        out_dir = stage.dir(quantized_dir)
        variants, rejected = {}, {}
        for name in VARIANTS:
            path = os.path.join(out_dir, f"{name}.tflite")
            try:
                blob = convert(model_dir, name, representative if name == "int8" else None)
            except Exception as err:  # say precisely which variant could not be built and why
                raise RuntimeError(f"TFLite {name} conversion of {model_dir} ({SIGNATURE}) failed: {err}") from err
            with open(path, "wb") as f:
                f.write(blob)
            logits = tflite_logits(path, eval_x, n_eval)
            value = M.metric_from_logits(problem_type, eval_y, logits)
            if problem.worse_by_more_than(value, reference["metric"], problem_type, float(tolerance)):
                os.remove(path)
                rejected[name] = (f"{primary} {value:.4f} is worse than the SavedModel's "
                                  f"{reference['metric']:.4f} by more than the tolerance {float(tolerance):g}")
                continue
            variants[name] = {
                "file": os.path.basename(path),
                "size_bytes": os.path.getsize(path),
                "metric": value,
                "metric_delta": value - reference["metric"],
                "max_abs_logit_diff": float(np.max(np.abs(logits - ref_logits))),
                "tensors": tensor_dtypes(path),
            }

        notes = {}
        if "int8" in variants:
            int8_inputs = variants["int8"]["tensors"]["inputs"]
            notes["int8"] = ("full integer (TFLITE_BUILTINS_INT8 only): float inputs, weights, activations "
                             "and output are int8; integer index inputs stay " +
                             ", ".join(sorted({v for v in int8_inputs.values() if v != "int8"}) or ["-"]) +
                             " (they index embeddings, they are not quantized values)")
        summary = {
            "signature": SIGNATURE,
            "primary_metric": primary,
            "problem_type": problem_type,
            "num_classes": int(num_classes),
            "test_rows": int(n_eval),
            "tolerance": float(tolerance),
            "representative_samples": int(n_rep),
            "reference": reference,
            "variants": variants,
            "rejected": rejected,
            "notes": notes,
        }
        with open(os.path.join(out_dir, "quantization.json"), "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
    summary["seconds"] = round(time.time() - start, 2)
    return summary
