"""evaluate: TFMA model analysis of the candidate (and the registry baseline), blessing and report.

`run` evaluates the candidate SavedModel (`serving_default`: serialised raw
`tf.Example` -> `probabilities` / `predictions`) on the raw **test** split (which
nothing trained or tuned on) with TensorFlow Model Analysis, overall and per
value of each slice feature and crossed pair (with Fairness Indicators for
binary problems), applies a value threshold on the primary metric
and, when a baseline model is given, a change threshold against it. Then
`trust.assess` compares it with the trivial predictor and a classical
reference on the same rows (bootstrap confidence intervals). The model is
blessed when TFMA's validation result is ok and it passes those gates (and,
with ``max_fairness_gap`` > 0, the fairness gate of ``fairness``). ``explain``
gives a SHAP / partial-dependence explanation of the served model on a bounded
sample of test rows. It writes TFMA's output directory, one self-contained HTML
report (inline SVG charts: per-slice bars, fairness gaps, the explanation,
training curves) and the explanation page, and returns JSON-serialisable facts.
The component's outputs are derived from those facts here too (``write_blessing``,
``verdict_metadata``, ``evaluation_metadata``, ``logged_metrics``, ...), so the component
body only reads inputs, calls ``run`` and writes outputs.
"""
from __future__ import annotations

import html
import json
import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence

from kfx_components.common import io, problem
from kfx_components.common import plots
from kfx_components.evaluate import explain, fairness, trust

# The TFMA metric class of each primary metric (kfx_components.common.problem).
TFMA_CLASS = {"auc": "AUC", "accuracy": "SparseCategoricalAccuracy", "rmse": "RootMeanSquaredError"}

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
CANDIDATE, BASELINE = "candidate", "baseline"
ROC_THRESHOLDS = 100
MAX_SLICES_REPORTED = 50


def _eval_features(eval_path: str, limit: int = 20000) -> set:
    """Feature names present in (the first `limit` records of) the eval split."""
    import tensorflow as tf

    names: set = set()
    for i, record in enumerate(tf.data.TFRecordDataset(eval_path, compression_type="GZIP")):
        if i >= limit:
            break
        names.update(tf.train.Example.FromString(record.numpy()).features.feature.keys())
    return names


def _eval_config(label_key: str, problem_type: str, num_classes: int, slice_specs: List[List[str]],
                 has_baseline: bool, metric_threshold: float, baseline_tolerance: float):
    import tensorflow_model_analysis as tfma

    prediction_key = "predictions" if problem_type == "regression" else "probabilities"
    model_specs = [tfma.ModelSpec(name=CANDIDATE, signature_name=problem.SERVING_SIGNATURE,
                                  label_key=label_key, prediction_key=prediction_key)]
    if has_baseline:
        model_specs.append(tfma.ModelSpec(name=BASELINE, signature_name=problem.SERVING_SIGNATURE,
                                          label_key=label_key, prediction_key=prediction_key,
                                          is_baseline=True))

    if problem_type == "binary":
        classes = ["AUC", "BinaryAccuracy", "Precision", "Recall", "ExampleCount",
                   "TruePositives", "FalsePositives", "TrueNegatives", "FalseNegatives"]
        metrics = [tfma.MetricConfig(class_name=c) for c in classes]
        metrics.append(tfma.MetricConfig(class_name="ConfusionMatrixPlot",
                                         config=json.dumps({"num_thresholds": ROC_THRESHOLDS})))
    elif problem_type == "multiclass":
        metrics = [tfma.MetricConfig(class_name=c) for c in
                   ("SparseCategoricalAccuracy", "ExampleCount", "MultiClassConfusionMatrixPlot")]
    else:
        metrics = [tfma.MetricConfig(class_name=c) for c in
                   ("MeanSquaredError", "RootMeanSquaredError", "MeanAbsoluteError", "ExampleCount")]

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

    slicing = [tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=list(keys)) for keys in slice_specs]
    metrics_specs = [tfma.MetricsSpec(metrics=metrics)]
    if problem_type == "binary":
        metrics_specs += fairness.metrics_specs(CANDIDATE)
    return tfma.EvalConfig(model_specs=model_specs, metrics_specs=metrics_specs, slicing_specs=slicing)


