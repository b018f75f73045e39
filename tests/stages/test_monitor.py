"""The monitor stage in-process: its body on KFP's own artifact objects (no pipeline, no runner), on a
small registry version of synthetic data and a payload log that a known model answered.

What the platform may read is the stage-neutral metadata on `anomalies` (summary, alert, details,
warnings); the stage's own keys stay beside them. tests/test_monitor.py runs the whole `kfx monitor`."""
import json
import math

import numpy as np
import pytest
from kfp import dsl

from kfx_components.monitor.component import monitor

TEST_AUC = 0.85
MODEL = "m"


def _p(x: float) -> float:
    """The model's P(true): what the payload log says it answered."""
    return 1.0 / (1.0 + math.exp(-2.0 * x))


def _rows(rng, n: int, shift: float = 0.0):
    return [{"x": float(x), "vendor": str(v)} for x, v in zip(rng.normal(shift, 1.0, n), rng.choice(["a", "b"], n))]


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    """A registry version as push publishes it: training statistics, schema (label out of SERVING), card."""
    import tensorflow_data_validation as tfdv

    from kfx_components.monitor import serving_data
    root = tmp_path_factory.mktemp("registry") / MODEL / "v1"
    rng = np.random.default_rng(0)
    train = [{**r, "label": int(rng.random() < _p(r["x"]))} for r in _rows(rng, 3000)]
    stats = serving_data.statistics(train)
    schema = tfdv.infer_schema(stats)
    schema.default_environment.extend(["TRAINING", "SERVING"])
    tfdv.get_feature(schema, "label").not_in_environment.append("SERVING")
    serving_data.write_statistics(stats, str(root / "statistics" / "train" / "FeatureStats.pb"))
    (root / "schema").mkdir()
    tfdv.write_schema_text(schema, str(root / "schema" / "schema.pbtxt"))
    (root / "model_card.json").write_text(json.dumps({
        "model_name": MODEL, "version": 1, "problem_type": "binary", "label_vocabulary": ["false", "true"],
        "trust": {"metric": "auc", "test_rows": 600, "model": {"metric": TEST_AUC}}}))
    return root


def _window(tmp_path, seed: int, shift: float = 0.0, flip: bool = False):
    """(payload log, labels CSV) of 400 requests of 1-2 instances; labels drawn from the model's own
    probabilities (its online AUC is its test AUC), or their opposite with `flip`."""
    rng = np.random.default_rng(seed)
    log, labels = tmp_path / "payloads.jsonl", ["request_id,index,label"]
    with log.open("w") as f:
        for i in range(400):
            instances = _rows(rng, 1 + i % 2, shift)
            outputs = [{"label": "true" if _p(r["x"]) > 0.5 else "false",
                        "probabilities": {"false": 1 - _p(r["x"]), "true": _p(r["x"])}} for r in instances]
            f.write(json.dumps({"request_id": f"r{i}", "model": MODEL, "model_version": "v1",
                                "instances": instances, "outputs": outputs}) + "\n")
            labels += [f"r{i},{k},{'true' if (rng.random() < _p(r['x'])) != flip else 'false'}"
                       for k, r in enumerate(instances)]
    (tmp_path / "labels.csv").write_text("\n".join(labels) + "\n")
    return log, tmp_path / "labels.csv"


def _run(version, tmp_path, log, labels):
    def out(kind, name):
        return kind(name=name, uri=str(tmp_path / "out" / name), metadata={})
    outputs = {"statistics": out(dsl.Artifact, "statistics"), "anomalies": out(dsl.Artifact, "anomalies"),
               "report": out(dsl.HTML, "report"), "metrics": out(dsl.Metrics, "metrics")}
    for name in ("statistics", "anomalies"):
        (tmp_path / "out" / name).mkdir(parents=True)
    monitor.python_func(serving_data=dsl.Dataset(name="window", uri=str(log), metadata={}),
                        model=dsl.Model(name="version", uri=str(version), metadata={}), previous_uri="",
                        labels_uri=str(labels), metric_tolerance=0.05, **outputs)
    return outputs


def test_an_unchanged_window_says_all_is_well_in_stage_neutral_keys(version, tmp_path):
    outputs = _run(version, tmp_path, *_window(tmp_path, 1))
    meta = outputs["anomalies"].metadata
    assert meta["summary"] == f"all is well: 600 serving instances match {MODEL} v1", meta["reasons"]
    assert meta["alert"] is False and meta["details"] == [] and meta["warnings"] == []
    assert meta["retrain"] is False and meta["rows"] == 600           # the stage's own keys stay
    assert meta["online"]["labelled"] == 600 and meta["online"]["judged"] and not meta["online"]["concept_drift"]
    assert outputs["metrics"].metadata["online_auc"] == meta["online"]["value"]
    assert "All is well" in (tmp_path / "out" / "report").read_text()


def test_a_shifted_window_with_flipped_labels_is_one_retraining_line(version, tmp_path):
    outputs = _run(version, tmp_path, *_window(tmp_path, 2, shift=1.5, flip=True))
    meta = outputs["anomalies"].metadata
    online = meta["online"]
    assert meta["alert"] is True and meta["skewed"] == ["x"] and online["concept_drift"]
    assert meta["summary"] == (f"retraining due: x (skew), concept drift (auc {online['value']:.3f} online vs "
                               f"{TEST_AUC:.3f} on test)")
    assert len(meta["details"]) == 2 and meta["details"][0].startswith("x: training/serving skew")
    assert meta["details"][1].startswith("concept drift: online auc")
    verdict = json.loads((tmp_path / "out" / "anomalies" / "verdict.json").read_text())
    assert verdict["summary"] == meta["summary"]


def test_old_json_lines_labels_are_one_line_naming_the_format(version, tmp_path):
    log, _ = _window(tmp_path, 3)
    old = tmp_path / "labels.jsonl"
    old.write_text('{"request_id": "r0", "index": 0, "label": "true"}\n')
    with pytest.raises(ValueError, match=r"labels .*labels.jsonl: JSON, not CSV; late labels are a CSV with "
                                         r"the header request_id,index,label"):
        _run(version, tmp_path, log, old)
