"""kfx stages: one folder per lifecycle stage.

Each stage folder holds `executor.py` (what the stage does: plain Python with
typed arguments, no KFP) and `component.py` (what the stage is: a typed KFP
component that calls the executor).
"""
import os

# TFT, TFMA and keras-tuner 1.3 need tf.keras to be Keras 2 (tf-keras); set it
# before anything imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