def _slice_name(slice_key) -> str:
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


def _read_metrics(output_path: str) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{model name or 'diff': {slice: {metric: value}}} from TFMA's metrics output."""
    import tensorflow_model_analysis as tfma

    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for record in tfma.load_metrics(output_path):
        slice_name = _slice_name(record.slice_key)
        for kv in record.metric_keys_and_values:
            name = METRIC_NAMES.get(kv.key.name) or fairness.metric_name(kv.key.name)
            if name is None or not kv.value.HasField("double_value"):
                continue
            model = "diff" if kv.key.is_diff else (kv.key.model_name or CANDIDATE)
            value = _number(kv.value.double_value.value)
            if name in _COUNTS and value is not None and value == int(value):
                value = int(value)
            out.setdefault(model, {}).setdefault(slice_name, {})[name] = value
    return out


def _read_plots(output_path: str) -> Dict[str, Any]:
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


def _reasons(validation) -> List[str]:
    reasons = []
    for per_slice in validation.metric_validations_per_slice:
        where = _slice_name(per_slice.slice_key)
        for f in per_slice.failures:
            name = METRIC_NAMES.get(f.metric_key.name, f.metric_key.name)
            t = f.metric_threshold
            value = f.metric_value.double_value.value
            if f.metric_key.is_diff:
                c = t.change_threshold
                op = "<=" if c.direction == 1 else ">="
                bound = f"{op} {_change_bound(c)}"
                reasons.append(f"{name} change vs baseline ({where}) = {value:+.4f}, "
                               f"required {bound}")
            else:
                v = t.value_threshold
                if v.HasField("lower_bound"):
                    bound = f">= {v.lower_bound.value:g}"
                elif v.HasField("upper_bound"):
                    bound = f"<= {v.upper_bound.value:g}"
                else:
                    bound = "a bound"
                reasons.append(f"{name} ({where}) = {value:.4f}, required {bound}")
    for m in validation.missing_slices:
        reasons.append(f"slice missing from the evaluation: {_slice_name(m)}")
    if not validation.validation_ok and not reasons:
        reasons.append("TFMA validation failed: " + str(validation).strip().replace("\n", " ")[:500])
    return reasons


def _change_bound(change) -> str:
    """Human-readable text for a GenericChangeThreshold's absolute bound."""
    value = change.absolute.value
    return f"{value:+g}" if change.HasField("absolute") else "a change bound"


def parse_slices(slice_features: Sequence[str], crossed_slices: Sequence[str]) -> List[List[str]]:
    """TFMA slicing specs besides Overall: each slice feature alone, then each crossed pair
    (``"a,b"``: rows sliced by the values of ``a`` and ``b`` together)."""
    specs: List[List[str]] = []
    for feature in slice_features or ():
        feature = str(feature).strip()
        if feature and [feature] not in specs:
            specs.append([feature])
    for cross in crossed_slices or ():
        keys = [k.strip() for k in str(cross).split(",") if k.strip()]
        if len(keys) < 2 or len(set(keys)) != len(keys):
            raise ValueError(f"crossed_slices entry {cross!r}: expected two or more distinct features "
                             "separated by a comma, e.g. 'region,weekday'")
        if keys not in specs:
            specs.append(keys)
    return specs


