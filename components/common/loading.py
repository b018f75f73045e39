"""Loading a kfx model in a stage: a network or a forest (``kfx_formats.saved_model`` names the op
libraries a forest needs; they are registered first)."""
from __future__ import annotations

from kfx_formats import saved_model


def register_model_ops(model_dir: str) -> str:
    """Register the op libraries the model needs (before TFMA or anything else loads it); its family."""
    import tensorflow as tf
    for library in saved_model.op_libraries(model_dir):
        tf.load_op_library(library)
    return saved_model.family(model_dir)


def load_model(model_dir: str):
    """``tf.saved_model.load`` of a kfx model of either family."""
    import tensorflow as tf
    register_model_ops(model_dir)
    return tf.saved_model.load(model_dir)
