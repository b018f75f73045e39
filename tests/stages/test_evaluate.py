"""evaluate: real TFMA on the raw test split of the shared fixtures (student/teacher SavedModels)."""
import json
import os
import re
import subprocess
import sys

import pytest

from kfx_components.evaluate import executor

# TFMA 0.47 with NumPy >= 1.25 warns once per example (calibration histogram); keep the output readable.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::RuntimeWarning")


def _args(examples, out, **kw):
    m = examples.metadata
    return dict(examples_dir=examples.path, evaluation_dir=str(out / "evaluation"),
                report_path=str(out / "report.html"), label_key=m["label_key"],
                problem_type=m["problem_type"], num_classes=m["num_classes"], **kw)


@pytest.fixture(scope="module")
def strict(examples, student, taxi_config, tmp_path_factory):
    """The student against itself as baseline with an unreachable AUC bound and a demand of
    +0.1 AUC over the baseline (tolerance -0.1): both thresholds must fail."""
    out = tmp_path_factory.mktemp("evaluate_strict")
    facts = executor.run(model_dir=student.path, slice_feature=taxi_config["slice_feature"],
                         metric_threshold=0.999, baseline_model_dir=student.path,
                         baseline_tolerance=-0.1, **_args(examples, out))
    return facts, out


def test_student_overall_and_per_slice(strict, examples, taxi_config):
    facts, out = strict
    feature = taxi_config["slice_feature"]
    overall = facts["overall"]
    assert overall["auc"] > 0.5, overall
    assert overall["example_count"] == examples.metadata["rows_test"]  # judged on test, not eval
    assert 0.0 <= overall["accuracy"] <= 1.0
    for name in ("precision", "recall"):  # None (undefined) when nothing is predicted positive
        assert overall[name] is None or 0.0 <= overall[name] <= 1.0
    assert facts["per_slice"] and facts["num_slices"] >= 2
    assert all(s.startswith(f"{feature}=") for s in facts["per_slice"]), facts["per_slice"].keys()
    assert all("auc" in m and m["example_count"] >= 1 for m in facts["per_slice"].values())
    if facts["num_slices"] == len(facts["per_slice"]):
        assert sum(m["example_count"] for m in facts["per_slice"].values()) == overall["example_count"]
    # ROC points and the confusion matrix at 0.5.
    roc = facts["roc"]
    assert len(roc["fpr"]) == len(roc["tpr"]) == len(roc["thresholds"]) > 10
    assert min(roc["fpr"]) == 0.0 and max(roc["fpr"]) == 1.0 and max(roc["tpr"]) == 1.0
    cm = facts["confusion_matrix"]
    assert len(cm) == 2 and sum(map(sum, cm)) == overall["example_count"]
    assert facts["seconds"] > 0
    # TFMA's own output is there and the facts are JSON.
    assert os.path.exists(out / "evaluation" / "eval_config.json")
    json.dumps(facts, allow_nan=False)


def test_the_model_is_compared_with_the_trivial_predictor_and_a_classical_reference(strict, examples):
    facts, out = strict
    t = facts["trust"]
    assert t["test_rows"] == examples.metadata["rows_test"] and t["metric"] == "auc"
    assert t["trivial"]["metric"] == pytest.approx(0.5)  # a constant score ranks nothing
    assert "prior" in t["trivial"]["predictor"]
    linear, boosting = t["references"]["linear"], t["references"]["boosting"]
    assert linear["estimator"] == "LogisticRegression" and 0.6 < linear["metric"] <= 1.0
    assert 0.6 < boosting["metric"] <= 1.0
    low, high = t["model"]["ci"]
    assert low <= facts["overall"]["auc"] + 1e-3 and t["model"]["metric"] <= high
    assert high - low < 0.2  # ~600 test rows: a usable interval
    assert t["vs_trivial_ci"][0] > 0  # this model beats guessing, with confidence
    page = (out / "report.html").read_text()
    assert "Against simple models" in page and "LogisticRegression" in page


def test_bootstrap_auc_matches_sklearn_and_covers_the_truth():
    import numpy as np
    from sklearn.metrics import roc_auc_score
    from kfx_components.evaluate import trust

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400).astype(float)
    scores = labels * 0.8 + rng.normal(0, 0.7, 400)   # a real but imperfect signal
    outputs = {"model": scores[:, None], "trivial": np.full((400, 1), 0.3)}
    assert trust.metric("binary", labels, outputs["model"]) == pytest.approx(roc_auc_score(labels, scores))
    samples = trust.bootstrap("binary", labels, outputs, resamples=400)
    low, high = trust.interval(samples["model"])
    assert low < roc_auc_score(labels, scores) < high and np.allclose(samples["trivial"], 0.5)
    noise = {"model": rng.normal(size=(400, 1)), "trivial": np.full((400, 1), 0.5)}
    low, high = trust.interval(trust.bootstrap("binary", labels, noise, resamples=400)["model"])
    assert low < 0.5 < high  # random scores: the interval straddles the trivial AUC, no blessing


