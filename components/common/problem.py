"""Facts about the learning problem that every stage shares, defined once.

No TensorFlow here: ingest and push (whose image has no TensorFlow) use it too.
"""
from __future__ import annotations

import os

# The metric each problem type is judged by (tuning objective, gates, blessing, card, the online
# metric): one table, kfx_formats', which serving and the platform read too.
from kfx_formats.payload_log import HIGHER_IS_BETTER, PRIMARY_METRIC  # noqa: F401 - re-exported for the stages
from kfx_formats import choices

PROBLEM_TYPES = choices.PROBLEM_TYPES
SAVED_MODEL_FILE = "saved_model.pb"
# The served model's signatures (docs/design.md, artifact "model").
SERVING_SIGNATURE = "serving_default"      # serialized raw tf.Examples -> probabilities / predictions
LOGITS_SIGNATURE = "transformed_logits"    # transformed feature tensors -> logits (distill, TFLite)


def check_problem_type(problem_type: str) -> str:
    return choices.check("problem_type", problem_type, PROBLEM_TYPES)


def primary_metric(problem_type: str) -> str:
    """"auc" (binary), "accuracy" (multiclass) or "rmse" (regression)."""
    return PRIMARY_METRIC[check_problem_type(problem_type)]


def higher_is_better(problem_type: str) -> bool:
    return HIGHER_IS_BETTER[primary_metric(problem_type)]


def worse_by_more_than(value: float, reference: float, problem_type: str, tolerance: float) -> bool:
    """True when ``value`` is worse than ``reference`` by more than the relative ``tolerance``:
    below ``reference * (1 - tolerance)`` (AUC, accuracy) or above ``reference * (1 + tolerance)`` (RMSE)."""
    if higher_is_better(problem_type):
        return value < reference * (1.0 - tolerance)
    return value > reference * (1.0 + tolerance)


def is_saved_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, SAVED_MODEL_FILE))


def require_saved_model(path: str, what: str) -> None:
    """Raise ValueError naming the parameter when ``path`` holds no SavedModel."""
    if not is_saved_model(path):
        raise ValueError(f"{what} {path!r} is not a SavedModel directory (no {SAVED_MODEL_FILE})")
