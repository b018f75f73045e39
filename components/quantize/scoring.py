"""The accuracy check: the float SavedModel scored and timed on the test split (the reference), and each
variant scored on the same rows with the same metric (AUC, accuracy or RMSE); a variant worse than the
reference by more than the tolerance (relative) is not published; nor is one that falls that far short of
the model its SavedModel stands in for (``stand_in``: a forest whose distilled student was converted)."""
from __future__ import annotations

import dataclasses
import os

from kfx_components.common import io, problem
from kfx_formats import saved_model
from kfx_components.quantize import latency, splits, tflite


@dataclasses.dataclass
class Reference:
    """The float SavedModel on the test split: what every variant is scored and timed against."""
    saved_model: object  # loading.load_model(model_dir): the post-training conversions reuse it
    transform_output: object
    input_spec: dict    # the signature's {name: tf.TensorSpec}
    eval_x: dict        # test features keyed by the signature's inputs
    eval_y: object      # test labels
    logits: object      # the SavedModel's logits on eval_x
    facts: dict         # quantization.json's "reference": metric, sizes, latency

    @property
    def n_eval(self) -> int:
        return len(self.eval_y)


def saved_model_logits(signature, features: dict, n: int):
    import numpy as np

    out = [signature(**batch)["logits"].numpy() for batch in splits.batches(features, n, tflite.EVAL_BATCH)]
    return np.concatenate(out)


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def reference(model_dir: str, transformed_examples_dir: str, transform_graph_dir: str, label_key: str,
              problem_type: str, examples_dir: str) -> Reference:
    """Load the SavedModel and the test split; score and time the SavedModel."""
    from kfx_components.common import model as M
    from kfx_components.common import loading

    transform_output = M.load_transform_output(transform_graph_dir)
    M.transformed_feature_spec(transform_output, label_key)  # raises naming label_key if absent

    loaded = loading.load_model(model_dir)
    if tflite.SIGNATURE not in loaded.signatures:
        raise ValueError(f"model {model_dir!r} has no {tflite.SIGNATURE!r} signature "
                         f"(has {sorted(loaded.signatures)})")
    signature = loaded.signatures[tflite.SIGNATURE]
    input_spec = splits.signature_input_spec(signature)

    eval_x, eval_y = splits.load_split(transformed_examples_dir, io.TEST, transform_output, input_spec, label_key)
    if len(eval_y) == 0:
        raise ValueError(f"test split of {transformed_examples_dir} is empty")
    logits = saved_model_logits(signature, eval_x, len(eval_y))
    records = ([r for _, r in zip(range(latency.LATENCY_BATCH),
                                  io.read_records(io.split_file(examples_dir, io.TEST)))]
               if examples_dir else [])
    facts = {
        "metric": M.metric_from_logits(problem_type, eval_y, logits),
        "saved_model_bytes": _dir_bytes(model_dir),
        "variables_bytes": _dir_bytes(os.path.join(model_dir, "variables")),
        "latency": latency.saved_model_latency(signature, eval_x,
                                               loaded.signatures.get(problem.SERVING_SIGNATURE), records),
    }
    return Reference(loaded, transform_output, input_spec, eval_x, eval_y, logits, facts)


def score(blobs: dict, training: dict, out_dir: str, ref: Reference, problem_type: str,
          tolerance: float, float32_weights: int) -> tuple[dict, dict]:
    """({variant: facts} published, {variant: why} rejected): each blob written to ``out_dir``, scored
    on test, gated on ``tolerance`` (a rejected file is removed) and described; ``float32_weights``: the
    float32 file's weight bytes, what each variant's are compared with."""
    from kfx_components.common import model as M

    variants, rejected = {}, {}
    primary = problem.primary_metric(problem_type)
    for name, blob in blobs.items():
        path = os.path.join(out_dir, f"{name}.tflite")
        with open(path, "wb") as f:
            f.write(blob)
        logits = tflite.logits(path, ref.eval_x, ref.n_eval)
        value = M.metric_from_logits(problem_type, ref.eval_y, logits)
        why = _short_of(value, ref.facts, problem_type, tolerance)
        if why:
            os.remove(path)
            rejected[name] = f"{primary} {value:.4f} is worse than {why} by more than the tolerance {tolerance:g}"
            continue
        variants[name] = _describe(path, blob, value, logits, ref, float32_weights, training.get(name))
    return variants, rejected


def stand_in(ref: Reference, model_dir: str, problem_type: str) -> None:
    """Score on the same test rows the model the converted one stands in for (distill's forest, when its
    network student is the edge variant): ``ref.facts["stands_in_for"]``, a second bar every variant meets.
    Both models take the same transformed features (``model.signature_args``): the test rows ``ref`` read
    are fed to it as they are."""
    from kfx_components.common import model as M
    from kfx_components.common import loading

    signature = loading.load_model(model_dir).signatures[tflite.SIGNATURE]
    logits = saved_model_logits(signature, ref.eval_x, ref.n_eval)
    ref.facts["stands_in_for"] = {"family": saved_model.family(model_dir),
                                  "metric": M.metric_from_logits(problem_type, ref.eval_y, logits)}


def _short_of(value: float, facts: dict, problem_type: str, tolerance: float) -> str:
    """What a variant's metric falls short of beyond the tolerance ("" when nothing): the SavedModel it
    was converted from, or the model that SavedModel stands in for."""
    if problem.worse_by_more_than(value, facts["metric"], problem_type, tolerance):
        return f"the SavedModel's {facts['metric']:.4f}"
    stood_for = facts.get("stands_in_for")
    if stood_for and problem.worse_by_more_than(value, stood_for["metric"], problem_type, tolerance):
        return f"the {stood_for['metric']:.4f} of the {stood_for['family']} it stands in for"
    return ""


def relate_to_float32(variants: dict) -> None:
    """Each published variant's size and single-example latency as ratios to the float32 file's."""
    base = variants.get("float32")
    if base:
        for v in variants.values():
            v["size_ratio_to_float32"] = round(v["size_bytes"] / base["size_bytes"], 4)
            v["latency_ratio_to_float32"] = round(
                v["latency"]["single_invoke"]["median_ms"]
                / max(1e-9, base["latency"]["single_invoke"]["median_ms"]), 4)


def _describe(path: str, blob: bytes, value: float, logits, ref: Reference, float32_weights: int,
              training: dict | None) -> dict:
    """A published variant's facts: sizes, metric, distance to the SavedModel, latency, tensors."""
    import numpy as np

    return {
        "file": os.path.basename(path),
        "size_bytes": len(blob),
        "gzip_bytes": tflite.gzip_bytes(blob),
        "weight_bytes": tflite.weight_bytes(blob),
        "weight_ratio_to_float32": round(tflite.weight_bytes(blob) / max(1, float32_weights), 4),
        "metric": value,
        "metric_delta": value - ref.facts["metric"],
        "max_abs_logit_diff": float(np.max(np.abs(logits - ref.logits))),
        "latency": latency.tflite_latency(path, ref.eval_x),
        "tensors": tflite.tensor_dtypes(path),
        **({"training": training} if training is not None else {}),
    }
