"""push: a blessed model lands in the registry as a new version with its card; nothing otherwise."""
import json
import os
import subprocess
import sys

import pytest

from kfx_formats import registry
from kfx_components.push import executor

BLESSED = {"blessed": True, "reasons": [], "baseline_used": False}


@pytest.fixture
def quantized(tmp_path):
    """A stand-in for quantize's output: the push stage copies it as is, it never reads TFLite."""
    q = tmp_path / "quantized"
    q.mkdir()
    for variant in ("dynamic_range", "float16", "int8"):
        (q / f"{variant}.tflite").write_bytes(b"TFL3" + variant.encode())
    return str(q)


def _card(name):
    return {"model_name": name, "problem_type": "binary", "label_key": "label",
            "metrics": {"overall": {"auc": 0.81, "accuracy": 0.77, "example_count": 750.0},
                        "per_slice": {"trip_start_hour=1": {"auc": 0.7, "example_count": 20.0}},
                        "slice_features": ["trip_start_hour"]},
            "data": {"rows": 3000, "source": "data.csv"},
            "hyperparameters": {"width": 32, "depth": 2, "learning_rate": 0.01},
            "quantized": {"int8": {"size_bytes": 12345, "metric": 0.8, "metric_delta": -0.01}},
            "lineage": {"model": "7", "examples": "1"}}


def test_not_blessed_publishes_nothing(quantized, tmp_path):
    """Not blessed: nothing is read or published (the model directory is not even looked at)."""
    reg = str(tmp_path / "registry")
    facts = executor.run(model_dir=str(tmp_path / "never-read"), quantized_dir=quantized,
                         blessing={"blessed": False, "reasons": ["auc (Overall) = 0.6, required >= 0.9"]},
                         registry_uri=reg, model_name="m", card=_card("m"))
    assert facts["pushed"] is False and "auc" in facts["reason"]
    assert registry.latest(reg, "m") is None
    assert not os.path.exists(os.path.join(reg, "m")) or os.listdir(os.path.join(reg, "m")) == []


def test_push_publishes_a_version_that_serves(student, examples, quantized, tmp_path):
    import tensorflow as tf

    reg, name = str(tmp_path / "registry"), "chicago-taxi"
    facts = executor.run(model_dir=student.path, quantized_dir=quantized, blessing=BLESSED,
                         registry_uri=reg, model_name=name, card=_card(name))
    assert facts["pushed"] is True and facts["version"] == 1
    assert facts["uri"] == f"{reg}/{name}/v1" and registry.latest(reg, name).number == 1
    v1 = facts["uri"]
    assert sorted(os.listdir(v1)) == ["contract.json", "model_card.html", "model_card.json", "model_card.md",
                                      "saved_model", "tflite"]
    page = open(os.path.join(v1, "model_card.html")).read()
    assert facts["model_card_html"] == page and "trip_start_hour=1" in page and "<svg" in page
    assert sorted(os.listdir(os.path.join(v1, "tflite"))) == ["dynamic_range.tflite", "float16.tflite",
                                                              "int8.tflite"]
    card_md = open(os.path.join(v1, "model_card.md")).read()
    assert facts["model_card"] == card_md
    for text in (f"{name} v1", "auc", "trip_start_hour=1", "data.csv", "learning_rate", "int8",
                 "12.1 KiB", "Lineage"):
        assert text in card_md, text
    card = json.load(open(os.path.join(v1, "model_card.json")))
    assert card["version"] == 1 and card["uri"] == v1 and card["lineage"]["model"] == "7"
    assert "## Request contract" in card_md and "id='contract'" in page and card["contract"]   # contract.json's table

    # The published SavedModel loads and serves raw tf.Examples from the eval split.
    records = [r.numpy() for r in tf.data.TFRecordDataset(
        os.path.join(examples.path, "eval", "data.tfrecord.gz"), compression_type="GZIP").take(16)]
    serve = tf.saved_model.load(os.path.join(v1, "saved_model")).signatures["serving_default"]
    probs = serve(examples=tf.constant(records))["probabilities"].numpy()
    assert probs.shape == (16, 1) and ((probs >= 0) & (probs <= 1)).all()

    # The same model again publishes nothing new: "already v1".
    before = open(os.path.join(v1, "model_card.json"), "rb").read()
    same = executor.run(model_dir=student.path, quantized_dir=quantized, blessing=BLESSED,
                        registry_uri=reg, model_name=name, card=_card(name))
    assert same["already"] is True and same["version"] == 1 and same["uri"] == v1
    assert [v.number for v in registry.versions(reg, name)] == [1]
    assert executor.summary_line(same, {}).startswith("already v1")

    # A different model (one variant changed) is v2; v1 is left as it was.
    with open(os.path.join(quantized, "int8.tflite"), "ab") as f:
        f.write(b"\0")
    again = executor.run(model_dir=student.path, quantized_dir=quantized, blessing=BLESSED,
                         registry_uri=reg, model_name=name, card=_card(name))
    assert again["version"] == 2 and again["already"] is False
    assert open(os.path.join(v1, "model_card.json"), "rb").read() == before
    assert "v2" in open(os.path.join(again["uri"], "model_card.md")).read()


