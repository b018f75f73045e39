"""infra_validate: the candidate is loaded and queried in the real serving runtime (kfx_serving on
KServe's ModelServer: the kfx-serve container, or the serving venv as a process) before push.

A tiny Keras model with the kfx serving signature (serialized tf.Examples in, probabilities out) is
infra-blessed, its served answers equal the in-process ones and its load time and p99 are recorded;
a model the server cannot load (a signature taking floats, not serialized tf.Examples) is not, and
push then publishes nothing, saying why in one line.
"""
import json
import os
import subprocess

import pytest

from kfx_components.common import io
from kfx_components.infra_validate import executor, launcher
from kfx_components.push import executor as push_executor
from kfx_formats import registry

COMPANIES = ["Flash Cab", "Taxi Affiliation Services", "Sun Taxi"]
ROWS = 12


def _runtime_or_skip(kind: str) -> launcher.Runtime:
    try:
        return launcher.find_runtime(kind)
    except RuntimeError as err:
        pytest.skip(str(err))


def _example(fare, company, tips):
    import tensorflow as tf
    feature = {"tips": tf.train.Feature(int64_list=tf.train.Int64List(value=[tips]))}
    if fare is not None:   # a missing value, as ingest writes it: the feature is absent
        feature["fare"] = tf.train.Feature(float_list=tf.train.FloatList(value=[fare]))
    feature["company"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[company.encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def examples_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("infra-examples")
    rows = [_example(None if i == 3 else 2.5 + 1.75 * i, COMPANIES[i % 3], i % 2) for i in range(ROWS)]
    for split in io.SPLITS:
        io.write_records(io.split_file(str(root), split), rows)
    return str(root)


@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    """A tf-keras model behind the serving signature kfx stages export (components/common/model.py):
    raw tf.Examples parsed in the graph, a missing fare imputed, probabilities [n, 1] out."""
    import tensorflow as tf

    from kfx_components.common import model  # noqa: F401 - tells AutoGraph to leave tf_keras alone (-30 s)
    inputs = tf.keras.Input(shape=(4,))
    keras_model = tf.keras.Model(inputs, tf.keras.layers.Dense(1, activation="sigmoid")(
        tf.keras.layers.Dense(8, activation="relu", kernel_initializer="glorot_uniform")(inputs)))
    spec = {"fare": tf.io.VarLenFeature(tf.float32), "company": tf.io.VarLenFeature(tf.string)}

    class Exported(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = keras_model

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            parsed = tf.io.parse_example(examples, spec)
            # Width 1 whatever the batch holds (the server warms up on a row with no values at all).
            fare = tf.sparse.to_dense(tf.sparse.reset_shape(parsed["fare"], [tf.shape(examples)[0], 1]))
            company = tf.sparse.to_dense(tf.sparse.reset_shape(parsed["company"], [tf.shape(examples)[0], 1]), "")
            fare, company = fare / 10.0, tf.strings.to_hash_bucket_fast(company[:, 0], 3)
            x = tf.concat([fare, tf.one_hot(company, 3)], axis=1)
            return {"probabilities": self.model(x)}

    module = Exported()
    path = str(tmp_path_factory.mktemp("infra-good") / "saved_model")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


@pytest.fixture(scope="module")
def served_by_docker(good_model, examples_dir, tmp_path_factory):
    _runtime_or_skip("docker")
    out = str(tmp_path_factory.mktemp("infra-docker") / "infra_blessing")
    return executor.run(good_model, examples_dir, out, blessed=True, runtime="docker"), out


def test_a_good_model_is_infra_blessed_in_the_serve_container(served_by_docker):
    facts, out = served_by_docker
    assert facts["infra_blessed"] is True, facts["reason"]
    assert facts["runtime"].startswith("docker ") and "kfx-serve" in facts["runtime"]
    assert facts["requests"] == ROWS and facts["max_difference"] <= facts["tolerance"] == 1e-4
    assert 0 < facts["load_seconds"] < 300
    assert 0 < facts["latency_ms"]["p50"] <= facts["latency_ms"]["p99"]
    assert executor.read_verdict(out) == {"blessed": True, "reason": facts["reason"]}
    assert json.load(open(os.path.join(out, executor.RESULT_FILE)))["latency_ms"] == facts["latency_ms"]
    # The container is gone once the stage returns, success or not.
    names = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True).stdout
    assert "kfx-infra-validate-" not in names


def test_served_answers_are_compared_not_assumed(good_model, examples_dir):
    """The comparison can fail: a served answer off by 1e-3 exceeds the tolerance."""
    import tensorflow as tf
    records = list(io.read_records(io.split_file(examples_dir, io.TEST)))
    local = executor.in_process(good_model, records)
    p = float(local[0][0])
    assert executor.difference({"label": "1", "probabilities": {"0": 1 - p, "1": p}}, local[0]) < 1e-7
    assert executor.difference({"label": "1", "probabilities": {"0": 1 - p, "1": p + 1e-3}}, local[0]) > 1e-4
    # a regression's float32 answer of 2,000,000 is exact to 0.125: relative above 1, not absolute
    assert executor.difference(2_000_000.125, [2_000_000.0]) < 1e-7
    assert executor.difference(2_000_500.0, [2_000_000.0]) > 1e-4
    assert abs(executor.difference(0.5, [0.2]) - 0.3) < 1e-12       # absolute at or below 1
    ex = tf.train.Example.FromString(records[3])
    features = [{"name": "company", "shape": []}, {"name": "fare", "shape": []}]
    assert executor.instance(ex, features) == {"company": "Flash Cab", "fare": None}


def _float_signature_model(path):
    """Loads in TensorFlow, but its serving_default takes a float tensor, not serialized tf.Examples."""
    import tensorflow as tf

    class Floats(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serve(self, x):
            return {"probabilities": tf.sigmoid(tf.reduce_sum(x, axis=1, keepdims=True))}

    module = Floats()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def _not_pushed(model_dir, facts, tmp_path):
    reg = str(tmp_path / "registry")
    pushed = push_executor.run(model_dir=model_dir, quantized_dir="", registry_uri=reg, model_name="m",
                               blessing={"blessed": True, "reasons": []}, card={"model_name": "m"},
                               infra_blessing=facts)
    assert pushed["pushed"] is False and registry.latest(reg, "m") is None
    return pushed["reason"]


def test_a_signature_the_server_cannot_call_is_not_pushed(examples_dir, tmp_path):
    """In the serving venv as a process (the runtime the cluster image carries): the server exits
    while loading, the verdict says so in one line, and push publishes nothing, naming it."""
    runtime = _runtime_or_skip("process")
    model = _float_signature_model(str(tmp_path / "floats"))
    facts = executor.run(model, examples_dir, str(tmp_path / "infra"), blessed=True, runtime=runtime.kind)
    assert facts["infra_blessed"] is False and facts["requests"] == 0 and facts["runtime"] == f"process {runtime.where}"
    assert facts["reason"].startswith("does not load in the serving runtime (process): the server exited (1)")
    assert "ValueError: serving_default has no ParseExampleV2 op" in facts["reason"]
    reason = _not_pushed(model, facts, tmp_path)
    assert reason == f"not infra-blessed: {facts['reason']}" and "\n" not in reason
    assert executor.read_verdict(str(tmp_path / "infra")) == {"blessed": False, "reason": facts["reason"]}


def test_a_candidate_evaluate_did_not_bless_is_skipped_without_a_server(tmp_path):
    facts = executor.run(str(tmp_path / "never-read"), str(tmp_path / "never-read"), str(tmp_path / "infra"),
                         blessed=False)
    assert facts["infra_blessed"] is False and facts["reason"] == executor.SKIPPED and facts["seconds"] < 1
    assert executor.read_verdict(str(tmp_path / "infra")) == {"blessed": False, "reason": executor.SKIPPED}


def test_no_runtime_fails_in_one_line_naming_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("KFX_SERVING_PYTHON", str(tmp_path / "no-python"))
    monkeypatch.setenv("KFX_SERVE_IMAGE", "kfx/no-such-image:0")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(launcher.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError) as err:
        launcher.find_runtime("auto")
    assert "make serving-image" in str(err.value) and "make serving-venv" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_model_card_shows_the_infra_validation():
    from kfx_components.push import card_html
    infra = {"runtime": "docker kfx/kfx-serve:0.1.0", "load_seconds": 7.5, "latency_ms": {"p50": 3.25, "p99": 9.75},
             "requests": 100, "max_difference": 1.2e-07, "tolerance": 1e-4}
    card = {"model_name": "m", "version": 1, "infra_validation": infra}
    markdown, page = push_executor.render_card(card), card_html.render(card)
    assert "## Infra validation" in markdown and "| p99 latency (ms) | 9.7500 |" in markdown
    assert "Infra validation" in page and "docker kfx/kfx-serve:0.1.0" in page and "9.75" in page
    assert "Infra validation" not in push_executor.render_card({"model_name": "m", "version": 1})
