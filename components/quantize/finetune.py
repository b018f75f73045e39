"""Pruning and quantization-aware training (tensorflow-model-optimization) of the SavedModel's Keras
graph, fine-tuned on the train split, then its ``transformed_logits`` signature saved alone and
converted: the ``pruned`` (dynamic range) and ``qat`` (full int8) variants."""
from __future__ import annotations

import os

from kfx_components.quantize import tflite

FINETUNE_LEARNING_RATE = 3e-4


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


def _logits_saved_model(model, transform_output, label_key: str, export_dir: str):
    """(``export_dir``, loaded): a SavedModel of ``model``'s ``transformed_logits`` signature alone, what the
    conversion reads. ``export_serving_model`` also traces the TFT layer, the serving signature and every
    Keras layer's functions, which the TFLite file does not hold; a tf.Module over the model's variables
    saves only the signature (the same function: ``model.transformed_logits_function``)."""
    import tensorflow as tf

    from kfx_components.common import model as M

    holder = tf.Module()
    holder.model_variables = list(model.variables)  # tracked, so the signature's captures are saved
    signature = M.transformed_logits_function(model, transform_output, label_key)
    tf.saved_model.save(holder, export_dir, signatures={tflite.SIGNATURE: signature})
    return export_dir, tf.saved_model.load(export_dir)


def trained_variants(model_dir: str, transformed_examples_dir: str, transform_output, label_key: str,
                     problem_type: str, representative, pruning_sparsity: float, qat: bool, finetune_epochs: int,
                     seed: int) -> tuple[dict, dict]:
    """({variant: TFLite flatbuffer}, {variant: its training facts}) of the pruned (``pruning_sparsity``
    > 0) and QAT (``qat``) variants, each fine-tuned from the same seed."""
    import shutil
    import tempfile

    import tensorflow as tf

    blobs, training = {}, {}
    scratch = tempfile.mkdtemp(prefix="kfx-quantize-")  # the fine-tuned signatures, converted from disk
    try:
        if pruning_sparsity > 0:
            tf.keras.utils.set_random_seed(seed)
            model, training["pruned"] = pruned_model(model_dir, transformed_examples_dir, transform_output,
                                                     label_key, problem_type, pruning_sparsity,
                                                     finetune_epochs, seed)
            path, loaded = _logits_saved_model(model, transform_output, label_key, os.path.join(scratch, "pruned"))
            blobs["pruned"] = tflite.convert_or_raise(path, loaded, "dynamic_range", None, label="pruned")
        if qat:
            tf.keras.utils.set_random_seed(seed)
            model, training["qat"] = qat_model(model_dir, transformed_examples_dir, transform_output,
                                               label_key, problem_type, finetune_epochs, seed)
            path, loaded = _logits_saved_model(model, transform_output, label_key, os.path.join(scratch, "qat"))
            blobs["qat"] = tflite.convert_or_raise(path, loaded, "int8", representative, label="qat")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return blobs, training
