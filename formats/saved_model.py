"""What a kfx model (a SavedModel) needs to load, read without TensorFlow: stages, the platform and the
serving runtime all ask here.

A model is a Keras network or a TensorFlow Decision Forests forest. A forest's
graph calls TF-DF's inference ops (``SimpleML*``), which TensorFlow knows only
once their library is registered in the process (``tf.load_op_library``);
without it ``tf.saved_model.load`` (and TFMA) fails with "Op type not
registered". ``op_libraries`` names the libraries a model needs: TF-DF's
``inference.so`` from the installed package, found without importing it (its
Python side brings tf-keras and ydf, seconds a server does not need).

``family`` reads the ops from ``saved_model.pb``'s bytes: an op type is stored
as NodeDef field 2 (tag 0x12, a length, the name), so the tagged name of TF-DF's
model-loading op marks a forest.
"""
from __future__ import annotations

import importlib.util
import os

FAMILY_FOREST = "gradient_boosted_trees"
FAMILY_NETWORK = "network"
# Every TF-DF SavedModel creates its model resource with this op (tag, length, name: see the module doc).
_FOREST_OP = b"SimpleMLCreateModelResource"
_FOREST_OP_FIELD = b"\x12" + bytes([len(_FOREST_OP)]) + _FOREST_OP


def family(model_dir: str) -> str:
    """``gradient_boosted_trees`` when the model calls TF-DF's ops, else ``network``."""
    with open(os.path.join(model_dir, "saved_model.pb"), "rb") as f:
        return FAMILY_FOREST if _FOREST_OP_FIELD in f.read() else FAMILY_NETWORK


def op_libraries(model_dir: str) -> list[str]:
    """The op libraries to ``tf.load_op_library`` before loading the model (none for a network)."""
    if family(model_dir) != FAMILY_FOREST:
        return []
    spec = importlib.util.find_spec("tensorflow_decision_forests")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the model is a TF-DF forest: install tensorflow-decision-forests==1.9.2 to load it")
    return [os.path.join(list(spec.submodule_search_locations)[0], "tensorflow", "ops", "inference", "inference.so")]
