"""The TFMA run: the slicing specs (each slice feature, each crossed pair), the eval config (the
candidate and the baseline, the metrics of the problem type, Fairness Indicators for binary problems,
the blessing gates) and TFMA's model analysis on the test split, read back."""
from __future__ import annotations

import json
import os
from typing import List, Sequence

from kfx_components.common import problem
from kfx_components.evaluate import blessing, fairness, results
from kfx_components.evaluate.results import BASELINE, CANDIDATE

ROC_THRESHOLDS = 100


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


def eval_config(label_key: str, problem_type: str, slice_specs: List[List[str]], has_baseline: bool,
                metric_threshold: float, baseline_tolerance: float):
    """TFMA's EvalConfig: the candidate (and the baseline) served raw, the problem type's metrics
    with the blessing gates, Overall and ``slice_specs``."""
    import tensorflow_model_analysis as tfma

    prediction_key = "predictions" if problem_type == "regression" else "probabilities"
    # A generic SavedModel served through its signature: TFMA loads it once (tf.saved_model.load in the
    # Beam workers). Left unset, the type is found by loading the model with Keras, and a Keras type
    # loads it once more for the model's compiled metrics, which no fact reads (the metrics are TFMA's).
    served = dict(signature_name=problem.SERVING_SIGNATURE, label_key=label_key, prediction_key=prediction_key,
                  model_type=tfma.constants.TF_GENERIC)
    model_specs = [tfma.ModelSpec(name=CANDIDATE, **served)]
    if has_baseline:
        model_specs.append(tfma.ModelSpec(name=BASELINE, is_baseline=True, **served))

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

    blessing.add_thresholds(metrics, problem_type, has_baseline, metric_threshold, baseline_tolerance)

    slicing = [tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=list(keys)) for keys in slice_specs]
    metrics_specs = [tfma.MetricsSpec(metrics=metrics)]
    if problem_type == "binary":
        metrics_specs += fairness.metrics_specs(CANDIDATE)
    return tfma.EvalConfig(model_specs=model_specs, metrics_specs=metrics_specs, slicing_specs=slicing)


def analyze(model_dir: str, baseline_model_dir: str, data_path: str, evaluation_dir: str, label_key: str,
            problem_type: str, slice_specs: List[List[str]], metric_threshold: float, baseline_tolerance: float,
            beam_pipeline_args: Sequence[str] = ()):
    """TFMA on one split: (metrics, plots, validation result)."""
    import tensorflow_model_analysis as tfma
    from apache_beam.options.pipeline_options import PipelineOptions

    from kfx_components.common import loading

    # TFMA loads the models in this process (Beam's direct runner) and registers TF-DF's ops only by importing
    # it when it can, silently (utils/model_util.py): without TF-DF a forest fails here in one line instead.
    for path in filter(None, (model_dir, baseline_model_dir)):
        loading.register_model_ops(path)
    has_baseline = bool(baseline_model_dir)
    config = eval_config(label_key, problem_type, slice_specs, has_baseline, metric_threshold,
                         baseline_tolerance)
    shared = [tfma.default_eval_shared_model(eval_saved_model_path=model_dir,
                                             model_name=CANDIDATE, eval_config=config)]
    if has_baseline:
        shared.append(tfma.default_eval_shared_model(eval_saved_model_path=baseline_model_dir,
                                                     model_name=BASELINE, eval_config=config))
    os.makedirs(evaluation_dir, exist_ok=True)
    tfma.run_model_analysis(eval_shared_model=shared if has_baseline else shared[0],
                            eval_config=config, data_location=data_path,
                            file_format="tfrecords", output_path=evaluation_dir,
                            pipeline_options=PipelineOptions(list(beam_pipeline_args or ())))
    return (results.read_metrics(evaluation_dir), results.read_plots(evaluation_dir),
            tfma.load_validation_result(evaluation_dir))

