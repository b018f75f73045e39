"""The blessing gates. TFMA's thresholds, on the overall slice: the primary metric's value bound, its
change against the baseline, and a non-empty test split. Why a candidate is not blessed: the
thresholds TFMA found failed, then trust's and fairness's gates, then (bless_on=temporal) the
backtest's; no reason, blessed."""
from __future__ import annotations

from typing import List, Optional

from kfx_components.common import problem
from kfx_components.evaluate import results

# The TFMA metric class of each primary metric (kfx_components.common.problem).
TFMA_CLASS = {"auc": "AUC", "accuracy": "SparseCategoricalAccuracy", "rmse": "RootMeanSquaredError"}


def add_thresholds(metrics: list, problem_type: str, has_baseline: bool, metric_threshold: float,
                   baseline_tolerance: float) -> None:
    """Attach the gates to TFMA's metric configs ``metrics`` (in place)."""
    import tensorflow_model_analysis as tfma

    primary_class = TFMA_CLASS[problem.primary_metric(problem_type)]
    higher_is_better = problem.higher_is_better(problem_type)
    threshold = tfma.MetricThreshold()
    if metric_threshold:
        bound = {"value": float(metric_threshold)}
        threshold.value_threshold.CopyFrom(
            tfma.GenericValueThreshold(lower_bound=bound) if higher_is_better
            else tfma.GenericValueThreshold(upper_bound=bound))
    if has_baseline:
        direction = (tfma.MetricDirection.HIGHER_IS_BETTER if higher_is_better
                     else tfma.MetricDirection.LOWER_IS_BETTER)
        # Candidate - baseline must be >= -tolerance (higher is better) or <= +tolerance.
        allowed = -float(baseline_tolerance) if higher_is_better else float(baseline_tolerance)
        threshold.change_threshold.CopyFrom(
            tfma.GenericChangeThreshold(direction=direction, absolute={"value": allowed}))
    if threshold.HasField("value_threshold") or threshold.HasField("change_threshold"):
        # Gate on the overall slice only (TFMA would otherwise apply a metric's threshold to
        # every slice for some metric kinds); per-slice values are reported, not gated.
        for m in metrics:
            if m.class_name == primary_class:
                m.per_slice_thresholds.append(tfma.PerSliceMetricThreshold(
                    slicing_specs=[tfma.SlicingSpec()], threshold=threshold))

    # Always gate on a non-empty eval split: it makes TFMA's validation meaningful even with no
    # metric or baseline threshold (TFMA reports `missing_thresholds`, not ok, when none is set).
    for m in metrics:
        if m.class_name == "ExampleCount":
            m.per_slice_thresholds.append(tfma.PerSliceMetricThreshold(
                slicing_specs=[tfma.SlicingSpec()],
                threshold=tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
                    lower_bound={"value": 1.0}))))


def reasons(validation, trusted: dict, fair: dict, temporal: Optional[dict] = None) -> List[str]:
    """Why the candidate is not blessed, [] when it is: TFMA's failed thresholds (``validation``), then
    the reasons of ``trust.assess``, ``fairness.summarize`` and, when it decides (bless_on=temporal),
    ``backtest.judge`` (``temporal``)."""
    decisive = temporal["reasons"] if temporal and temporal["decides"] else []
    return ((_tfma_reasons(validation) if not validation.validation_ok else []) + trusted["reasons"]
            + fair.get("reasons", []) + decisive)


def _tfma_reasons(validation) -> List[str]:
    found = []
    for per_slice in validation.metric_validations_per_slice:
        where = results.slice_name(per_slice.slice_key)
        for f in per_slice.failures:
            name = results.METRIC_NAMES.get(f.metric_key.name, f.metric_key.name)
            t = f.metric_threshold
            value = f.metric_value.double_value.value
            if f.metric_key.is_diff:
                c = t.change_threshold
                op = "<=" if c.direction == 1 else ">="
                bound = f"{op} {_change_bound(c)}"
                found.append(f"{name} change vs baseline ({where}) = {value:+.4f}, "
                             f"required {bound}")
            else:
                v = t.value_threshold
                if v.HasField("lower_bound"):
                    bound = f">= {v.lower_bound.value:g}"
                elif v.HasField("upper_bound"):
                    bound = f"<= {v.upper_bound.value:g}"
                else:
                    bound = "a bound"
                found.append(f"{name} ({where}) = {value:.4f}, required {bound}")
    for m in validation.missing_slices:
        found.append(f"slice missing from the evaluation: {results.slice_name(m)}")
    if not validation.validation_ok and not found:
        found.append("TFMA validation failed: " + str(validation).strip().replace("\n", " ")[:500])
    return found


def _change_bound(change) -> str:
    """Human-readable text for a GenericChangeThreshold's absolute bound."""
    value = change.absolute.value
    return f"{value:+g}" if change.HasField("absolute") else "a change bound"