def run(model_dir: str, examples_dir: str, evaluation_dir: str, report_path: str,
        label_key: str, problem_type: str, num_classes: int, slice_features: Sequence[str] = (),
        crossed_slices: Sequence[str] = (), baseline_model_dir: str = "", metric_threshold: float = 0.0,
        baseline_tolerance: float = 0.01, min_vs_reference: float = 0.85, max_fairness_gap: float = 0.0,
        explain_rows: int = 200, explanation_path: str = "",
        training_history: Optional[Dict[str, dict]] = None, beam_pipeline_args: Sequence[str] = ()) -> dict:
    """Evaluate `model_dir` on `examples_dir/test`; bless it or not; explain it; write the report.

    slice_features / crossed_slices: TFMA slices (and Fairness Indicators for binary problems).
    max_fairness_gap: 0 (off) or the largest allowed |FPR/FNR gap| (see ``fairness``).
    explain_rows: test rows the SHAP explanation and partial dependence use (0: no explanation);
    explanation_path: where to write the explanation page (HTML), "" for none.
    training_history: ``{fit name: model.history_summary(...)}`` drawn as training curves.
    beam_pipeline_args: the Beam runner TFMA runs on (DirectRunner by default; Flink on that profile).
    """
    start = time.time()
    if isinstance(slice_features, str) or isinstance(crossed_slices, str):
        raise ValueError("slice_features and crossed_slices are lists of strings, not one string")
    if max_fairness_gap is None or not 0.0 <= float(max_fairness_gap) <= 1.0:
        raise ValueError(f"max_fairness_gap must be in [0, 1] (0: no gate), got {max_fairness_gap!r}")
    if int(explain_rows) < 0:
        raise ValueError(f"explain_rows must be >= 0 (0: no explanation), got {explain_rows!r}")
    slice_specs = parse_slices(slice_features, crossed_slices)
    test_path = _check_inputs(model_dir, examples_dir, label_key, problem_type, num_classes,
                              slice_specs, baseline_model_dir)
    tfma_start = time.time()
    metrics, plots_data, validation = _analyze(model_dir, baseline_model_dir, test_path, evaluation_dir,
                                               label_key, problem_type, int(num_classes), slice_specs,
                                               float(metric_threshold), float(baseline_tolerance),
                                               beam_pipeline_args)
    tfma_seconds = time.time() - tfma_start
    trusted = trust.assess(model_dir, examples_dir, label_key, problem_type, int(num_classes),
                           float(min_vs_reference))
    fair = (fairness.summarize(metrics.get(CANDIDATE, {}), float(max_fairness_gap))
            if problem_type == "binary" and slice_specs else {})
    explanation: Dict[str, Any] = {}
    if int(explain_rows):
        explanation = explain.explain(model_dir, examples_dir, label_key, problem_type, int(num_classes),
                                      rows=int(explain_rows))
    reasons = ((_reasons(validation) if not validation.validation_ok else []) + trusted["reasons"]
               + fair.get("reasons", []))

    facts: Dict[str, Any] = {
        "blessed": not reasons,
        "reasons": reasons,
        "warnings": trusted["warnings"],
        "problem_type": problem_type,
        "primary_metric": problem.primary_metric(problem_type),
        "split": io.TEST,
        "slice_features": [k[0] for k in slice_specs if len(k) == 1],
        "crossed_slices": [",".join(k) for k in slice_specs if len(k) > 1],
        "baseline_used": bool(baseline_model_dir),
        "metric_threshold": float(metric_threshold),
        "baseline_tolerance": float(baseline_tolerance),
        "max_fairness_gap": float(max_fairness_gap),
        "trust": trusted,
        **_metric_facts(metrics, plots_data, problem_type, int(num_classes)),
        "fairness": fair,
        "explanation": explanation,
        "training_history": dict(training_history or {}),
        "tfma_seconds": round(tfma_seconds, 2),
    }
    facts["seconds"] = round(time.time() - start, 2)
    os.makedirs(os.path.dirname(os.path.abspath(report_path)), exist_ok=True)
    with open(report_path, "w", encoding="utf-8") as f:
        f.write(render_report(facts))
    if explanation_path:
        os.makedirs(os.path.dirname(os.path.abspath(explanation_path)), exist_ok=True)
        with open(explanation_path, "w", encoding="utf-8") as f:
            f.write(explain.render_html(explanation) if explanation else _no_explanation_page())
    return facts


