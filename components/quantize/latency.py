"""Latency, single-example and batch, of a .tflite file and of the SavedModel it stands in for, on the
same transformed test inputs (one interpreter thread)."""
from __future__ import annotations

import time

from kfx_components.quantize import tflite

LATENCY_BATCH = 256
LATENCY_SINGLE_CALLS = 300
LATENCY_BATCH_CALLS = 20


def timed(call, repeats: int) -> dict:
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


def _batch_size(features: dict, batch_size: int) -> int:
    return int(min(batch_size, len(next(iter(features.values())))))


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
        in_details = interpreter.get_signature_runner(tflite.SIGNATURE).get_input_details()
        feed = tflite.feed(in_details, {k: v[:size] for k, v in features.items()})
        for name, value in feed.items():
            interpreter.resize_tensor_input(in_details[name]["index"], list(value.shape))
        interpreter.allocate_tensors()
        for name, value in feed.items():
            interpreter.set_tensor(in_details[name]["index"], value)
        out[f"{label}_invoke"] = timed(interpreter.invoke, repeats)
        if label == "single":
            runner = tf.lite.Interpreter(model_path=model_path, num_threads=1).get_signature_runner(
                tflite.SIGNATURE)
            out["single_call"] = timed(lambda: runner(**feed), repeats)
    out["batch_size"] = _batch_size(features, batch_size)
    return out


def saved_model_latency(signature, features: dict, serving=None, records=None,
                        batch_size: int = LATENCY_BATCH) -> dict:
    """The SavedModel's latency: ``transformed_logits`` on the transformed inputs and, with
    ``serving`` and raw ``records``, ``serving_default`` end to end (parsing + TFT + model)."""
    import tensorflow as tf

    out = {}
    one = {k: tf.constant(v[:1]) for k, v in features.items()}
    many = {k: tf.constant(v[:batch_size]) for k, v in features.items()}
    out["transformed_single"] = timed(lambda: signature(**one), LATENCY_SINGLE_CALLS // 3)
    out["transformed_batch"] = timed(lambda: signature(**many), LATENCY_BATCH_CALLS)
    if serving is not None and records:
        one_raw, many_raw = tf.constant(records[:1]), tf.constant(records[:batch_size])
        out["end_to_end_single"] = timed(lambda: serving(examples=one_raw), LATENCY_SINGLE_CALLS // 3)
        out["end_to_end_batch"] = timed(lambda: serving(examples=many_raw), LATENCY_BATCH_CALLS)
    out["batch_size"] = _batch_size(features, batch_size)
    return out
