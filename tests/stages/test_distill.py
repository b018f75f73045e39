"""distill: a smaller student that learns from the teacher's logits (taxi fixtures)."""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import yaml

from kfx_components.distill import executor


def _logits(model_dir, features):
    import tensorflow as tf
    fn = tf.saved_model.load(model_dir).signatures["transformed_logits"]
    keys = sorted(fn.structured_input_signature[1])
    return np.concatenate([fn(**{k: batch[k] for k in keys})["logits"].numpy() for batch in features])


@pytest.fixture(scope="module")
def eval_features(model_args):
    from kfx_components.common import model as M
    out = M.load_transform_output(model_args["transform_graph_dir"])
    ds = M.make_dataset(model_args["transformed_examples_dir"], "eval", out, model_args["label_key"],
                        batch_size=1024, with_label=False)
    return list(ds)


def test_student_is_smaller_and_beats_chance(student, teacher):
    facts = student.metadata
    assert facts["student_params"] < facts["teacher_params"]
    assert facts["compression_ratio"] == pytest.approx(facts["teacher_params"] / facts["student_params"], rel=1e-3)
    assert facts["primary_metric"] == "auc" and facts["passed_on"] == "student"
    assert facts["student_metric"] > 0.5
    assert 0.5 < facts["teacher_metric"] <= 1.0
    assert facts["student_width"] == 16 and facts["student_depth"] == 1
    # The budget adapts to the table: epochs is a cap, early stopping on eval decides.
    assert 1 <= facts["history"]["epochs_run"] <= 3 and facts["history"]["curves"]["val_hard_loss"]
    assert len(facts["history"]["curves"]["val_loss"]) == facts["history"]["epochs_run"]


def test_student_serves_the_same_contract(student, examples):
    import tensorflow as tf
    from kfx_components.common import io
    loaded = tf.saved_model.load(student.path)
    assert {"serving_default", "transformed_logits"} <= set(loaded.signatures)
    records = [r for _, r in zip(range(64), io.read_records(io.split_file(examples.path, "eval")))]
    probs = loaded.signatures["serving_default"](examples=tf.constant(records))["probabilities"].numpy()
    assert probs.shape == (len(records), 1)
    assert np.all((probs >= 0) & (probs <= 1))


def _run_component(teacher, transformed, out, **params):
    """The distill component body, in-process: returns (student artifact, metrics artifact)."""
    from kfp import dsl
    from kfx_components.distill.component import distill
    model = types.SimpleNamespace(path=str(out), metadata={})
    edge = types.SimpleNamespace(path=str(out) + "-edge", metadata={})
    metrics = dsl.Metrics(name="metrics", uri=str(out) + "-metrics", metadata={})
    distill.python_func(teacher=teacher, transformed_examples=transformed.examples,
                        transform_graph=transformed.graph, model=model, edge_model=edge, metrics=metrics, **params)
    return model, metrics


def test_alpha_changes_what_is_learned(model_args, teacher, transformed, eval_features, tmp_path):
    """alpha=0 (teacher only) tracks the teacher's logits much more closely than alpha=1 (labels only).

    The alpha=1 run goes through the KFP component body (saves a run and checks the wrapper too).
    """
    t_logits = _logits(teacher.path, eval_features)
    facts = {0.0: executor.run(teacher_model_dir=teacher.path, model_dir=str(tmp_path / "a0"),
                               alpha=0.0, epochs=10, tolerance=0.99, **model_args)}
    artifact, metrics = _run_component(teacher, transformed, tmp_path / "a1", temperature=4.0, alpha=1.0,
                                       student_width=16, epochs=10, tolerance=0.99)
    facts[1.0] = artifact.metadata
    assert os.path.isfile(os.path.join(artifact.path, "saved_model.pb"))
    assert artifact.metadata["alpha"] == 1.0 and artifact.metadata["label_key"] == model_args["label_key"]
    for key in ("teacher_params", "student_params", "compression_ratio", "student_metric", "teacher_metric"):
        assert metrics.metadata[key] == pytest.approx(artifact.metadata[key])
    mse, corr = {}, {}
    for alpha, out in ((0.0, tmp_path / "a0"), (1.0, tmp_path / "a1")):
        s_logits = _logits(str(out), eval_features)  # measured on the exported model, not trusted from facts
        mse[alpha] = float(np.mean((s_logits - t_logits) ** 2))
        corr[alpha] = float(np.corrcoef(s_logits.ravel(), t_logits.ravel())[0, 1])
        assert facts[alpha]["logit_mse_to_teacher"] == pytest.approx(mse[alpha], rel=1e-3, abs=1e-5)
        assert facts[alpha]["student_metric"] > 0.5
    assert mse[0.0] < 0.5 * mse[1.0], mse
    assert corr[0.0] > corr[1.0], corr
    # the compressed student (<= 0.25x the parameters) keeps >= 0.98x the teacher's AUC
    for alpha in (0.0, 1.0):
        assert facts[alpha]["param_ratio"] <= 0.25 and facts[alpha]["metric_ratio"] >= 0.98, facts[alpha]


@pytest.mark.parametrize("bad, name", [
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-1.0), "temperature"),
    (dict(alpha=1.5), "alpha"),
    (dict(alpha=-0.1), "alpha"),
    (dict(student_width=0), "student_width"),
    (dict(epochs=0), "epochs"),
    (dict(tolerance=1.0), "tolerance"),
    (dict(problem_type="ranking"), "problem_type"),
])
def test_bad_parameters_raise_naming_them(bad, name, tmp_path):
    args = dict(teacher_model_dir=str(tmp_path / "none"), transformed_examples_dir=str(tmp_path),
                transform_graph_dir=str(tmp_path), model_dir=str(tmp_path / "model"),
                label_key="label", problem_type="binary", num_classes=2)
    args.update(bad)
    with pytest.raises(ValueError, match=name):
        executor.run(**args)
    assert not (tmp_path / "model").exists()


