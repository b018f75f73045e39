"""quantize: post-training TFLite variants of the teacher's transformed_logits, each scored, sized and timed
on test (taxi fixtures). With int8 accepted, pruning and QAT are not trained (the default); they run when
int8 is rejected (here), and always on the student in test_analysis.py (finetune_when="always")."""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import yaml

from kfx_components.quantize import executor

VARIANTS = ("float32", "dynamic_range", "float16", "int8")
# |variant AUC - SavedModel AUC| allowed on the taxi test split
TOLERANCE = {"float32": 1e-4, "dynamic_range": 0.02, "float16": 0.005, "int8": 0.03}


@pytest.fixture(scope="module")
def quantized(teacher, transformed, tmp_path_factory):
    """The component body run in-process on the teacher with its defaults (pruning and QAT asked for, trained
    only if int8 is rejected): (artifact, metrics, facts from quantization.json)."""
    from kfp import dsl
    from kfx_components.quantize.component import quantize
    out = tmp_path_factory.mktemp("quantized") / "q"
    artifact = types.SimpleNamespace(path=str(out), metadata={})
    metrics = dsl.Metrics(name="metrics", uri=str(out) + "-metrics", metadata={})
    quantize.python_func(model=teacher, transformed_examples=transformed.examples,
                         transform_graph=transformed.graph, tolerance=0.05, quantized=artifact, metrics=metrics)
    summary = json.loads((out / "quantization.json").read_text())
    return types.SimpleNamespace(artifact=artifact, metrics=metrics, summary=summary, path=out)


@pytest.fixture(scope="module")
def eval_data(model_args):
    from kfx_components.common import model as M
    out = M.load_transform_output(model_args["transform_graph_dir"])
    ds = M.make_dataset(model_args["transformed_examples_dir"], "test", out, model_args["label_key"],
                        batch_size=100_000)
    features, labels = next(iter(ds))
    return {k: v.numpy() for k, v in features.items()}, labels.numpy().reshape(-1)


def test_writes_three_tflite_files_and_summary(quantized):
    names = sorted(os.listdir(quantized.path))
    assert names == sorted([f"{v}.tflite" for v in VARIANTS] + ["quantization.json"])
    s = quantized.summary
    assert s["primary_metric"] == "auc" and s["signature"] == "transformed_logits"
    for v in VARIANTS:
        assert s["variants"][v]["size_bytes"] == os.path.getsize(quantized.path / f"{v}.tflite")
        assert quantized.artifact.metadata["variants"][v]["size_bytes"] == s["variants"][v]["size_bytes"]
        assert quantized.metrics.metadata[f"{v}_size_bytes"] == s["variants"][v]["size_bytes"]
        assert quantized.metrics.metadata[f"{v}_auc"] == pytest.approx(s["variants"][v]["metric"])
    assert quantized.metrics.metadata["saved_model_auc"] == pytest.approx(s["reference"]["metric"])


def test_int8_accepted_so_pruning_and_qat_are_not_trained_and_say_why(quantized):
    """int8 passed the gate: no fine-tuned variant (no file, no training facts), and quantization.json and
    the model card (Markdown) say in one line why each was not trained."""
    from kfx_components.push import executor as push
    s = quantized.summary
    assert "int8" in s["variants"] and "int8" not in s["rejected"]
    assert not {"pruned", "qat"} & (set(s["variants"]) | set(s["rejected"]))
    assert not any("training" in v for v in s["variants"].values())
    card = push.render_card(push.make_card("taxi", {}, quantized.artifact.metadata, {}, {}, {}, {}))
    for name in ("pruned", "qat"):
        assert s["notes"][name] == ("not trained: post-training int8 accepted within the tolerance 0.05 "
                                    "(finetune_when='int8_rejected')")
        assert f"- {name}: {s['notes'][name]}" in card.splitlines()


def test_conversion_from_the_loaded_model_is_byte_identical_to_from_saved_model(teacher):
    """tflite.convert reuses the SavedModel loaded once; TF's from_saved_model loads it per call."""
    import tensorflow as tf
    from kfx_components.quantize import tflite
    converter = tf.lite.TFLiteConverter.from_saved_model(teacher.path, signature_keys=[tflite.SIGNATURE])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    assert tflite.convert(teacher.path, tf.saved_model.load(teacher.path), "dynamic_range") == converter.convert()