def test_push_component_builds_the_card(student, examples, quantized, tmp_path):
    from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics, Model
    from kfx_components.push.component import push

    hp = tmp_path / "hp"
    hp.mkdir()
    (hp / "hyperparameters.json").write_text(json.dumps({"width": 16, "depth": 2, "learning_rate": 0.003}))
    (tmp_path / "blessing").mkdir()
    (tmp_path / "blessing" / "BLESSED").write_text("")
    reg = str(tmp_path / "registry")
    pushed = Model(name="pushed", uri=str(tmp_path / "pushed"), metadata={})
    card_out = Markdown(name="card", uri=str(tmp_path / "card.md"))
    card_page = HTML(name="card_html", uri=str(tmp_path / "card.html"))
    stats, schema = tmp_path / "statistics", tmp_path / "schema"
    (stats / "train").mkdir(parents=True)
    (stats / "train" / "FeatureStats.pb").write_bytes(b"stats")
    schema.mkdir()
    (schema / "schema.pbtxt").write_text("feature {}")
    push.python_func(
        model=Model(name="11", uri=student.path, metadata={}),
        quantized=Model(name="12", uri=quantized, metadata={"variants": {
            "int8": {"file": "int8.tflite", "size_bytes": 2048, "metric": 0.8, "metric_delta": -0.01,
                     "tensors": {"inputs": {}}}}}),
        blessing=Artifact(name="13", uri=str(tmp_path / "blessing"), metadata={
            "blessed": True, "reasons": [], "baseline_used": False, "slice_features": ["trip_start_hour"],
            "per_slice": {"trip_start_hour=3": {"auc": 0.75, "example_count": 9.0}}}),
        eval_metrics=Metrics(name="14", uri=str(tmp_path / "m"), metadata={"auc": 0.8, "accuracy": 0.7}),
        examples=Dataset(name="15", uri=examples.path, metadata=dict(examples.metadata)),
        hyperparameters=Artifact(name="16", uri=str(hp), metadata={"width": 16, "depth": 2,
                                                                   "learning_rate": 0.003}),
        statistics=Artifact(name="17", uri=str(stats)), schema=Artifact(name="18", uri=str(schema)),
        registry_uri=reg, model_name="taxi", pushed_model=pushed, model_card=card_out, model_card_html=card_page)
    assert pushed.uri == f"{reg}/taxi/v1"
    # what the next run's drift check and the monitor compare new data with
    assert (tmp_path / "registry/taxi/v1/statistics/train/FeatureStats.pb").read_bytes() == b"stats"
    assert (tmp_path / "registry/taxi/v1/schema/schema.pbtxt").read_text() == "feature {}"
    expected = {"pushed": True, "already": False, "version": 1, "model_name": "taxi",
                "summary": "pushed taxi v1 (model)"}
    assert {k: pushed.metadata.get(k) for k in expected} == expected
    text = (tmp_path / "card.md").read_text()
    assert "taxi v1" in text and "trip_start_hour=3" in text and "2.0 KiB" in text
    page = (tmp_path / "card.html").read_text()
    assert page == open(f"{reg}/taxi/v1/model_card.html").read() and "trip_start_hour=3" in page
    card = json.load(open(f"{reg}/taxi/v1/model_card.json"))
    assert card["lineage"] == {"model": "11", "quantized": "12", "blessing": "13", "eval_metrics": "14",
                               "examples": "15", "hyperparameters": "16"}
    assert card["hyperparameters"]["width"] == 16
    assert card["data"]["rows"] == examples.metadata["rows"]


def test_push_and_registry_do_not_import_tensorflow(tmp_path):
    code = ("import sys; from kfp import compiler; import kfx_components.push.executor; "
            "from kfx_components.push.component import push; "
            f"compiler.Compiler().compile(push, {str(tmp_path / 'p.yaml')!r}); "
            "assert 'tensorflow' not in sys.modules, 'push imported tensorflow'")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "kfx-push" in (tmp_path / "p.yaml").read_text()


def test_bad_blessing_raises(quantized, tmp_path):
    with pytest.raises(ValueError, match="blessing"):
        executor.run(model_dir=str(tmp_path), quantized_dir=quantized, blessing={},
                     registry_uri=str(tmp_path), model_name="m", card={})
    with pytest.raises(ValueError, match="model_dir"):
        executor.run(model_dir=str(tmp_path), quantized_dir=quantized, blessing=BLESSED,
                     registry_uri=str(tmp_path / "r"), model_name="m", card={})
