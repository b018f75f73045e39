"""kfx_components.common.component_io, the adapter every component body uses, on KFP's own
artifact objects (no pipeline, no runner), and one body run in-process through it."""
import json

import pytest
from kfp import dsl

from kfx_components.common import component_io

PROBLEM = {"label_key": "tips", "problem_type": "multiclass", "num_classes": 3, "label_vocabulary": ["a", "b", "c"]}


def _artifact(kind, tmp_path, name, metadata=None):
    return kind(name=name, uri=str(tmp_path / name), metadata=dict(metadata or {}))


def test_problem_gives_the_executor_arguments_of_the_travelling_facts(tmp_path):
    source = _artifact(dsl.Dataset, tmp_path, "examples", {**PROBLEM, "num_classes": "3", "rows": 10})
    assert component_io.problem(source) == {"label_key": "tips", "problem_type": "multiclass", "num_classes": 3}
    regression = _artifact(dsl.Dataset, tmp_path, "r", {"label_key": "fare", "problem_type": "regression",
                                                         "num_classes": None})
    assert component_io.problem(regression)["num_classes"] == 0
    with pytest.raises(KeyError, match="label_key"):
        component_io.problem(_artifact(dsl.Dataset, tmp_path, "bare", {"problem_type": "binary"}))


def test_carry_puts_facts_and_the_travelling_facts_which_win(tmp_path):
    source = _artifact(dsl.Dataset, tmp_path, "transformed", {**PROBLEM, "rows": 10, "kfx_fingerprint": "f1"})
    output = _artifact(dsl.Model, tmp_path, "model", {"kept": True})
    component_io.carry(output, source, {"params": 500, "label_key": "stale", "rows": 99})
    assert output.metadata == {"kept": True, "params": 500, "rows": 99, **PROBLEM}
    assert source.metadata["rows"] == 10 and "params" not in source.metadata   # the input is not touched
    bare = _artifact(dsl.Model, tmp_path, "bare")
    component_io.carry(bare, source)
    assert bare.metadata == PROBLEM   # only the travelling facts: not rows, not the input's fingerprint


def test_put_chooses_keys_it_holds_then_more(tmp_path):
    facts = {"num_anomalies": 2, "seconds": 1.5, "junk": [1], "anomalies_eval": 1}
    report = _artifact(dsl.HTML, tmp_path, "report", {"old": 1})
    component_io.put(report, facts, ("num_anomalies", "seconds", "absent"), seconds=9, extra="x")
    assert report.metadata == {"old": 1, "num_anomalies": 2, "seconds": 9, "extra": "x"}
    everything = _artifact(dsl.Artifact, tmp_path, "all")
    component_io.put(everything, facts)
    assert everything.metadata == facts and everything.metadata is not facts


def test_result_is_the_stage_neutral_summary_and_published(tmp_path):
    pushed = _artifact(dsl.Model, tmp_path, "pushed_model")
    component_io.result(pushed, "pushed m v2 (auc 0.81)", published=True, version=2, pushed=True)
    assert pushed.metadata == {"version": 2, "pushed": True, "summary": "pushed m v2 (auc 0.81)", "published": True}
    not_pushed = _artifact(dsl.Model, tmp_path, "not")
    component_io.result(not_pushed, "not pushed: below threshold", published=False, reason="below threshold")
    assert not_pushed.metadata["published"] is False
    verdict = _artifact(dsl.Artifact, tmp_path, "verdict")
    component_io.result(verdict, "monitor: no drift", retrain=False)
    assert verdict.metadata == {"retrain": False, "summary": "monitor: no drift"}
    assert "published" not in verdict.metadata   # a stage that publishes nothing says nothing of it
    # the stage-neutral keys are the adapter's to set: a fact of that name cannot override them
    clash = _artifact(dsl.Artifact, tmp_path, "clash")
    with pytest.raises(TypeError):
        component_io.result(clash, "a", **{"summary": "b"})


def test_write_text_creates_the_directory_and_writes_utf8(tmp_path):
    card = dsl.Markdown(name="model_card", uri=str(tmp_path / "deep" / "er" / "model_card"), metadata={})
    component_io.write_text(card, "# Modèle ✓\n")
    assert (tmp_path / "deep" / "er" / "model_card").read_bytes() == "# Modèle ✓\n".encode("utf-8")
    component_io.write_text(card, json.dumps({"deployed": False}))   # a second write replaces the first
    assert json.loads((tmp_path / "deep" / "er" / "model_card").read_text()) == {"deployed": False}


def test_log_metrics_logs_values_as_given_and_metadata(tmp_path):
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"), metadata={})
    component_io.log_metrics(metrics, {"best_score": 0.75, "trials": 3}, objective="val_auc")
    assert metrics.metadata == {"best_score": 0.75, "trials": 3, "objective": "val_auc"}
    assert isinstance(metrics.metadata["trials"], int)   # no conversion: a body converts what it must
    component_io.log_metrics(metrics, {"trials": 5})   # a later value replaces the earlier one
    assert metrics.metadata["trials"] == 5 and metrics.metadata["objective"] == "val_auc"


def test_names_and_source_fingerprint_of_inputs(tmp_path):
    model = _artifact(dsl.Model, tmp_path, "model-7", {"kfx_fingerprint": "aa"})
    quantized = _artifact(dsl.Model, tmp_path, "quantized-7", {"kfx_fingerprint": "bb"})
    assert component_io.names(model=model, quantized=quantized) == {"model": "model-7", "quantized": "quantized-7"}
    assert component_io.source_fingerprint(model, quantized) == "aa+bb"
    assert component_io.source_fingerprint(quantized, model) == "bb+aa"
    on_kfp = _artifact(dsl.Model, tmp_path, "kfp", {})   # KFP adds no fingerprint: the consumer compares bytes
    assert component_io.source_fingerprint(model, on_kfp) == ""


def test_the_tune_body_carries_facts_and_logs_metrics_through_the_adapter(tmp_path, monkeypatch):
    """The tune component body, in-process, its executor replaced by a known result."""
    from kfx_components.tune import executor
    from kfx_components.tune.component import tune
    seen = {}

    def run(**kwargs):
        seen.update(kwargs)
        return {"best_score": 0.8, "trials": 4, "seconds": 2.5, "objective": "val_auc", "algorithm": "random",
                "width": 16, "label_key": "stale", "metric": "accuracy", "family": "network",
                "families": {"network": {"eval_metric": 0.8, "trials": 4, "seconds": 2.5}}}

    monkeypatch.setattr(executor, "run", run)
    examples = _artifact(dsl.Dataset, tmp_path, "transformed", {**PROBLEM, "rows": 10})
    hyperparameters = _artifact(dsl.Artifact, tmp_path, "hyperparameters")
    metrics = _artifact(dsl.Metrics, tmp_path, "metrics")
    tune.python_func(transformed_examples=examples, transform_graph=_artifact(dsl.Artifact, tmp_path, "graph"),
                     algorithm="random", max_trials=4, epochs=1, hyperparameters=hyperparameters, metrics=metrics)
    assert (seen["label_key"], seen["problem_type"], seen["num_classes"]) == ("tips", "multiclass", 3)
    assert hyperparameters.metadata["width"] == 16 and hyperparameters.metadata["label_key"] == "tips"
    assert hyperparameters.metadata["label_vocabulary"] == ["a", "b", "c"] and "rows" not in hyperparameters.metadata
    assert seen["model_family"] == "auto"
    assert metrics.metadata == {"eval_accuracy_network": 0.8, "seconds": 2.5, "family": "network"}
