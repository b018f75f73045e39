"""The evaluate KFP component: TFMA on the raw test split, fairness, explanation, blessing."""
from typing import List

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from kfx_components.common.artifacts import ModelBlessing, ModelEvaluation

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("evaluate"), install_kfp_package=False)
def evaluate(model: Input[Model], examples: Input[Dataset], slice_features: List[str],
             crossed_slices: List[str], metric_threshold: float, baseline_tolerance: float,
             min_vs_reference: float, baseline_model_uri: str,
             evaluation: Output[ModelEvaluation], blessing: Output[ModelBlessing], metrics: Output[Metrics],
             classification_metrics: Output[ClassificationMetrics], report: Output[HTML],
             explanation: Output[HTML], max_fairness_gap: float = 0.0, explain_rows: int = 200,
             beam_pipeline_args: List[str] = [], bless_on: str = "random"):
    """Evaluate the candidate on the test split with TFMA (overall, per slice feature and crossed pair
    "a,b", Fairness Indicators), against the trivial predictor and a classical reference (bootstrap
    CIs) and the baseline resolve found (`baseline_model_uri`: the model in production, "" on a first
    run); explain it (SHAP and partial dependence
    on `explain_rows` test rows, 0: off); bless it or not (`max_fairness_gap` > 0 gates on the
    largest FPR/FNR gap). TFMA runs on the Beam runner `beam_pipeline_args` names. When the examples
    hold a backtest split (the newest span), the candidate and the baseline are judged on it too;
    `bless_on="temporal"` makes its gates decide the blessing as well."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    import shutil
    import tempfile

    from kfx_formats import s3
    from kfx_components.common import component_io
    from kfx_components.evaluate import executor, outputs

    meta = dict(examples.metadata)
    workdir = tempfile.mkdtemp(prefix="kfx-baseline-")
    try:
        baseline_dir = s3.local_copy(baseline_model_uri, workdir)
        facts = executor.run(model_dir=model.path, examples_dir=examples.path,
                             evaluation_dir=evaluation.path, report_path=report.path,
                             **component_io.problem(examples), slice_features=list(slice_features or []),
                             crossed_slices=list(crossed_slices or []), baseline_model_dir=baseline_dir,
                             metric_threshold=metric_threshold, baseline_tolerance=baseline_tolerance,
                             min_vs_reference=min_vs_reference, max_fairness_gap=max_fairness_gap,
                             explain_rows=explain_rows, explanation_path=explanation.path,
                             training_history=outputs.training_histories(model.metadata),
                             model_families=dict(model.metadata or {}).get("model_families"),
                             beam_pipeline_args=list(beam_pipeline_args or ()), bless_on=bless_on)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    outputs.write_blessing(blessing.path, facts)
    component_io.put(blessing, outputs.verdict_metadata(facts, baseline_model_uri))
    component_io.put(evaluation, outputs.evaluation_metadata(facts, baseline_model_uri))
    component_io.put(explanation, outputs.explanation_metadata(facts))
    component_io.log_metrics(metrics, outputs.logged_metrics(facts))
    if "roc" in facts and facts["roc"]["fpr"]:
        roc = facts["roc"]
        classification_metrics.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])
    if facts.get("confusion_matrix"):
        matrix = facts["confusion_matrix"]
        classification_metrics.log_confusion_matrix(
            outputs.confusion_categories(matrix, meta.get("label_vocabulary")), matrix)
