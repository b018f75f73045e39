"""quantization.json: the reference, the published and rejected variants, the recommended one (the
smallest published variant) and a sentence on what each special variant is."""
from __future__ import annotations

from kfx_components.common import problem
from kfx_components.quantize import tflite
from kfx_components.quantize.scoring import Reference


def _notes(variants: dict, training: dict, not_trained: dict) -> dict:
    """What each special variant is, or why it was not trained, in a sentence."""
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
    return {**notes, **not_trained}


def summary(ref: Reference, variants: dict, rejected: dict, training: dict, not_trained: dict, problem_type: str,
            num_classes: int, tolerance: float, n_rep: int) -> dict:
    """quantization.json: the reference, the variants, the rejected ones and the recommended one;
    ``training``: the trained variants' facts, {variant: facts}; ``not_trained``: {variant: why not}."""
    primary = problem.primary_metric(problem_type)
    recommended = min(variants, key=lambda k: (variants[k]["size_bytes"], -variants[k]["metric"])) \
        if variants else ""
    return {
        "signature": tflite.SIGNATURE,
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
        "notes": _notes(variants, training, not_trained),
    }


def _recommendation(name: str, variants: dict, reference: dict, primary: str, tolerance: float) -> str:
    if not name:
        return "no variant is within the tolerance: serve the SavedModel"
    v = variants[name]
    base = variants.get("float32")
    vs = (f", {v['size_bytes'] / base['size_bytes']:.2f}x the float32 TFLite file"
          f" and {v.get('latency_ratio_to_float32', 0):.2f}x its single-example latency") if base else ""
    return (f"{name}: the smallest variant within the tolerance {tolerance:g} ({v['size_bytes']:,} bytes{vs}; "
            f"{primary} {v['metric']:.4f} vs the SavedModel's {reference['metric']:.4f})")
