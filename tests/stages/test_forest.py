"""The trees' family (taxi fixtures): a TF-DF forest on transform's output exported with the network's
signatures, loaded anywhere once TF-DF's ops are registered (kfx_formats.saved_model names them), tune choosing the family on
eval, distributed_train training the chosen forest, and distill making its student the edge variant."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kfx_components.common import forest as F
from kfx_components.common import io, loading
from kfx_components.common import model as M
from kfx_components.distill import executor as distill
from kfx_components.distributed_train import executor as train
from kfx_components.tune import executor as tune
from kfx_components.tune import forest_search
from kfx_formats import saved_model


def test_forest_serves_the_network_contract(forest, examples, model_args):
    """serving_default (raw examples -> probabilities) is the sigmoid of transformed_logits on the same rows."""
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score

    path, facts = forest.path, forest.metadata
    assert 1 <= facts["num_trees"] <= facts["trees_trained"] <= 20
    assert facts["family"] == "gradient_boosted_trees" and facts["strategy"].startswith("one worker")
    loaded = loading.load_model(path)
    assert {"serving_default", "transformed_logits"} <= set(loaded.signatures)
    records = list(io.read_records(io.split_file(examples.path, "eval")))
    probs = loaded.signatures["serving_default"](examples=tf.constant(records))["probabilities"].numpy()
    assert probs.shape == (len(records), 1)

    out = M.load_transform_output(model_args["transform_graph_dir"])
    args = M.signature_args(M.feature_keys(out, model_args["label_key"]))
    ds = M.make_dataset(model_args["transformed_examples_dir"], "eval", out, model_args["label_key"], 4096)
    logits, labels = [], []
    for features, y in ds:
        logits.append(loaded.signatures["transformed_logits"](**{a: features[f] for a, f in args.items()})
                      ["logits"].numpy())
        labels.append(y.numpy())
    logits, labels = np.concatenate(logits).reshape(-1), np.concatenate(labels)
    np.testing.assert_allclose(probs.reshape(-1), 1 / (1 + np.exp(-logits)), atol=1e-5)
    assert roc_auc_score(labels, logits) > 0.85   # the network reaches ~0.9 on this sample


def test_only_a_forest_counts_as_a_forest(forest, model_args, work):
    out = M.load_transform_output(model_args["transform_graph_dir"])
    network = M.build_model(out, model_args["label_key"], model_args["problem_type"], model_args["num_classes"])
    path = M.export_serving_model(network, out, model_args["label_key"], model_args["problem_type"],
                                  str(work / "untrained_network"))
    assert saved_model.family(forest.path) == "gradient_boosted_trees"
    assert saved_model.family(path) == "network"


def test_a_process_without_tfdf_loads_the_forest_once_its_ops_are_registered(forest):
    """What the serving runtime needs: TF-DF's inference ops, not TF-DF's Python package (nor tf-keras)."""
    code = (
        "import sys, tensorflow as tf\n"
        "from kfx_components.common import loading\n"
        "try:\n"
        "    tf.saved_model.load(sys.argv[1]); print('loaded without ops')\n"
        "except Exception as e:\n"
        "    print('refused:', str(e).splitlines()[0])\n"
        "loading.load_model(sys.argv[1]); print('loaded with ops')\n"
        "print('tfdf imported:', any(m.startswith('tensorflow_decision_forests') for m in sys.modules))\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", code, forest.path], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused: Op type not registered 'SimpleML" in done.stdout
    assert "loaded with ops" in done.stdout and "tfdf imported: False" in done.stdout


def test_unknown_forest_hyperparameters_are_refused(model_args):
    out = M.load_transform_output(model_args["transform_graph_dir"])
    with pytest.raises(ValueError, match="unknown forest hyperparameters \\['num_tree'\\]"):
        F.build_forest(out, model_args["label_key"], model_args["problem_type"], num_tree=10)


def test_a_worker_other_than_the_chief_trains_no_forest(model_args, work, monkeypatch):
    """Trees train on one worker: on a multi-worker cluster only the chief trains and writes."""
    hp = str(work / "forest_not_chief_hp")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    M.write_hyperparameters(hp, **M.DEFAULT_HYPERPARAMETERS, family=saved_model.FAMILY_FOREST,
                            forest={"num_trees": 5})
    facts = train.run(hyperparameters_dir=hp, model_dir=str(work / "not_chief"),
                      checkpoint_dir=str(work / "not_chief_ckpt"), **model_args)
    assert facts["is_chief"] is False and not os.path.exists(work / "not_chief")


def test_forest_settings_start_at_tfdf_defaults_and_never_repeat():
    chosen = forest_search.settings(6, seed=3)
    assert chosen[0] == {k: F.DEFAULT_FOREST_HYPERPARAMETERS[k] for k in forest_search.SPACE}
    assert len(chosen) == 6 and all(a != b for i, a in enumerate(chosen) for b in chosen[i + 1:])
    assert all(v in forest_search.SPACE[k] for c in chosen for k, v in c.items())
    assert forest_search.settings(6, seed=3) == chosen


@pytest.mark.parametrize("family,trials,split", [("auto", 6, {"network": 4, "gradient_boosted_trees": 2}),
                                                 ("auto", 1, {"network": 1, "gradient_boosted_trees": 1}),
                                                 ("network", 3, {"network": 3}),
                                                 ("gradient_boosted_trees", 2, {"gradient_boosted_trees": 2})])
def test_one_trial_budget_is_shared_by_the_families(family, trials, split):
    assert tune.trial_budget(family, trials) == split


def test_tune_chooses_the_family_with_the_better_eval_metric(model_args, work):
    out = str(work / "auto_hp")
    facts = tune.run(hyperparameters_dir=out, max_trials=2, epochs=1, model_family="auto", **model_args)
    scores = {family: f["eval_metric"] for family, f in facts["families"].items()}
    assert set(scores) == {"network", "gradient_boosted_trees"}
    assert all(0.5 < v <= 1.0 for v in scores.values())          # AUC on eval
    best = max(scores, key=lambda k: (scores[k], k == "network"))
    assert facts["family"] == best and f"{scores[best]:.4f}" in facts["family_reason"]
    written = M.read_hyperparameters(out)
    assert written["family"] == best
    assert (written["forest"] is not None) == (best == "gradient_boosted_trees")


def test_unknown_model_family_is_refused_before_any_training(model_args, tmp_path):
    with pytest.raises(ValueError, match="model_family 'trees': expected one of auto, network"):
        tune.run(hyperparameters_dir=str(tmp_path / "hp"), model_family="trees", **model_args)


@pytest.fixture(scope="module")
def distilled(forest, model_args, work):
    """distill on the forest, the student always kept as the edge variant: (model dir, edge dir, facts)."""
    out, edge = work / "distilled", work / "edge"
    facts = distill.run(teacher_model_dir=forest.path, model_dir=str(out), edge_model_dir=str(edge), epochs=3,
                        tolerance=0.99, **model_args)
    return str(out), str(edge), facts


def test_a_forest_is_passed_on_and_its_student_is_the_edge_variant(distilled):
    out, edge, facts = distilled
    # The forest is passed on unless its student beats it on eval (then the better model is).
    beats = facts["student_metric"] > facts["teacher_metric"]
    assert facts["teacher_family"] == "gradient_boosted_trees"
    assert facts["passed_on"] == ("student" if beats else "teacher")
    assert facts["edge_model"] == "student" and facts["size_target_met"] is None
    assert saved_model.family(out) == ("network" if beats else "gradient_boosted_trees")
    assert saved_model.family(edge) == "network"
    assert facts["student_metric"] > 0.8   # a student that learned from the trees (chance: 0.5)


@pytest.mark.parametrize("problem_type,student,forest,passed_on", [
    ("binary", 0.95, 0.94, "student"), ("binary", 0.94, 0.94, "teacher"), ("binary", 0.93, 0.94, "teacher"),
    ("regression", 9.0, 10.0, "student"), ("regression", 11.0, 10.0, "teacher")])
def test_a_student_better_than_its_forest_is_passed_on(problem_type, student, forest, passed_on):
    comparison = {"student_metric": student, "teacher_metric": forest, "primary_metric": "m", "passed_on": "student"}
    chosen = distill._forest_passed_on(comparison, problem_type)
    assert chosen["passed_on"] == passed_on
    assert ("beats the forest's" in chosen["reason"]) == (passed_on == "student")


def test_a_tflite_variant_must_hold_the_forest_it_stands_in_for(forest, distilled, model_args, work):
    """quantize scores the forest on the same test rows; at tolerance 0 the float32 file, equal to the
    student, still falls short of the forest, and is refused for that."""
    from kfx_components.quantize import executor as quantize

    _, edge, _ = distilled
    facts = quantize.run(model_dir=edge, quantized_dir=str(work / "edge_tflite"), tolerance=0.0,
                         pruning_sparsity=0.0, qat=False, stands_in_for_dir=forest.path, **model_args)
    stood_for = facts["reference"]["stands_in_for"]
    out = M.load_transform_output(model_args["transform_graph_dir"])
    args = M.signature_args(M.feature_keys(out, model_args["label_key"]))
    fn = loading.load_model(forest.path).signatures["transformed_logits"]
    own = M.split_metric(lambda f: fn(**{a: f[k] for a, k in args.items()})["logits"],
                         model_args["transformed_examples_dir"], out, model_args["label_key"],
                         model_args["problem_type"], split="test")
    assert stood_for == {"family": "gradient_boosted_trees", "metric": pytest.approx(own, abs=1e-6)}
    assert facts["reference"]["metric"] < own    # the 3-epoch student is below the forest
    assert "float32" not in facts["variants"]
    assert facts["rejected"]["float32"].endswith("of the gradient_boosted_trees it stands in for by more than "
                                                 "the tolerance 0")


def test_a_student_short_of_the_forest_leaves_no_edge_variant(forest, model_args, work):
    out, edge = work / "distilled_strict", work / "edge_strict"
    facts = distill.run(teacher_model_dir=forest.path, model_dir=str(out), edge_model_dir=str(edge), epochs=1,
                        tolerance=0.0, **model_args)
    assert facts["student_metric"] < facts["teacher_metric"]   # one epoch cannot match the trees
    assert facts["edge_model"] == "none" and "no TFLite form" in facts["edge_reason"]
    assert saved_model.family(str(edge)) == "gradient_boosted_trees"   # quantize sees the forest and says why


def test_the_card_and_the_report_show_each_family_the_pushed_model_and_the_edge_variant():
    """What a person sees: each family's eval metric, trials and time, the choice and why; the forest
    pushed, its student for the edge, and what each loses on the same rows."""
    import html

    from kfx_components.common import families
    from kfx_components.evaluate import report
    from kfx_components.push import card_html
    from kfx_components.push import executor as push

    tuned = {"family": "gradient_boosted_trees", "metric": "auc", "family_reason": "eval auc: trees 0.9571 ...",
             "families": {"network": {"eval_metric": 0.9445, "trials": 4, "seconds": 19.5},
                          "gradient_boosted_trees": {"eval_metric": 0.9571, "trials": 2, "seconds": 28.7,
                                                     "num_trees": 46, "settings": {"max_depth": 6}}}}
    model = {"passed_on": "teacher", "teacher_family": "gradient_boosted_trees", "edge_model": "student",
             "edge_reason": "a forest has no TFLite form", "teacher_strategy": "one worker (TF-DF ...)",
             "student_params": 1565, "student_metric": 0.9514, "teacher_metric": 0.9571}
    quantized = {"variants": {"int8": {"metric": 0.9365, "size_bytes": 8688}}, "recommended": "int8",
                 "reference": {"metric": 0.9362, "stands_in_for": {"family": "gradient_boosted_trees",
                                                                   "metric": 0.9501}}}
    card = push.make_card("m", model, quantized, {}, {}, tuned, {})
    assert card["hyperparameters"] == {"max_depth": 6, "num_trees": 46}   # the chosen family's settings
    md, page = push.render_card(card), html.unescape(card_html.render(card))
    for text in (md, page):
        assert "eval auc: trees 0.9571" in text and "one worker (TF-DF" in text
        assert "0.9445" in text and "28.7" in text
        assert "0.9514 against the forest's 0.9571 (-0.0057)" in text     # the student's loss, on eval
        assert "test 0.9365 against the forest's 0.9501 on the same rows (-0.0136)" in text   # int8's, on test
    assert "| gradient_boosted_trees | 0.9571 | 2 | 28.7 |" in md and "| yes |" in md
    raw = card_html.render(card)
    assert "28.7000" not in raw and "<code>int8</code>" in raw and "`int8`" not in raw   # seconds, code spans
    assert "`int8`" in md
    section = report.families_section(families.summary(tuned))
    assert "Model family (chosen on eval)" in section and "<svg" in section and "0.9445" in section
    assert report.families_section({}) == ""   # a run from before the families: no section