def training_histories(model_metadata: Optional[dict]) -> Dict[str, dict]:
    """The training curves a Model artifact's metadata carries, named by the fit that drew them:
    distill's student (and its teacher), or distributed_train's model."""
    meta = dict(model_metadata or {})
    histories = {}
    if meta.get("teacher_history"):
        histories["distributed_train (teacher)"] = meta["teacher_history"]
    if meta.get("history"):
        histories["distill (student)"] = meta["history"]
    elif meta.get("curves"):
        histories["distributed_train"] = {k: meta[k] for k in ("epochs_run", "best_epoch", "curves") if k in meta}
    return histories


def write_blessing(blessing_dir: str, facts: Dict[str, Any]) -> None:
    """The verdict file push reads: ``BLESSED`` or ``NOT_BLESSED``, holding the reasons one a line."""
    os.makedirs(blessing_dir, exist_ok=True)
    with open(os.path.join(blessing_dir, "BLESSED" if facts["blessed"] else "NOT_BLESSED"), "w") as f:
        f.write("\n".join(facts["reasons"]) + ("\n" if facts["reasons"] else ""))


def verdict_metadata(facts: Dict[str, Any], baseline_uri: str) -> Dict[str, Any]:
    """The blessing artifact's metadata: the verdict and what it rests on (push and the model card read it)."""
    return {
        "blessed": bool(facts["blessed"]),
        "reasons": facts["reasons"],
        "warnings": facts["warnings"],
        "trust": facts["trust"],
        "split": facts["split"],
        "baseline_used": facts["baseline_used"],
        "baseline_uri": baseline_uri,   # lineage: which model judged this one
        "primary_metric": facts["primary_metric"],
        "slice_features": facts["slice_features"],
        "crossed_slices": facts["crossed_slices"],
        "overall": facts["overall"],
        "per_slice": facts["per_slice"],
        "fairness": fairness.compact(facts["fairness"]),
        "explanation": facts["explanation"],
    }


def evaluation_metadata(facts: Dict[str, Any], baseline_uri: str) -> Dict[str, Any]:
    """The evaluation artifact's metadata: the verdict's, plus sizes and timings."""
    return {**verdict_metadata(facts, baseline_uri), "problem_type": facts["problem_type"],
            "num_slices": facts["num_slices"], "seconds": facts["seconds"], "tfma_seconds": facts["tfma_seconds"]}


def explanation_metadata(facts: Dict[str, Any]) -> Dict[str, Any]:
    return {k: facts["explanation"][k] for k in ("method", "rows", "seconds") if k in facts["explanation"]}


def logged_metrics(facts: Dict[str, Any]) -> Dict[str, float]:
    """The Metrics artifact's scalars: the overall metrics, then the primary metric's confidence
    interval, the trivial predictor's and the references'. Undefined values (None) stay out."""
    trusted, primary = facts["trust"], facts["primary_metric"]
    out = {name: float(value) for name, value in facts["overall"].items() if value is not None}
    for key, value in (("ci_low", trusted["model"]["ci"][0]), ("ci_high", trusted["model"]["ci"][1]),
                       ("trivial", trusted["trivial"]["metric"]),
                       ("reference_linear", trusted["references"]["linear"]["metric"]),
                       ("reference_boosting", trusted["references"]["boosting"]["metric"])):
        if value is not None:
            out[f"{primary}_{key}"] = float(value)
    return out


def confusion_categories(matrix: List[List[float]], label_vocabulary: Optional[Sequence]) -> List[str]:
    """The confusion matrix's class names: the label vocabulary when it fits the matrix, else indices."""
    vocabulary = [str(v) for v in (label_vocabulary or [])]
    return vocabulary if len(vocabulary) == len(matrix) else [str(i) for i in range(len(matrix))]


def _no_explanation_page() -> str:
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Model explanation</title></head>"
            "<body><h1>Model explanation</h1><p>Not computed (explain_rows = 0).</p></body></html>")


