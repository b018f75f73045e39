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
with ``max_fairness_gap`` > 0, the fairness gate of ``fairness``). When ingest wrote a
**backtest** split (the newest span of a window), ``backtest`` judges the candidate and the
baseline on it too; with ``bless_on="temporal"`` its gates must pass as well. ``explain``
gives a SHAP / partial-dependence explanation of the served model on a bounded
sample of test rows. It writes TFMA's output directory, one self-contained HTML
report (inline SVG charts: per-slice bars, fairness gaps, the explanation,
training curves) and the explanation page, and returns JSON-serialisable facts.

Modules: ``analysis`` (slicing, the eval config, the TFMA run), ``results`` (TFMA's output read
as facts), ``blessing`` (the thresholds and the reasons behind a verdict), ``trust``, ``backtest``, ``fairness``,
``explain``, ``report`` (the pages) and ``outputs`` (the component's outputs derived from the
facts: ``write_blessing``, ``verdict_metadata``, ``evaluation_metadata``, ``logged_metrics``, ...,
which the component body calls through this module).
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from kfx_components.common import io, problem
from kfx_components.evaluate import analysis, backtest, blessing, explain, fairness, report, results, trust


def run(model_dir: str, examples_dir: str, evaluation_dir: str, report_path: str,
        label_key: str, problem_type: str, num_classes: int, slice_features: Sequence[str] = (),
        crossed_slices: Sequence[str] = (), baseline_model_dir: str = "", metric_threshold: float = 0.0,
        baseline_tolerance: float = 0.01, min_vs_reference: float = 0.85, max_fairness_gap: float = 0.0,
        explain_rows: int = 200, explanation_path: str = "",
        training_history: Optional[Dict[str, dict]] = None, beam_pipeline_args: Sequence[str] = (),
        bless_on: str = "random", model_families: Optional[dict] = None) -> dict:
    """Evaluate `model_dir` on `examples_dir/test`; bless it or not; explain it; write the report.

    slice_features / crossed_slices: TFMA slices (and Fairness Indicators for binary problems).
    max_fairness_gap: 0 (off) or the largest allowed |FPR/FNR gap| (see ``fairness``).
    explain_rows: test rows the SHAP explanation and partial dependence use (0: no explanation);
    explanation_path: where to write the explanation page (HTML), "" for none.
    training_history: ``{fit name: model.history_summary(...)}`` drawn as training curves.
    model_families: what tune compared (``common.families.summary``), shown in the report.
    beam_pipeline_args: the Beam runner TFMA runs on (DirectRunner by default; Flink on that profile).
    bless_on: "random" (the test split's gates bless; a backtest split is reported) or "temporal" (the
    backtest split's gates must pass too; see ``backtest``).
    """
    start = time.time()
    if isinstance(slice_features, str) or isinstance(crossed_slices, str):
        raise ValueError("slice_features and crossed_slices are lists of strings, not one string")
    if max_fairness_gap is None or not 0.0 <= float(max_fairness_gap) <= 1.0:
        raise ValueError(f"max_fairness_gap must be in [0, 1] (0: no gate), got {max_fairness_gap!r}")
    if int(explain_rows) < 0:
        raise ValueError(f"explain_rows must be >= 0 (0: no explanation), got {explain_rows!r}")
    backtest.check_bless_on(bless_on, examples_dir)   # before minutes of TFMA
    slice_specs = analysis.parse_slices(slice_features, crossed_slices)
    columns = io.read_columns(examples_dir)
    test_path, test = _check_inputs(model_dir, examples_dir, columns, label_key, problem_type, num_classes,
                                    slice_specs, baseline_model_dir)
    tfma_start = time.time()
    metrics, plots_data, validation = analysis.analyze(model_dir, baseline_model_dir, test_path, evaluation_dir,
                                                       label_key, problem_type, slice_specs, float(metric_threshold),
                                                       float(baseline_tolerance), beam_pipeline_args)
    tfma_seconds = time.time() - tfma_start
    serve = trust.load_serving(model_dir)   # one load for trust and explain
    trusted = trust.assess(serve, examples_dir, test, label_key, problem_type, int(num_classes),
                           float(min_vs_reference))
    fair = (fairness.summarize(metrics.get(results.CANDIDATE, {}), float(max_fairness_gap))
            if problem_type == "binary" and slice_specs else {})
    explanation: Dict[str, Any] = {}
    if int(explain_rows):
        explanation = explain.explain(serve, test.table, columns, problem_type, int(num_classes),
                                      rows=int(explain_rows))
    temporal = (backtest.judge(model_dir, baseline_model_dir, examples_dir, label_key, problem_type,
                               int(num_classes), float(metric_threshold), float(baseline_tolerance),
                               decides=bless_on == "temporal")
                if backtest.has_split(examples_dir) else None)
    reasons = blessing.reasons(validation, trusted, fair, temporal)

    facts: Dict[str, Any] = {
        "blessed": not reasons,
        "reasons": reasons,
        "warnings": trusted["warnings"],
        "problem_type": problem_type,
        "primary_metric": problem.primary_metric(problem_type),
        "split": io.TEST,
        "bless_on": bless_on,
        "backtest": temporal,
        "slice_features": [k[0] for k in slice_specs if len(k) == 1],
        "crossed_slices": [",".join(k) for k in slice_specs if len(k) > 1],
        "baseline_used": bool(baseline_model_dir),
        "metric_threshold": float(metric_threshold),
        "baseline_tolerance": float(baseline_tolerance),
        "max_fairness_gap": float(max_fairness_gap),
        "trust": trusted,
        **results.metric_facts(metrics, plots_data, problem_type, int(num_classes)),
        "fairness": fair,
        "explanation": explanation,
        "training_history": dict(training_history or {}),
        "model_families": dict(model_families or {}),
        "tfma_seconds": round(tfma_seconds, 2),
    }
    facts["seconds"] = round(time.time() - start, 2)
    report.write_pages(facts, report_path, explanation_path)
    return facts


def _check_inputs(model_dir, examples_dir, columns, label_key, problem_type, num_classes, slice_specs,
                  baseline_model_dir) -> Tuple[str, trust.Split]:
    """The test split's path and its rows (read once here, shared by ``trust`` and ``explain``);
    ValueError naming the parameter for any bad input."""
    problem.check_problem_type(problem_type)
    if problem_type == "multiclass" and int(num_classes) < 2:
        raise ValueError(f"num_classes {num_classes!r} must be >= 2 for multiclass")
    problem.require_saved_model(model_dir, "model_dir")
    if baseline_model_dir:
        problem.require_saved_model(baseline_model_dir, "baseline_model_dir")
    test_path = io.split_file(examples_dir, io.TEST)
    if not os.path.isfile(test_path):
        raise ValueError(f"examples_dir {examples_dir!r} has no test split ({test_path})")
    test = trust.read_split(examples_dir, io.TEST, label_key, columns)
    if not test.records:
        raise ValueError(f"test split {test_path!r} holds no examples")
    features = {c for c in test.table.columns if test.table[c].notna().any()}
    if np.isfinite(test.labels).any():
        features.add(label_key)
    if label_key not in features:
        raise ValueError(f"label_key {label_key!r} is not a feature of {test_path!r}")
    for keys in slice_specs:
        for key in keys:
            if key not in features:
                what = "slice_features" if len(keys) == 1 else "crossed_slices"
                raise ValueError(f"{what}: {key!r} is not a feature of {test_path!r} "
                                 f"(features: {', '.join(sorted(features))})")
    return test_path, test
