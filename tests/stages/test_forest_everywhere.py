"""A TF-DF forest goes everywhere a network goes: infra_validate serves it in the serving runtime, quantize
says why it has no edge variant, push publishes it without one, `kfx predict` scores it, and evaluate's
trust and explanation read it. The session's small forest (tests/stages/conftest.py) is the model."""
import csv
import json
import os

import numpy as np
import pytest

from kfx_components.common import io
from kfx_formats import registry
from kfx_components.common import loading

ROWS = 40   # rows served, scored and explained: enough to compare, cheap to run


@pytest.fixture(scope="module")
def test_rows(examples):
    return [r for _, r in zip(range(ROWS), io.read_records(io.split_file(examples.path, io.TEST)))]


@pytest.fixture(scope="module")
def served(forest, test_rows):
    """The forest's own serving_default answers (P(class 1)) on the test rows."""
    import tensorflow as tf
    fn = loading.load_model(forest.path).signatures["serving_default"]
    return fn(examples=tf.constant(test_rows))["probabilities"].numpy().reshape(-1)


@pytest.fixture(scope="module")
def quantized(forest, model_args, examples, work):
    from kfx_components.quantize import executor
    out = str(work / "forest_quantized")
    return executor.run(model_dir=forest.path, quantized_dir=out, **model_args), out


def test_the_serving_runtime_loads_and_answers_for_the_forest(forest, examples, work):
    """infra_validate in the serving venv as a process (kfx_serving.model loads through kfx_formats)."""
    from kfx_components.infra_validate import executor, launcher
    try:
        launcher.find_runtime("process")
    except RuntimeError as err:
        pytest.skip(str(err))
    facts = executor.run(forest.path, examples.path, str(work / "forest_infra"), blessed=True, runtime="process",
                         requests=ROWS)
    assert facts["infra_blessed"] is True, facts["reason"]
    assert facts["requests"] == ROWS and facts["max_difference"] <= facts["tolerance"]


def test_quantize_says_why_a_forest_has_no_edge_variant(quantized):
    facts, out = quantized
    assert facts["variants"] == {} and facts["recommended"] is None
    assert "no TFLite form" in facts["no_edge_variant"] and "\n" not in facts["no_edge_variant"]
    assert os.listdir(out) == ["quantization.json"]   # nothing converted
    written = json.load(open(os.path.join(out, "quantization.json")))
    assert written["recommended"] is None and written["no_edge_variant"] == facts["no_edge_variant"]
    assert facts["reference"]["metric"] > 0.8 and facts["reference"]["saved_model_bytes"] > 0   # scored: AUC


def test_push_then_batch_predict_score_the_forest_like_its_serving_default(forest, quantized, examples, test_rows,
                                                                         served, work):
    """Push publishes the forest with no TFLite variant; `kfx predict` (kfx/serving/batch.py) scores a CSV of
    the test rows with it, and its probabilities are the forest's own serving_default outputs."""
    import tensorflow as tf

    from kfx.serving import batch
    from kfx_components.push import executor as push

    facts, out = quantized
    reg = str(work / "forest_registry")
    blessing = {"blessed": True, "reasons": []}
    card = push.make_card("forest", {}, facts, blessing, examples.metadata, {}, {})   # as the push component does
    pushed = push.run(model_dir=forest.path, quantized_dir=out, blessing=blessing, registry_uri=reg, model_name="forest",
                      card=card)
    assert pushed["pushed"] is True
    assert "no TFLite form" in pushed["model_card"] and "no TFLite form" in pushed["model_card_html"]   # why none
    assert sorted(os.listdir(os.path.join(pushed["uri"], registry.TFLITE))) == ["quantization.json"]

    rows = [{k: _text(v) for k, v in tf.train.Example.FromString(r).features.feature.items()} for r in test_rows]
    names = sorted({k for row in rows for k in row})
    data = str(work / "forest_rows.csv")
    with open(data, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
    predictions = work / "forest_predictions"
    assert batch.batch_predict(f"{reg}/forest", data, str(predictions), batch_size=16)["rows"] == ROWS
    lines = [json.loads(line) for path in predictions.glob("*.jsonl") for line in open(path)]
    positive = str((examples.metadata.get("label_vocabulary") or [0, 1])[-1])
    scored = np.array([p["probabilities"][positive] for p in sorted(lines, key=lambda p: p["key"])])
    np.testing.assert_allclose(scored, served, atol=1e-5)
    assert served.std() > 0.01   # the forest tells rows apart: equal outputs would prove nothing


def _text(feature) -> str:
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value) if kind else []
    if not values:
        return ""
    v = values[0]
    return v.decode() if isinstance(v, bytes) else repr(float(v)) if kind == "float_list" else str(v)


def test_evaluate_trusts_and_explains_the_forest(forest, examples, model_args, served, test_rows):
    from kfx_components.evaluate import explain, trust

    serve = trust.load_serving(forest.path)
    np.testing.assert_allclose(trust.predict(serve, test_rows).reshape(-1), served, atol=1e-6)
    columns = io.read_columns(examples.path)
    test = trust.read_split(examples.path, io.TEST, model_args["label_key"], columns)
    facts = trust.assess(serve, examples.path, test, model_args["label_key"], "binary", 2)
    assert facts["metric"] == "auc" and facts["model"]["metric"] > facts["trivial"]["metric"] + 0.2, facts
    e = explain.explain(serve, test.table, columns, "binary", 2, rows=ROWS)
    names = [i["feature"] for i in e["importance"]]
    assert "label" not in names and e["importance"][0]["mean_abs_shap"] > 0
    assert "payment_type" in names[:3], names   # as for the network: cash tips are not recorded
    # local accuracy, as loose as test_analysis's on the network (taxi's missing values: 0.03 here)
    assert e["additivity_max_error"] < 0.05