def _check_inputs(model_dir, examples_dir, label_key, problem_type, num_classes, slice_specs,
                  baseline_model_dir) -> str:
    """The test split's path; ValueError naming the parameter for any bad input."""
    problem.check_problem_type(problem_type)
    if problem_type == "multiclass" and int(num_classes) < 2:
        raise ValueError(f"num_classes {num_classes!r} must be >= 2 for multiclass")
    problem.require_saved_model(model_dir, "model_dir")
    if baseline_model_dir:
        problem.require_saved_model(baseline_model_dir, "baseline_model_dir")
    test_path = io.split_file(examples_dir, io.TEST)
    if not os.path.isfile(test_path):
        raise ValueError(f"examples_dir {examples_dir!r} has no test split ({test_path})")
    features = _eval_features(test_path)
    if not features:
        raise ValueError(f"test split {test_path!r} holds no examples")
    if label_key not in features:
        raise ValueError(f"label_key {label_key!r} is not a feature of {test_path!r}")
    for keys in slice_specs:
        for key in keys:
            if key not in features:
                what = "slice_features" if len(keys) == 1 else "crossed_slices"
                raise ValueError(f"{what}: {key!r} is not a feature of {test_path!r} "
                                 f"(features: {', '.join(sorted(features))})")
    return test_path


def _analyze(model_dir, baseline_model_dir, data_path, evaluation_dir, label_key, problem_type,
             num_classes, slice_specs, metric_threshold, baseline_tolerance, beam_pipeline_args=()):
    """TFMA on one split: (metrics, plots, validation result)."""
    import tensorflow_model_analysis as tfma
    from apache_beam.options.pipeline_options import PipelineOptions

    has_baseline = bool(baseline_model_dir)
    eval_config = _eval_config(label_key, problem_type, num_classes, slice_specs, has_baseline,
                               metric_threshold, baseline_tolerance)
    shared = [tfma.default_eval_shared_model(eval_saved_model_path=model_dir,
                                             model_name=CANDIDATE, eval_config=eval_config)]
    if has_baseline:
        shared.append(tfma.default_eval_shared_model(eval_saved_model_path=baseline_model_dir,
                                                     model_name=BASELINE, eval_config=eval_config))
    os.makedirs(evaluation_dir, exist_ok=True)
    tfma.run_model_analysis(eval_shared_model=shared if has_baseline else shared[0],
                            eval_config=eval_config, data_location=data_path,
                            file_format="tfrecords", output_path=evaluation_dir,
                            pipeline_options=PipelineOptions(list(beam_pipeline_args or ())))
    return (_read_metrics(evaluation_dir), _read_plots(evaluation_dir),
            tfma.load_validation_result(evaluation_dir))


def _metric_facts(metrics, plots_data, problem_type: str, num_classes: int) -> Dict[str, Any]:
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
        "overall": {k: v for k, v in overall_all.items() if k not in _CONFUSION_COUNTS and "@" not in k},
        "per_slice": per_slice,
        "num_slices": sum(len(v) for v in by_spec.values()),
        "slices_per_spec": {spec: len(names) for spec, names in by_spec.items()},
    }
    if BASELINE in metrics:
        facts["baseline_overall"] = {k: v for k, v in metrics[BASELINE].get("Overall", {}).items()
                                     if k not in _CONFUSION_COUNTS and "@" not in k}
        facts["diff_overall"] = {k: v for k, v in metrics.get("diff", {}).get("Overall", {}).items()
                                 if k not in _CONFUSION_COUNTS and "@" not in k}
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


def _slice_sort_key(name: str):
    value = name.split("=", 1)[-1]
    try:
        return (0, float(value), name)
    except ValueError:
        return (1, 0.0, name)


# ---------------------------------------------------------------- the HTML report

_CSS = plots.PAGE_CSS


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e6 else f"{v:.4g}"
    return html.escape(str(v))