def test_the_student_narrows_to_meet_the_size_target(model_args, teacher, tmp_path):
    """Asked for 512 units with teacher-wide embeddings (16), the student takes the widest width
    that stays within max_student_ratio of the teacher, or one unit, and says so: a run never fails
    on the size of a small teacher."""
    facts = executor.run(teacher_model_dir=teacher.path, model_dir=str(tmp_path / "model"), student_width=512,
                         student_embedding_dim=16, epochs=1, tolerance=0.99, **model_args)
    assert facts["student_width_asked"] == 512 and facts["student_width"] < 512
    assert facts["size_target_met"] == (facts["student_params"] <= 0.25 * facts["teacher_params"])
    assert facts["size_target_met"] or facts["student_width"] == 1
    assert (tmp_path / "model" / "saved_model.pb").exists()


def test_the_default_student_compresses(student, teacher):
    """The shared student (defaults: width 16, embeddings at most 2 wide) is at most a quarter of the
    teacher's parameters; the embeddings no longer dominate it."""
    facts = student.metadata
    assert facts["student_embedding_dim"] == 2 and facts["max_student_ratio"] == 0.25
    assert facts["student_params"] <= 0.25 * facts["teacher_params"], facts
    assert facts["param_ratio"] == pytest.approx(facts["student_params"] / facts["teacher_params"], abs=1e-4)
    assert facts["metric_ratio"] == pytest.approx(facts["student_metric"] / facts["teacher_metric"], abs=1e-5)


def test_a_student_worse_than_the_teacher_is_not_passed_on(teacher, transformed, eval_features, tmp_path):
    """The gate: a one-unit student trained for one epoch falls short of the teacher by more than a
    zero tolerance, so distill passes the teacher's SavedModel on and says why, with the numbers."""
    artifact, metrics = _run_component(teacher, transformed, tmp_path / "gated", temperature=4.0, alpha=0.3,
                                       student_width=1, epochs=1, tolerance=0.0, student_embedding_dim=1)
    facts = artifact.metadata
    assert facts["passed_on"] == "teacher" and metrics.metadata["passed_on"] == "teacher"
    assert facts["student_metric"] < facts["teacher_metric"]
    assert f"{facts['student_metric']:.4f}" in facts["reason"] and "teacher is passed on" in facts["reason"]
    # the size the metric could not be held at, with the numbers
    assert f"{facts['student_params']:,} parameters ({facts['param_ratio']:.2f}x the teacher's " \
           f"{facts['teacher_params']:,}; size target 0.25x)" in facts["reason"], facts["reason"]
    np.testing.assert_allclose(_logits(artifact.path, eval_features), _logits(teacher.path, eval_features),
                               rtol=1e-6)


def test_missing_teacher_raises_naming_it(tmp_path):
    with pytest.raises(ValueError, match="teacher_model_dir"):
        executor.run(teacher_model_dir=str(tmp_path / "nowhere"), transformed_examples_dir=str(tmp_path),
                     transform_graph_dir=str(tmp_path), model_dir=str(tmp_path / "s"),
                     label_key="label", problem_type="binary", num_classes=2)


def test_distillation_loss_terms():
    import tensorflow as tf
    t = tf.constant([[2.0, -1.0, 0.5], [0.1, 0.2, -3.0]])
    y = tf.constant([0, 2])
    # soft term vanishes when the student equals the teacher; alpha weights the two terms
    total, hard, soft = executor.distillation_loss("multiclass", y, t, t, alpha=0.0, temperature=4.0)
    assert float(soft) == pytest.approx(0.0, abs=1e-6) and float(total) == pytest.approx(0.0, abs=1e-6)
    total, hard, soft = executor.distillation_loss("multiclass", y, t * 0, t, alpha=0.25, temperature=2.0)
    assert float(soft) > 0 and float(total) == pytest.approx(0.25 * float(hard) + 0.75 * float(soft), rel=1e-5)
    b = tf.constant([[3.0], [-2.0]])
    _, _, soft = executor.distillation_loss("binary", tf.constant([1, 0]), b, b, alpha=0.3, temperature=4.0)
    assert float(soft) == pytest.approx(0.0, abs=1e-5)
    _, hard, soft = executor.distillation_loss("regression", tf.constant([1.0, 2.0]), b, b + 1.0,
                                               alpha=0.5, temperature=4.0)
    assert float(soft) == pytest.approx(1.0)  # MSE to teacher, no temperature
    assert float(hard) == pytest.approx(((3 - 1) ** 2 + (-2 - 2) ** 2) / 2)


def test_component_compiles_without_importing_tensorflow(tmp_path):
    code = ("import sys; from kfp import compiler; from kfx_components.distill.component import distill; "
            f"compiler.Compiler().compile(distill, {str(tmp_path / 'distill.yaml')!r}); "
            "assert 'tensorflow' not in sys.modules, 'component.py imported TensorFlow'")
    subprocess.run([sys.executable, "-c", code], check=True)
    ir = json.dumps(yaml.safe_load((tmp_path / "distill.yaml").read_text()))  # the embedded source unwrapped
    assert "kfx-distill:" in ir and "student_width" in ir and "kfx_components.distill import executor" in ir
