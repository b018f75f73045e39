"""The temporal backtest (evaluate's ``backtest``): a drift scenario on a tiny trained model.

Three spans go through kfx run's window resolution (train_spans=2 with the backtest) and the real
ingest: spans 1 and 2 (y = [x > 0]) become train/eval/test, span 3, where the concept has drifted
(y = [x < 0]), the backtest split. The candidate learned the old concept; the random test split
comes from the same spans, so it looks excellent there, and the newest span shows the truth.
bless_on=random blesses it and reports the failing backtest; bless_on=temporal refuses it.
"""
import json
import shutil
import time

import numpy as np
import pytest

from kfx_components.common import io
from kfx_components.evaluate import backtest, executor, outputs

# TFMA 0.47 with NumPy >= 1.25 warns once per example (calibration histogram); keep the output readable.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::RuntimeWarning")

SPAN_ROWS = 700
THRESHOLD = 0.7   # AUC


def _concept(rows: int, seed: int, drifted: bool):
    """x, z ~ N(0, 1) and y = [x > 0] ([x < 0] once drifted), 10% of the labels flipped."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    x, z = rng.normal(size=rows), rng.normal(size=rows)
    y = ((x < 0) if drifted else (x > 0)) ^ (rng.random(rows) < 0.1)
    return pd.DataFrame({"x": x, "z": z, "y": y.astype(int)})


def _records(frame) -> list:
    import tensorflow as tf

    return [tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[row.x])),
        "z": tf.train.Feature(float_list=tf.train.FloatList(value=[row.z])),
        "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[row.y]))})).SerializeToString()
        for row in frame.itertuples()]


def _train(records: list, model_dir: str) -> str:
    """A logistic regression on (x, z) fitted by gradient descent, served like kfx's models
    (``serving_default``: serialized raw tf.Examples -> ``probabilities`` [n, 1]). A tf.Module, not a
    Keras model: the first Keras fit and save in a process costs over a minute on a loaded machine."""
    import tensorflow as tf

    spec = {k: tf.io.FixedLenFeature([], tf.float32) for k in ("x", "z")}
    parsed = tf.io.parse_example(tf.constant(records), {**spec, "y": tf.io.FixedLenFeature([], tf.int64)})
    features, labels = np.stack([parsed["x"].numpy(), parsed["z"].numpy()], axis=1), parsed["y"].numpy()
    weights, bias = np.zeros(2), 0.0
    for _ in range(300):   # log loss, step 0.5
        error = 1 / (1 + np.exp(-(features @ weights + bias))) - labels
        weights -= 0.5 * features.T @ error / len(labels)
        bias -= 0.5 * error.mean()
    model = tf.Module()
    model.weights = tf.Variable(weights[:, None].astype(np.float32))
    model.bias = tf.Variable(np.float32(bias))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(examples):
        p = tf.io.parse_example(examples, spec)
        return {"probabilities": tf.sigmoid(tf.stack([p["x"], p["z"]], axis=1) @ model.weights + model.bias)}

    tf.saved_model.save(model, model_dir, signatures={"serving_default": serve.get_concrete_function()})
    return model_dir


@pytest.fixture(scope="module")
def drift(tmp_path_factory):
    """(ingest's examples with the backtest split, the same without it, candidate, production baseline).
    The baseline was trained on the newer concept: worse than the candidate on the random test
    split, better on the newest span."""
    from kfx.runner import spans
    from kfx_components.ingest import executor as ingest

    work = tmp_path_factory.mktemp("backtest")
    for span in (1, 2, 3):
        (work / f"incoming/span-{span}").mkdir(parents=True)
        _concept(SPAN_ROWS, span, drifted=span == 3).to_csv(work / f"incoming/span-{span}/data.csv", index=False)
    window = spans.window(str(work / "incoming/span-{SPAN}/data.csv"), train_spans=2).parameters()
    examples = str(work / "examples")
    facts = ingest.run(data_path=window["data_uri"], examples_dir=examples, label="y", problem_type="binary",
                       span_paths=window["span_uris"], spans=window["spans"], backtest_path=window["backtest_uri"],
                       backtest_span=window["backtest_span"])
    assert (facts["spans"], facts["backtest_span"], facts["rows_backtest"]) == ([1, 2], 3, SPAN_ROWS)
    one_span = shutil.copytree(examples, work / "one_span", ignore=shutil.ignore_patterns(backtest.SPLIT))
    candidate = _train(list(io.read_records(io.split_file(examples, io.TRAIN))), str(work / "candidate"))
    baseline = _train(_records(_concept(1200, 9, drifted=True)), str(work / "baseline"))
    return dict(examples=examples, one_span=str(one_span), candidate=candidate, baseline=baseline, work=work,
                rows_test=facts["rows_test"])


def _evaluate(drift, name: str, **kw) -> dict:
    out = drift["work"] / name
    return executor.run(model_dir=drift["candidate"], evaluation_dir=str(out / "evaluation"),
                        report_path=str(out / "report.html"), label_key="y", problem_type="binary",
                        num_classes=2, metric_threshold=THRESHOLD, explain_rows=0, **kw)


@pytest.fixture(scope="module")
def on_random(drift):
    """bless_on=random, against the production baseline: the backtest is judged and reported."""
    return _evaluate(drift, "random", examples_dir=drift["examples"], baseline_model_dir=drift["baseline"],
                     bless_on="random")


@pytest.fixture(scope="module")
def on_temporal(drift):
    """bless_on=temporal, a first run (no baseline): the backtest's threshold alone must pass too."""
    return _evaluate(drift, "temporal", examples_dir=drift["examples"], bless_on="temporal")


def test_the_random_split_blesses_a_model_the_backtest_shows_failing(on_random, drift):
    facts = on_random
    assert facts["blessed"] is True, facts["reasons"]
    assert facts["overall"]["auc"] > 0.85 and facts["trust"]["model"]["metric"] > 0.85   # the random split
    assert facts["overall"]["example_count"] == facts["trust"]["test_rows"] == drift["rows_test"]
    b = facts["backtest"]
    assert b["rows"] == SPAN_ROWS and b["metric"] == "auc" and b["decides"] is False
    # drifted concept: the candidate ranks the newest span backwards, the baseline (newer concept) well
    assert b["value"] < 0.2 and b["interval"][0] <= b["value"] <= b["interval"][1] < 0.3
    assert b["baseline"]["value"] > 0.8 and b["baseline"]["interval"][0] > 0.7
    assert b["difference"]["value"] == pytest.approx(b["value"] - b["baseline"]["value"])
    assert b["difference"]["interval"][1] < -0.5        # worse than production, with confidence
    assert b["verdict"] == "fail" and len(b["reasons"]) == 2   # the threshold and the change vs baseline
    assert "change vs baseline" in b["reasons"][1] and "required >= -0.01" in b["reasons"][1]
    low, high = b["difference"]["interval"]
    assert f"95% CI {low:+.4f} to {high:+.4f}; baseline {b['baseline']['value']:.4f}" in b["reasons"][1]

    # what the component writes: the blessing's metadata, the Metrics scalars, the verdict file
    meta = outputs.verdict_metadata(facts, "registry://baseline")
    assert meta["bless_on"] == "random" and meta["backtest"] == b
    assert set(b) >= {"rows", "metric", "value", "interval", "baseline", "difference", "verdict", "reasons"}
    json.dumps(meta, allow_nan=False)
    scalars = outputs.logged_metrics(facts)
    assert scalars["backtest_auc"] == pytest.approx(b["value"])
    assert scalars["backtest_auc_ci_low"] <= scalars["backtest_auc"] <= scalars["backtest_auc_ci_high"]
    assert scalars["backtest_auc_baseline"] == pytest.approx(b["baseline"]["value"])
    assert scalars["backtest_auc_change"] == pytest.approx(b["difference"]["value"])
    outputs.write_blessing(str(drift["work"] / "blessing"), facts)
    assert (drift["work"] / "blessing" / "BLESSED").exists()

    # the evaluate report and the model card show both splits, and which one blessed
    page = (drift["work"] / "random" / "report.html").read_text()
    assert f"Temporal backtest ({SPAN_ROWS} rows" in page and "bless_on=random" in page and "fails" in page
    _card_shows_both(meta, facts, decides="no (reported)")


def _card_shows_both(meta: dict, facts: dict, decides: str) -> None:
    from kfx_components.push import card_html
    from kfx_components.push import executor as push

    card = push.make_card("m", {}, {}, meta, {"problem_type": "binary", "label_key": "y"}, {}, {})
    header, rows = card_html.split_table(card)
    assert header[2] == "auc" and [r[0] for r in rows] == ["random test split", "temporal backtest (newest span)"]
    random_row, temporal_row = rows
    assert random_row[1] == facts["trust"]["test_rows"] and random_row[2] == facts["trust"]["model"]["metric"]
    assert temporal_row[1:3] == [facts["backtest"]["rows"], facts["backtest"]["value"]]
    assert temporal_row[-2:] == ["fail", decides]
    html, markdown = card_html.render(card), push.render_card(card)
    for text in (html, markdown):
        assert f"blessed on: {meta['bless_on']}" in text and "temporal backtest (newest span)" in text
        assert f"{facts['backtest']['value']:.4f}" in text


def test_bless_on_temporal_refuses_it_naming_the_backtest_metric(on_temporal):
    facts = on_temporal
    b = facts["backtest"]
    assert facts["blessed"] is False and b["decides"] is True and b["baseline"] is None
    assert facts["reasons"] == b["reasons"]   # the random split's gates pass: the backtest alone refuses
    assert len(facts["reasons"]) == 1
    reason = facts["reasons"][0]
    assert reason.startswith(f"backtest auc on the {SPAN_ROWS} backtest rows (the newest span) = ")
    assert f"{b['value']:.4f}" in reason and f"required >= {THRESHOLD:g}" in reason and "\n" not in reason
    meta = outputs.verdict_metadata(facts, "")
    assert meta["bless_on"] == "temporal" and meta["blessed"] is False
    _card_shows_both(meta, facts, decides="yes")


def test_bless_on_temporal_without_a_backtest_split_fails_at_once_in_one_line(drift):
    start = time.time()
    with pytest.raises(ValueError) as raised:
        _evaluate(drift, "one_span", examples_dir=drift["one_span"], bless_on="temporal")
    message = str(raised.value)
    assert "\n" not in message and "train_spans" in message and "backtest" in message
    assert time.time() - start < 2   # before any TFMA
    with pytest.raises(ValueError, match="bless_on 'newest': expected one of random, temporal"):
        _evaluate(drift, "one_span", examples_dir=drift["one_span"], bless_on="newest")
    # the component passes bless_on through (the pipeline parameter's path)
    from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Metrics, Model
    from kfx_components.evaluate.component import evaluate

    out = drift["work"] / "component"
    outs = dict(evaluation=Artifact, blessing=Artifact, metrics=Metrics, classification_metrics=ClassificationMetrics,
                report=HTML, explanation=HTML)
    with pytest.raises(ValueError, match="^bless_on='temporal' needs a backtest split"):
        evaluate.python_func(
            model=Model(name="m", uri=drift["candidate"], metadata={}),
            examples=Dataset(name="e", uri=drift["one_span"], metadata={"label_key": "y", "problem_type": "binary",
                                                                        "num_classes": 2}),
            slice_features=[], crossed_slices=[], metric_threshold=0.0, baseline_tolerance=0.01, min_vs_reference=0.0,
            baseline_model_uri="", bless_on="temporal", **{k: c(name=k, uri=str(out / k)) for k, c in outs.items()})


def test_without_a_backtest_split_nothing_changes(on_random):
    """A run on one span: no backtest scalars, and the card shows the test split only."""
    from kfx_components.push import card_html
    from kfx_components.push import executor as push

    facts = {**on_random, "backtest": None}
    assert not [k for k in outputs.logged_metrics(facts) if k.startswith("backtest")]
    card = push.make_card("m", {}, {}, outputs.verdict_metadata(facts, ""), {"problem_type": "binary"}, {}, {})
    assert card_html.split_table(card) == ([], [])
    assert "temporal backtest" not in card_html.render(card) + push.render_card(card)


def test_kfx_run_refuses_bless_on_temporal_without_a_backtest_before_anything_runs(tmp_path):
    from kfx.runner.params import UsageError, run_parameters

    for span in (1, 2):
        (tmp_path / f"span-{span}").mkdir()
        _concept(5, span, drifted=False).to_csv(tmp_path / f"span-{span}/data.csv", index=False)
    pattern = str(tmp_path / "span-{SPAN}/data.csv")
    assert run_parameters(data=pattern, pairs=["bless_on=temporal"], train_spans=1)["backtest_span"] == 2
    for kw in (dict(train_spans=1, backtest=False), dict()):
        with pytest.raises(UsageError, match=r"^bless_on=temporal needs train_spans with a backtest \(") as raised:
            run_parameters(data=pattern, pairs=["bless_on=temporal"], **kw)
        assert "\n" not in str(raised.value)
