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
             explanation: Output[HTML], max_fairness_gap: float = 0.0, explain_rows: int = 200):
    """Evaluate the candidate on the test split with TFMA (overall, per slice feature and crossed pair
    "a,b", Fairness Indicators), against the trivial predictor and a classical reference (bootstrap
    CIs) and the baseline resolve found (`baseline_model_uri`: the model in production, "" on a first
    run); explain it (SHAP and partial dependence
    on `explain_rows` test rows, 0: off); bless it or not (`max_fairness_gap` > 0 gates on the
    largest FPR/FNR gap)."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    import os
    import shutil
    import tempfile

    from kfx_components.common import s3
    from kfx_components.evaluate import executor, fairness

    meta = dict(examples.metadata)
    model_meta = dict(model.metadata or {})
    histories = {}  # training curves: distill's student (and its teacher), or distributed_train's model
    if model_meta.get("teacher_history"):
        histories["distributed_train (teacher)"] = model_meta["teacher_history"]
    if model_meta.get("history"):
        histories["distill (student)"] = model_meta["history"]
    elif model_meta.get("curves"):
        histories["distributed_train"] = {k: model_meta[k] for k in ("epochs_run", "best_epoch", "curves")
                                          if k in model_meta}
    workdir = tempfile.mkdtemp(prefix="kfx-baseline-")
    try:
        baseline_dir = s3.local_copy(baseline_model_uri, workdir) if baseline_model_uri else ""
        facts = executor.run(model_dir=model.path, examples_dir=examples.path,
                             evaluation_dir=evaluation.path, report_path=report.path,
                             label_key=meta["label_key"], problem_type=meta["problem_type"],
                             num_classes=int(meta.get("num_classes") or 0),
                             slice_features=list(slice_features or []),
                             crossed_slices=list(crossed_slices or []), baseline_model_dir=baseline_dir,
                             metric_threshold=metric_threshold, baseline_tolerance=baseline_tolerance,
                             min_vs_reference=min_vs_reference, max_fairness_gap=max_fairness_gap,
                             explain_rows=explain_rows, explanation_path=explanation.path,
                             training_history=histories)
    finally:
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
        "baseline_uri": baseline_model_uri,   # lineage: which model judged this one
        "primary_metric": facts["primary_metric"],
        "slice_features": facts["slice_features"],
        "crossed_slices": facts["crossed_slices"],
        "overall": facts["overall"],
        "per_slice": facts["per_slice"],
        "fairness": fairness.compact(facts["fairness"]),
        "explanation": facts["explanation"],
    }
    blessing.metadata.update(summary)
    evaluation.metadata.update({**summary, "problem_type": facts["problem_type"],
                                "num_slices": facts["num_slices"], "seconds": facts["seconds"],
                                "tfma_seconds": facts["tfma_seconds"]})
    explanation.metadata.update({k: facts["explanation"][k] for k in ("method", "rows", "seconds")
                                 if k in facts["explanation"]})
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
