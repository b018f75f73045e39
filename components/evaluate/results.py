"""TFMA's output read back as this stage's facts: the metrics per model and slice under this stage's
names, the ROC points and confusion matrix, and the overall/per-slice/baseline facts the report,
the blessing and the artifacts are made of."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

from kfx_components.common import problem
from kfx_components.evaluate import fairness

# The model names the eval config gives and TFMA's output carries.
CANDIDATE, BASELINE = "candidate", "baseline"

# TFMA/Keras metric names -> the names this stage reports.
METRIC_NAMES = {
    "auc": "auc",
    "binary_accuracy": "accuracy",
    "sparse_categorical_accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "example_count": "example_count",
    "mean_squared_error": "mse",
    "root_mean_squared_error": "rmse",
    "mean_absolute_error": "mae",
    "true_positives": "true_positives",
    "false_positives": "false_positives",
    "true_negatives": "true_negatives",
    "false_negatives": "false_negatives",
}
_CONFUSION_COUNTS = ("true_positives", "false_positives", "true_negatives", "false_negatives")
_COUNTS = ("example_count",) + _CONFUSION_COUNTS
MAX_SLICES_REPORTED = 50


def slice_name(slice_key) -> str:
    """"feature=value, ..." of a TFMA slice key; "Overall" for the whole split."""
    parts = []
    for k in slice_key.single_slice_keys:
        kind = k.WhichOneof("kind")
        value = getattr(k, kind) if kind else ""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        parts.append(f"{k.column}={value}")
    return ", ".join(parts) if parts else "Overall"


def _number(x: float) -> Optional[float]:
    """Rounded float; None for NaN/inf (e.g. precision when nothing is predicted positive)."""
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


def read_metrics(output_path: str) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{model name or 'diff': {slice: {metric: value}}} from TFMA's metrics output."""
    import tensorflow_model_analysis as tfma

    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for record in tfma.load_metrics(output_path):
        where = slice_name(record.slice_key)
        for kv in record.metric_keys_and_values:
            name = METRIC_NAMES.get(kv.key.name) or fairness.metric_name(kv.key.name)
            if name is None or not kv.value.HasField("double_value"):
                continue
            model = "diff" if kv.key.is_diff else (kv.key.model_name or CANDIDATE)
            value = _number(kv.value.double_value.value)
            if name in _COUNTS and value is not None and value == int(value):
                value = int(value)
            out.setdefault(model, {}).setdefault(where, {})[name] = value
    return out


def read_plots(output_path: str) -> Dict[str, Any]:
    """ROC points (binary) or the argmax confusion matrix (multiclass), candidate, overall."""
    import tensorflow_model_analysis as tfma

    result: Dict[str, Any] = {}
    for record in tfma.load_plots(output_path):
        if record.slice_key.single_slice_keys:
            continue
        for kv in record.plot_keys_and_values:
            if kv.key.model_name not in ("", CANDIDATE):
                continue
            value = kv.value
            if value.HasField("confusion_matrix_at_thresholds"):
                fpr, tpr, thresholds = [], [], []
                for m in value.confusion_matrix_at_thresholds.matrices:
                    neg = m.false_positives + m.true_negatives
                    pos = m.true_positives + m.false_negatives
                    point = (_number(m.false_positives / neg if neg else 0.0),
                             _number(m.true_positives / pos if pos else 0.0), _number(m.threshold))
                    if None in point:
                        continue
                    fpr.append(point[0])
                    tpr.append(point[1])
                    thresholds.append(point[2])
                result["roc"] = {"fpr": fpr, "tpr": tpr, "thresholds": thresholds}
            if value.HasField("multi_class_confusion_matrix_at_thresholds"):
                matrices = value.multi_class_confusion_matrix_at_thresholds.matrices
                if matrices:
                    result["multiclass_entries"] = [
                        (e.actual_class_id, e.predicted_class_id, e.num_weighted_examples)
                        for e in matrices[0].entries]
    return result


def metric_facts(metrics, plots_data, problem_type: str, num_classes: int) -> Dict[str, Any]:
    """Overall and per-slice metrics, baseline comparison, ROC and confusion matrix for the report.

    Per slicing spec at most MAX_SLICES_REPORTED slices are kept (the largest by row count)."""
    candidate = metrics.get(CANDIDATE, {})
    overall_all = candidate.get("Overall", {})
    primary_name = problem.primary_metric(problem_type)
    by_spec: Dict[str, List[str]] = {}
    for s in candidate:
        if s != "Overall":
            by_spec.setdefault(fairness.spec_name(s), []).append(s)
    kept: List[str] = []
    for spec, names in by_spec.items():
        names.sort(key=lambda s: -(candidate[s].get("example_count") or 0))
        kept += sorted(names[:MAX_SLICES_REPORTED], key=_slice_sort_key)
    per_slice = {s: {k: v for k, v in candidate[s].items() if k in ("example_count", primary_name, "accuracy", "mse")}
                 for s in kept}
    if problem_type == "binary":
        for s in kept:  # AUC is undefined on a slice holding one class only (TFMA reports 0 there)
            c = candidate[s]
            positives = (c.get("true_positives") or 0) + (c.get("false_negatives") or 0)
            negatives = (c.get("false_positives") or 0) + (c.get("true_negatives") or 0)
            if "auc" in per_slice[s] and (not positives or not negatives):
                per_slice[s]["auc"] = None
    facts: Dict[str, Any] = {
        "overall": _headline(overall_all),
        "per_slice": per_slice,
        "num_slices": sum(len(v) for v in by_spec.values()),
        "slices_per_spec": {spec: len(names) for spec, names in by_spec.items()},
    }
    if BASELINE in metrics:
        facts["baseline_overall"] = _headline(metrics[BASELINE].get("Overall", {}))
        facts["diff_overall"] = _headline(metrics.get("diff", {}).get("Overall", {}))
    if problem_type == "binary":
        facts["roc"] = plots_data.get("roc", {"fpr": [], "tpr": [], "thresholds": []})
        c = overall_all
        facts["confusion_matrix"] = [
            [int(c.get("true_negatives", 0)), int(c.get("false_positives", 0))],
            [int(c.get("false_negatives", 0)), int(c.get("true_positives", 0))]]
    elif problem_type == "multiclass":
        matrix = [[0] * num_classes for _ in range(num_classes)]
        for actual, predicted, count in plots_data.get("multiclass_entries", []):
            if 0 <= actual < num_classes and 0 <= predicted < num_classes:
                matrix[actual][predicted] += int(round(count))
        facts["confusion_matrix"] = matrix
    return facts


def _headline(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """The metrics the facts report overall: not the confusion counts, not the per-threshold ones."""
    return {k: v for k, v in metrics.items() if k not in _CONFUSION_COUNTS and "@" not in k}


def _slice_sort_key(name: str):
    value = name.split("=", 1)[-1]
    try:
        return (0, float(value), name)
    except ValueError:
        return (1, 0.0, name)