def test_sizes_weights_and_latency_are_measured(quantized):
    """Per variant: gzip and weight bytes below the file size, latencies from the interpreter; int8 holds
    a quarter of float32's weight bytes (plus quantization tables); the SavedModel is timed beside them."""
    v = quantized.summary["variants"]
    for name in VARIANTS:
        assert 0 < v[name]["weight_bytes"] < v[name]["size_bytes"], name
        assert 0 < v[name]["gzip_bytes"] < v[name]["size_bytes"], name
        lat = v[name]["latency"]
        assert lat["single_invoke"]["median_ms"] > 0 and lat["batch_invoke"]["median_ms"] > 0
        assert lat["single_invoke"]["p90_ms"] >= lat["single_invoke"]["median_ms"]
        assert lat["batch_size"] == min(256, quantized.summary["test_rows"])
    assert v["int8"]["weight_bytes"] < 0.35 * v["float32"]["weight_bytes"]
    assert v["float16"]["weight_bytes"] < 0.6 * v["float32"]["weight_bytes"]
    assert v["float32"]["size_ratio_to_float32"] == 1.0
    ref = quantized.summary["reference"]["latency"]
    assert ref["transformed_single"]["median_ms"] > 0 and "end_to_end_single" not in ref  # no raw examples given
    assert quantized.summary["recommended"] == min(v, key=lambda k: v[k]["size_bytes"])
    assert quantized.artifact.metadata["recommended"] == quantized.summary["recommended"]


def test_sizes_shrink_with_precision(quantized):
    v, ref = quantized.summary["variants"], quantized.summary["reference"]
    # Full int8 has the fewest weight bytes. Dynamic range only quantizes large weight tensors (small
    # ones stay float32), so on a small model it can be larger than float16: no order is asserted between
    # those two. Its file can be a few hundred bytes smaller than int8's when every large tensor (the one
    # embedding table) is quantized: int8 also stores a scale and zero point per activation tensor.
    # Every variant is smaller than the float32 variables of the SavedModel.
    assert v["int8"]["size_bytes"] < v["float16"]["size_bytes"]
    assert v["int8"]["weight_bytes"] <= v["dynamic_range"]["weight_bytes"]
    for name in VARIANTS:
        assert v[name]["size_bytes"] < ref["variables_bytes"] < ref["saved_model_bytes"], name


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_scores_close_to_the_float_model(quantized, variant):
    ref = quantized.summary["reference"]["metric"]
    got = quantized.summary["variants"][variant]["metric"]
    assert ref > 0.5
    assert abs(got - ref) <= TOLERANCE[variant], (variant, got, ref)


def _run_int8(path, features):
    """Independent of the executor: quantize float inputs, invoke, dequantize the logits."""
    import tensorflow as tf
    interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("transformed_logits")
    feed = {}
    for name, d in runner.get_input_details().items():
        x = features[name]
        if d["dtype"] == np.int8:
            scale, zero = d["quantization"]
            x = np.clip(np.round(x / scale + zero), -128, 127)
        feed[name] = x.astype(d["dtype"])
    out_d = runner.get_output_details()["logits"]
    raw = runner(**feed)["logits"]
    scale, zero = out_d["quantization"]
    return (raw.astype(np.float32) - zero) * scale, interpreter


def test_int8_is_fully_integer_and_runs(quantized, eval_data):
    from sklearn.metrics import roc_auc_score
    import tensorflow as tf
    features, labels = eval_data
    logits, interpreter = _run_int8(quantized.path / "int8.tflite", features)
    runner = interpreter.get_signature_runner("transformed_logits")
    inputs = runner.get_input_details()
    float_inputs = [k for k, v in features.items() if v.dtype == np.float32]
    int_inputs = [k for k, v in features.items() if v.dtype == np.int64]
    assert float_inputs, "the taxi transform should produce float features"
    assert all(inputs[k]["dtype"] == np.int8 and inputs[k]["quantization"][0] > 0 for k in float_inputs)
    assert all(inputs[k]["dtype"] == np.int64 for k in int_inputs)  # embedding indices stay integers
    assert runner.get_output_details()["logits"]["dtype"] == np.int8
    dtypes = [np.dtype(d["dtype"]) for d in interpreter.get_tensor_details()]
    assert np.dtype(np.float32) not in dtypes, "a float32 tensor is left in the full-int8 model"
    assert dtypes.count(np.dtype(np.int8)) >= 4  # weights and activations
    auc = roc_auc_score(labels.astype(int), logits.ravel())
    assert auc == pytest.approx(quantized.summary["variants"]["int8"]["metric"], abs=1e-6)
    # dynamic range keeps float inputs; float16 stores float16 weights
    fp16 = tf.lite.Interpreter(model_path=str(quantized.path / "float16.tflite"))
    assert np.dtype(np.float16) in [np.dtype(d["dtype"]) for d in fp16.get_tensor_details()]
    dyn = tf.lite.Interpreter(model_path=str(quantized.path / "dynamic_range.tflite"))
    dyn_inputs = dyn.get_signature_runner("transformed_logits").get_input_details()
    assert all(dyn_inputs[k]["dtype"] == np.float32 for k in float_inputs)


