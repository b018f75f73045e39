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

``pruned`` and ``qat`` are fine-tuned only when post-training ``int8`` is rejected by the accuracy gate
(``finetune_when="int8_rejected"``, the default, as TFLite's model-optimization guide advises: they cost
most of the step and exist to win back what int8 lost), or always (``finetune_when="always"``); a
variant not trained says why in ``notes``. ``pruning_sparsity=0`` and ``qat=False`` turn them off.

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

``stands_in_for_dir``: the model pushed, when ``model_dir`` is the edge variant standing in for it (distill's
network student of a forest): it is scored on the same test rows (``reference.stands_in_for``) and a variant
must be within ``tolerance`` of it too.

A TF-DF forest has no variant (``no_edge_variant`` says why, ``recommended`` is None): its
inference ops (``SimpleML*``) are not TFLite builtins, so nothing is converted; the SavedModel is
still scored and timed (``reference``).

Modules: ``splits`` (the transformed splits as the signature's inputs, calibration data),
``tflite`` (conversion, running a file, its facts), ``finetune`` (pruning and QAT), ``latency``,
``scoring`` (the reference and the accuracy gate) and ``summary`` (quantization.json, the choice).
"""
from __future__ import annotations

import json
import os
import time

from kfx_components.common import io, problem
from kfx_formats import choices, saved_model
from kfx_components.quantize import finetune, scoring, splits, summary, tflite

# Why a forest has no edge variant: quantization.json's "no_edge_variant", the card's "quantized_none" (push).
NO_EDGE_VARIANT = ("a TF-DF forest has no TFLite form (its SimpleML* inference ops are not TFLite builtins): "
                   "the edge variant is distill's network student, and quantize is given the forest only "
                   "when that student fell short of it")


def run(model_dir: str, transformed_examples_dir: str, transform_graph_dir: str, quantized_dir: str,
        label_key: str, problem_type: str, num_classes: int, tolerance: float = 0.02,
        examples_dir: str = "", pruning_sparsity: float = 0.5, qat: bool = True,
        finetune_epochs: int = 2, finetune_when: str = "int8_rejected", seed: int = 42,
        stands_in_for_dir: str = "") -> dict:
    """Convert, score, time and gate every variant; see the module doc."""
    start = time.time()
    _check_arguments(model_dir, problem_type, tolerance, pruning_sparsity, finetune_epochs, finetune_when,
                     examples_dir)
    ref = scoring.reference(model_dir, transformed_examples_dir, transform_graph_dir, label_key, problem_type,
                            examples_dir)
    if stands_in_for_dir and saved_model.family(stands_in_for_dir) != saved_model.family(model_dir):
        scoring.stand_in(ref, stands_in_for_dir, problem_type)
    if saved_model.family(model_dir) == saved_model.FAMILY_FOREST:
        facts = {**summary.summary(ref, {}, {}, {}, {}, problem_type, int(num_classes), float(tolerance), 0),
                 "recommended": None, "recommendation": "no edge variant: serve the SavedModel (a TF-DF forest)",
                 "no_edge_variant": NO_EDGE_VARIANT}
        with io.Staging() as stage:
            _write(stage.dir(quantized_dir), facts)
        facts["seconds"] = round(time.time() - start, 2)
        return facts
    representative, n_rep = splits.representative(transformed_examples_dir, ref.transform_output,
                                                  ref.input_spec, label_key)
    # Built aside and moved into quantized_dir only when every variant converted and ran.
    with io.Staging() as stage:
        out_dir = stage.dir(quantized_dir)
        blobs = tflite.post_training(model_dir, ref.saved_model, representative)
        float32_weights = tflite.weight_bytes(blobs["float32"])
        variants, rejected = scoring.score(blobs, {}, out_dir, ref, problem_type, float(tolerance), float32_weights)
        wanted = [name for name, on in (("pruned", float(pruning_sparsity) > 0), ("qat", bool(qat))) if on]
        training, not_trained = {}, {}
        if wanted and (finetune_when == "always" or "int8" in rejected):
            trained, training = finetune.trained_variants(
                model_dir, transformed_examples_dir, ref.transform_output, label_key, problem_type, representative,
                float(pruning_sparsity), bool(qat), int(finetune_epochs), int(seed))
            published, failed = scoring.score(trained, training, out_dir, ref, problem_type, float(tolerance),
                                              float32_weights)
            variants.update(published)
            rejected.update(failed)
        else:
            not_trained = {name: (f"not trained: post-training int8 accepted within the tolerance {float(tolerance):g} "
                                  f"(finetune_when={finetune_when!r})") for name in wanted}
        scoring.relate_to_float32(variants)
        facts = summary.summary(ref, variants, rejected, training, not_trained, problem_type, int(num_classes),
                                float(tolerance), n_rep)
        _write(out_dir, facts)
    facts["seconds"] = round(time.time() - start, 2)
    return facts


def _write(out_dir: str, facts: dict) -> None:
    with open(os.path.join(out_dir, "quantization.json"), "w") as f:
        json.dump(facts, f, indent=2, sort_keys=True)


def _check_arguments(model_dir: str, problem_type: str, tolerance, pruning_sparsity, finetune_epochs,
                     finetune_when, examples_dir: str) -> None:
    """One clear error per bad parameter, before anything is loaded."""
    problem.check_problem_type(problem_type)
    problem.require_saved_model(model_dir, "model_dir")
    if not 0.0 <= float(tolerance) < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    if not 0.0 <= float(pruning_sparsity) < 1.0:
        raise ValueError(f"pruning_sparsity must be in [0, 1) (0: no pruned variant), got {pruning_sparsity!r}")
    if int(finetune_epochs) != finetune_epochs or int(finetune_epochs) < 1:
        raise ValueError(f"finetune_epochs must be an integer >= 1, got {finetune_epochs!r}")
    choices.check("finetune_when", finetune_when, choices.FINETUNE_WHEN)
    if examples_dir and not os.path.isfile(io.split_file(examples_dir, io.TEST)):
        raise ValueError(f"examples_dir {examples_dir!r} has no test split ({io.split_file(examples_dir, io.TEST)})")