def _table(header: List[str], rows: List[List[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(x)}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _roc_svg(roc: Dict[str, List[float]]) -> str:
    if not roc.get("fpr"):
        return ""
    size, pad = 260, 30
    pts = sorted(zip(roc["fpr"], roc["tpr"]))
    path = " ".join(f"{pad + x * size:.1f},{pad + (1 - y) * size:.1f}" for x, y in pts)
    return (f'<svg width="{size + 2 * pad}" height="{size + 2 * pad}" role="img" '
            f'aria-label="ROC curve">'
            f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" stroke="#999"/>'
            f'<line x1="{pad}" y1="{pad + size}" x2="{pad + size}" y2="{pad}" stroke="#ccc" '
            f'stroke-dasharray="4"/>'
            f'<polyline points="{path}" fill="none" stroke="#1565c0" stroke-width="2"/>'
            f'<text x="{pad + size / 2}" y="{size + 2 * pad - 6}" font-size="12" '
            f'text-anchor="middle">false positive rate</text>'
            f'<text x="12" y="{pad + size / 2}" font-size="12" text-anchor="middle" '
            f'transform="rotate(-90 12 {pad + size / 2})">true positive rate</text></svg>')


def _ci_text(ci) -> str:
    return "n/a" if not ci or ci[0] is None else f"{ci[0]:.4f} - {ci[1]:.4f}"


def _trust_section(t: Dict[str, Any]) -> str:
    """The model beside the trivial predictor and the classical references, with CIs."""
    name = t["metric"]
    refs = t["references"]
    rows = [["this model", t["model"]["metric"], _ci_text(t["model"]["ci"])],
            [f"trivial: {t['trivial']['predictor']}", t["trivial"]["metric"], _ci_text(t["trivial"]["ci"])],
            [f"reference: {refs['linear']['estimator']}", refs["linear"]["metric"], _ci_text(refs["linear"]["ci"])],
            [f"reference: {refs['boosting']['estimator']}", refs["boosting"]["metric"],
             _ci_text(refs["boosting"]["ci"])]]
    out = [f"<h2>Against simple models ({t['test_rows']} test rows)</h2>",
           _table(["predictor", name, f"{t['confidence']:.0%} CI (bootstrap, {t['resamples']} resamples)"], rows),
           f"<p class='muted'>How much better than the trivial predictor: {_ci_text(t['vs_trivial_ci'])} "
           f"(must be above 0). Against the linear reference: {_ci_text(t['vs_reference_ci'])}"
           + (f"; ratio {t['vs_reference_ratio']:.3f}" if t.get("vs_reference_ratio") is not None else "")
           + (f" (min_vs_reference {t['min_vs_reference']:g})" if t["min_vs_reference"] else "")
           + ".</p>"]
    if t["warnings"]:
        out.append("<ul class='warnings'>" + "".join(f"<li>warning: {html.escape(w)}</li>"
                                                    for w in t["warnings"]) + "</ul>")
    return "\n".join(out)


def slice_sections(facts: Dict[str, Any]) -> str:
    """Per slicing spec: the primary metric per slice as bars (overall as a dashed line) and a table."""
    per_slice = facts.get("per_slice") or {}
    if not per_slice:
        return ""
    primary = facts["primary_metric"]
    overall = facts["overall"].get(primary)
    groups: Dict[str, List[str]] = {}
    for name in per_slice:
        groups.setdefault(fairness.spec_name(name), []).append(name)
    parts = []
    for spec, names in groups.items():
        chart = plots.hbars([(f"{n} (n={per_slice[n].get('example_count', '?')})", per_slice[n].get(primary))
                             for n in names], f"{primary} per slice: {spec}", reference=overall,
                            reference_label="overall", width=640)
        cols = sorted({k for n in names for k in per_slice[n]})
        total = (facts.get("slices_per_spec") or {}).get(spec, len(names))
        parts.append(f"<section class='slices'><h2>Per slice: {html.escape(spec)}</h2>"
                     f"<div class='charts'>{chart}</div>"
                     + _table(["slice"] + cols, [[n] + [per_slice[n].get(c, "") for c in cols] for n in names])
                     + (f"<p class='muted'>{len(names)} of {total} slices shown (the largest).</p>"
                        if total > len(names) else "") + "</section>")
    return "".join(parts)


def curves_section(histories: Dict[str, dict]) -> str:
    charts = plots.training_curves(histories or {})
    if not charts:
        return ""
    return ("<section id='training'><h2>Training curves</h2><div class='charts'>" + "".join(charts)
            + "</div></section>")


def render_report(facts: Dict[str, Any]) -> str:
    """One self-contained HTML page (inline CSS and SVG, no scripts, no network fetches)."""
    blessed = facts["blessed"]
    verdict = ("<span class='verdict blessed'>BLESSED</span>" if blessed
               else "<span class='verdict not-blessed'>NOT BLESSED</span>")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>kfx evaluation</title>"
             f"<style>{_CSS}</style></head><body>",
             "<h1>Model evaluation (TFMA)</h1>",
             f"<section id='verdict'><h2>Verdict</h2><p>{verdict}</p>"]
    if facts["reasons"]:
        parts.append("<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in facts["reasons"])
                     + "</ul>")
    else:
        parts.append("<p>All thresholds passed.</p>")
    thresholds = ["example_count >= 1 (always)"]
    if facts["metric_threshold"]:
        op = ">=" if facts["primary_metric"] != "rmse" else "<="
        thresholds.append(f"{facts['primary_metric']} {op} {facts['metric_threshold']:g}")
    if facts["baseline_used"]:
        thresholds.append(f"{facts['primary_metric']} may degrade by at most "
                          f"{facts['baseline_tolerance']:g} vs the baseline")
    if facts.get("max_fairness_gap"):
        thresholds.append(f"largest FPR/FNR gap to overall <= {facts['max_fairness_gap']:g}")
    parts.append("<p class='muted'>Thresholds: " + html.escape("; ".join(thresholds))
                 + f". Problem type: {html.escape(facts['problem_type'])}.</p></section>")
    parts.append("<section id='trust'>" + _trust_section(facts["trust"]) + "</section>")

    parts.append("<section id='overall'><h2>Overall metrics</h2>")
    names = sorted(facts["overall"])
    if facts["baseline_used"]:
        base, diff = facts.get("baseline_overall", {}), facts.get("diff_overall", {})
        parts.append(_table(["metric", "candidate", "baseline", "change"],
                            [[n, facts["overall"].get(n, ""), base.get(n, ""), diff.get(n, "")]
                             for n in names]))
    else:
        parts.append(_table(["metric", "candidate"], [[n, facts["overall"][n]] for n in names]))
        parts.append("<p class='muted'>No baseline: first version in the registry.</p>")
    parts.append("</section>")
    if facts.get("roc") or facts.get("confusion_matrix"):
        parts.append("<section id='roc'><div class='charts'>")
        if facts.get("roc"):
            parts.append("<div><h2>ROC curve</h2>" + _roc_svg(facts["roc"]) + "</div>")
        if facts.get("confusion_matrix"):
            cm = facts["confusion_matrix"]
            parts.append("<div><h2>Confusion matrix</h2><p class='muted'>rows: actual, columns: predicted"
                         + (" (threshold 0.5)" if facts["problem_type"] == "binary" else "") + "</p>"
                         + _table([""] + [str(i) for i in range(len(cm))],
                                  [[str(i)] + row for i, row in enumerate(cm)]) + "</div>")
        parts.append("</div></section>")
    parts.append(slice_sections(facts))
    parts.append(fairness.section(facts.get("fairness") or {}))
    parts.append(explain.section(facts.get("explanation") or {}))
    parts.append(curves_section(facts.get("training_history") or {}))
    parts.append(f"<p class='muted'>Evaluated in {facts['seconds']:.1f} s "
                 f"(TFMA {facts['tfma_seconds']:.1f} s).</p></body></html>")
    return "\n".join(p for p in parts if p)
