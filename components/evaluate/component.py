"""The evaluate KFP component: TFMA on the raw eval split, blessing against the registry baseline."""
from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from kfx_components.common.artifacts import ModelBlessing, ModelEvaluation

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("evaluate"), install_kfp_package=False)
def evaluate(model: Input[Model], examples: Input[Dataset], slice_feature: str, metric_threshold: float,
             baseline_tolerance: float, min_vs_reference: float, registry_uri: str, model_name: str,
             evaluation: Output[ModelEvaluation], blessing: Output[ModelBlessing], metrics: Output[Metrics],
             classification_metrics: Output[ClassificationMetrics], report: Output[HTML]):
    """Evaluate the candidate on the test split with TFMA (overall + per slice), against the trivial
    predictor and a classical reference (bootstrap CIs) and the latest registry version when there
    is one; bless it or not."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    import os
    import shutil
    import tempfile

    from kfx_components.common import registry
    from kfx_components.evaluate import executor

    meta = dict(examples.metadata)
    baseline = registry.latest(registry_uri, model_name) if registry_uri else None
    workdir = tempfile.mkdtemp(prefix="kfx-baseline-") if baseline is not None else ""
    try:
        baseline_dir = ""
        if baseline is not None:
            registry.fetch(baseline, workdir)
            baseline_dir = os.path.join(workdir, "saved_model")
        facts = executor.run(model_dir=model.path, examples_dir=examples.path,
                             evaluation_dir=evaluation.path, report_path=report.path,
                             label_key=meta["label_key"], problem_type=meta["problem_type"],
                             num_classes=int(meta.get("num_classes") or 0),
                             slice_feature=slice_feature, baseline_model_dir=baseline_dir,
                             metric_threshold=metric_threshold, baseline_tolerance=baseline_tolerance,
                             min_vs_reference=min_vs_reference)
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    blessed = bool(facts["blessed"])
    os.makedirs(blessing.path, exist_ok=True)
    with open(os.path.join(blessing.path, "BLESSED" if blessed else "NOT_BLESSED"), "w") as f:
        f.write("\n".join(facts["reasons"]) + ("\n" if facts["reasons"] else ""))
    summary = {
        "blessed": blessed,
        "reasons": facts["reasons"],
        "warnings": facts["warnings"],
        "trust": facts["trust"],
        "split": facts["split"],
        "baseline_used": facts["baseline_used"],
        "baseline_version": baseline.number if baseline is not None else 0,
        "baseline_uri": baseline.uri if baseline is not None else "",
        "primary_metric": facts["primary_metric"],
        "slice_feature": facts["slice_feature"],
        "overall": facts["overall"],
        "per_slice": facts["per_slice"],
    }
    blessing.metadata.update(summary)
    evaluation.metadata.update({**summary, "problem_type": facts["problem_type"],
                                "num_slices": facts["num_slices"], "seconds": facts["seconds"],
                                "tfma_seconds": facts["tfma_seconds"]})
    for name, value in facts["overall"].items():
        if value is not None:  # undefined metrics (None) stay out of the Metrics artifact
            metrics.log_metric(name, float(value))
    trusted, primary = facts["trust"], facts["primary_metric"]
    for key, value in (("ci_low", trusted["model"]["ci"][0]), ("ci_high", trusted["model"]["ci"][1]),
                       ("trivial", trusted["trivial"]["metric"]),
                       ("reference_linear", trusted["references"]["linear"]["metric"]),
                       ("reference_boosting", trusted["references"]["boosting"]["metric"])):
        if value is not None:
            metrics.log_metric(f"{primary}_{key}", float(value))
    if "roc" in facts and facts["roc"]["fpr"]:
        roc = facts["roc"]
        classification_metrics.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])
    if facts.get("confusion_matrix"):
        matrix = facts["confusion_matrix"]
        vocabulary = [str(v) for v in (meta.get("label_vocabulary") or [])]
        categories = vocabulary if len(vocabulary) == len(matrix) else [str(i) for i in range(len(matrix))]
        classification_metrics.log_confusion_matrix(categories, matrix)