def test_strict_threshold_is_not_blessed(strict):
    facts, _ = strict
    assert facts["blessed"] is False
    assert any("auc" in r and "0.999" in r for r in facts["reasons"]), facts["reasons"]


def test_better_baseline_fails_change_threshold(strict):
    """Demanding +0.1 AUC over the baseline cannot pass against the same model."""
    facts, _ = strict
    assert facts["baseline_used"] is True
    assert any("auc" in r and "baseline" in r for r in facts["reasons"]), facts["reasons"]
    assert abs(facts["diff_overall"]["auc"]) < 1e-6
    assert facts["baseline_overall"]["auc"] == facts["overall"]["auc"]


def test_report_is_self_contained(strict, taxi_config):
    _, out = strict
    page = (out / "report.html").read_text()
    assert "NOT BLESSED" in page and "auc" in page and taxi_config["slice_feature"] in page
    assert "baseline" in page and "0.999" in page
    assert not re.search(r"https?://|<script|<link|<img|@import|src=", page, re.I)


def _run_component(examples, student, taxi_config, reg, out):
    from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Metrics, Model
    from kfx_components.evaluate.component import evaluate

    arts = dict(evaluation=Artifact(name="evaluation", uri=str(out / "evaluation")),
                blessing=Artifact(name="blessing", uri=str(out / "blessing")),
                metrics=Metrics(name="metrics", uri=str(out / "metrics")),
                classification_metrics=ClassificationMetrics(name="cm", uri=str(out / "cm")),
                report=HTML(name="report", uri=str(out / "report.html")))
    evaluate.python_func(model=Model(name="1", uri=student.path, metadata={}),
                         examples=Dataset(name="2", uri=examples.path, metadata=dict(examples.metadata)),
                         slice_feature=taxi_config["slice_feature"], metric_threshold=0.0,
                         baseline_tolerance=0.01, min_vs_reference=0.85, registry_uri=reg,
                         model_name=taxi_config["model_name"],
                         **arts)
    return arts


def test_component_first_run_then_same_model_baseline(examples, student, taxi_config, tmp_path):
    """First run: empty registry, no threshold -> blessed without a baseline. Once v1 is in the
    registry the component evaluates against it, and the same model passes the change threshold."""
    from kfx_components.common import registry

    reg = str(tmp_path / "registry")
    first = _run_component(examples, student, taxi_config, reg, tmp_path / "first")
    meta = first["blessing"].metadata
    assert meta["blessed"] is True, meta["reasons"]
    assert meta["baseline_used"] is False and meta["baseline_version"] == 0
    assert os.path.exists(tmp_path / "first" / "blessing" / "BLESSED")
    assert first["metrics"].metadata["auc"] > 0.5
    assert first["metrics"].metadata["auc_ci_low"] > first["metrics"].metadata["auc_trivial"] == 0.5
    cm = first["classification_metrics"].metadata
    assert len(cm["confidenceMetrics"]) > 10
    assert [a["displayName"] for a in cm["confusionMatrix"]["annotationSpecs"]] == \
        examples.metadata["label_vocabulary"]
    assert "BLESSED" in (tmp_path / "first" / "report.html").read_text()

    registry.publish({"saved_model": student.path}, {"model_card.md": b"# v1"}, reg, taxi_config["model_name"])
    second = _run_component(examples, student, taxi_config, reg, tmp_path / "second")
    meta = second["blessing"].metadata
    assert meta["blessed"] is True, meta["reasons"]
    assert meta["baseline_used"] is True and meta["baseline_version"] == 1
    assert "baseline" in (tmp_path / "second" / "report.html").read_text()


def test_unknown_slice_feature_raises(examples, student, tmp_path):
    with pytest.raises(ValueError, match="no_such_feature"):
        executor.run(model_dir=student.path, slice_feature="no_such_feature", **_args(examples, tmp_path))


def test_bad_inputs_raise(examples, student, tmp_path):
    with pytest.raises(ValueError, match="problem_type"):
        executor.run(model_dir=student.path, **{**_args(examples, tmp_path), "problem_type": "ranking"})
    with pytest.raises(ValueError, match="baseline_model_dir"):
        executor.run(model_dir=student.path, baseline_model_dir=str(tmp_path / "nope"),
                     **_args(examples, tmp_path))


def test_component_compiles_without_tensorflow(tmp_path):
    code = ("import sys; from kfp import compiler; "
            "from kfx_components.evaluate.component import evaluate; "
            f"compiler.Compiler().compile(evaluate, {str(tmp_path / 'e.yaml')!r}); "
            "assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "kfx-evaluate" in (tmp_path / "e.yaml").read_text()
