"""The serving feature spec (kfx_formats.features) read from real tf.Example-parsing signatures, and the
serving runtime's validation (kfx_serving.features) feeding that signature what the spec says."""
from pathlib import Path

import pytest

from kfx_formats import features

SERVING = Path(__file__).resolve().parents[2] / "serving"


@pytest.fixture(scope="module")
def tf():
    import tensorflow as tf
    return tf


def _signature(tf, *parses):
    """A serving_default-like concrete function: serialized tf.Examples in, each `parses` spec parsed."""
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(examples):
        out = {}
        for spec in parses:
            for name, value in tf.io.parse_example(examples, spec).items():
                out[f"{name}_{len(out)}"] = value.values if isinstance(value, tf.SparseTensor) else value
        return out
    return serve.get_concrete_function()


def test_names_types_and_required_from_the_parse_op(tf):
    fn = _signature(tf, {"trips": tf.io.FixedLenFeature([], tf.int64),
                         "fare": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
                         "pair": tf.io.FixedLenFeature([2], tf.float32),
                         "company": tf.io.VarLenFeature(tf.string)})
    spec = features.spec_from_signature(fn)
    assert list(spec) == ["company", "fare", "pair", "trips"]
    assert [(f.dtype, f.kind, f.shape, f.required) for f in spec.values()] == [
        ("string", "sparse", (), False), ("float", "dense", (), False), ("float", "dense", (2,), True),
        ("int64", "dense", (), True)]
    assert spec["pair"].describe() == {"name": "pair", "dtype": "float", "kind": "dense", "shape": [2],
                                       "required": True}


def test_a_feature_parsed_twice_takes_the_stricter_reading(tf):
    fn = _signature(tf, {"fare": tf.io.VarLenFeature(tf.float32)}, {"fare": tf.io.FixedLenFeature([], tf.float32)})
    assert features.spec_from_signature(fn)["fare"] == features.Feature("fare", "float", "dense", (), True)
    clash = _signature(tf, {"fare": tf.io.VarLenFeature(tf.float32)}, {"fare": tf.io.VarLenFeature(tf.string)})
    with pytest.raises(ValueError, match="feature 'fare' is parsed as float and as string"):
        features.spec_from_signature(clash)


def test_a_signature_that_parses_no_examples_is_refused(tf):
    fn = tf.function(lambda x: {"y": x * 2}, input_signature=[tf.TensorSpec([None], tf.float32)])
    with pytest.raises(ValueError, match="no ParseExampleV2 op: not a kfx serving signature"):
        features.spec_from_signature(fn.get_concrete_function())


def test_the_runtime_validates_against_the_spec_and_the_signature_parses_it(tf, monkeypatch):
    monkeypatch.syspath_prepend(str(SERVING))
    from kfx_serving import features as runtime
    fn = _signature(tf, {"trips": tf.io.FixedLenFeature([], tf.int64),
                         "company": tf.io.VarLenFeature(tf.string)})
    spec = features.spec_from_signature(fn)
    rows = runtime.validate([{"trips": 3, "company": "A"}, {"trips": 4.0, "company": None}], spec)
    out = fn(examples=tf.constant(runtime.serialize(rows, spec)))
    assert sorted((out[k].numpy().tolist() for k in out), key=str) == [[3, 4], [b"A"]]
    with pytest.raises(runtime.FeatureError, match=r"instances\[0\]: feature 'trips' is required"):
        runtime.validate([{"trips": None, "company": "A"}], spec)