def test_float16_and_dynamic_range_track_the_saved_model(quantized, teacher, eval_data):
    import tensorflow as tf
    features, _ = eval_data
    ref = tf.saved_model.load(teacher.path).signatures["transformed_logits"](
        **{k: tf.constant(v) for k, v in features.items()})["logits"].numpy()
    for variant, tol in (("float16", 0.05), ("dynamic_range", 0.5)):
        runner = tf.lite.Interpreter(model_path=str(quantized.path / f"{variant}.tflite")).get_signature_runner(
            "transformed_logits")
        got = runner(**features)["logits"]
        assert got.shape == ref.shape
        assert np.max(np.abs(got - ref)) < tol, variant


def test_bad_inputs_raise_naming_them(teacher, model_args, tmp_path):
    args = dict(model_args, model_dir=teacher.path, quantized_dir=str(tmp_path / "q"))
    with pytest.raises(ValueError, match="problem_type"):
        executor.run(**{**args, "problem_type": "ranking"})
    with pytest.raises(ValueError, match="model_dir"):
        executor.run(**{**args, "model_dir": str(tmp_path / "nowhere")})
    with pytest.raises(ValueError, match="label_key"):
        executor.run(**{**args, "label_key": "no_such_label"})
    with pytest.raises(ValueError, match="^finetune_when 'auto': expected one of int8_rejected, always$"):
        executor.run(**{**args, "finetune_when": "auto"})
    assert not (tmp_path / "q").exists()


def test_component_compiles_without_importing_tensorflow(tmp_path):
    code = ("import sys; from kfp import compiler; from kfx_components.quantize.component import quantize; "
            f"compiler.Compiler().compile(quantize, {str(tmp_path / 'quantize.yaml')!r}); "
            "assert 'tensorflow' not in sys.modules, 'component.py imported TensorFlow'")
    subprocess.run([sys.executable, "-c", code], check=True)
    ir = json.dumps(yaml.safe_load((tmp_path / "quantize.yaml").read_text()))  # the embedded source unwrapped
    assert "kfx-quantize:" in ir and "kfx_components.quantize import executor" in ir


def test_a_rejected_int8_is_not_published_and_qat_is_trained(teacher, model_args, tmp_path, monkeypatch):
    """With a zero tolerance and int8 calibrated on one example (its activation ranges too narrow for the
    rest), the gate rejects int8: its file is not written, it is named with the reason and the numbers,
    and the QAT variant is fine-tuned (the default finetune_when) and scored."""
    from kfx_components.quantize import splits
    monkeypatch.setattr(splits, "REPRESENTATIVE_SAMPLES", 1)
    facts = executor.run(model_dir=teacher.path, quantized_dir=str(tmp_path / "q"), tolerance=0.0,
                         pruning_sparsity=0.0, qat=True, finetune_epochs=1, **model_args)
    assert "int8" in facts["rejected"] and facts["representative_samples"] == 1
    for name, reason in facts["rejected"].items():
        assert not (tmp_path / "q" / f"{name}.tflite").exists()
        assert "worse than the SavedModel" in reason and f"{facts['reference']['metric']:.4f}" in reason
    assert set(facts["rejected"]) | set(facts["variants"]) == set(VARIANTS) | {"qat"}
    assert "not trained" not in facts["notes"].get("qat", "") and "pruned" not in facts["notes"]
    for name, v in facts["variants"].items():  # what passed a zero tolerance is at least as good
        assert v["metric"] >= facts["reference"]["metric"]
        assert (tmp_path / "q" / f"{name}.tflite").exists()
