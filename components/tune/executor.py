"""tune: the model family and its settings, chosen on the eval split within one trial budget.

Two families (``model_family``): the network (KerasTuner over width, depth and
learning rate) and gradient-boosted trees (TF-DF, ``forest_search``). With
``auto`` (the default) a third of ``max_trials`` (at least one) goes to the
trees and the rest (at least one) to the network; each family's best trial is
scored with the same primary metric on eval (``model.split_metric``;
test is never read) and the better one is what distributed-train trains (a tie
goes to the network: it converts to TFLite as it is). The network's trials are
short (``epochs``) while a forest stops early on its own, so a network that
would win after its full training can lose here: the facts say both scores.

Writes ``<hyperparameters_dir>/hyperparameters.json`` (``model.write_hyperparameters``:
the family, the network's width/depth/learning rate, the forest's settings).

Algorithms (KerasTuner 1.3.5): ``hyperband`` (default), ``random``, ``bayesian``.
``random`` and ``bayesian`` run exactly ``max_trials`` trials of up to
``epochs`` epochs each. Hyperband has no trial count of its own: its size
follows from ``max_epochs`` and ``factor`` (= 3). The mapping used here:
``hyperband_iterations = 1`` and ``max_epochs`` = the largest value in
``[1, epochs]`` whose Hyperband schedule (same bracket arithmetic as
KerasTuner) creates at most ``max_trials`` trials; the oracle's
``max_trials`` is set too, as a hard cap. E.g. (max_trials=6, epochs=4) ->
max_epochs=3 (6 trials), (2, 2) -> max_epochs=2 (2 trials).
An "epoch" and the batch size follow the table's size (``model.fit_plan``):
small tables get small batches and several passes per epoch. Every trial
stops early on the eval split's loss (``model.fit_callbacks``); the output
layer starts at the label's prior or mean (``model.label_stats``).
The tuner's working directory is a temporary directory, removed afterwards.
"""
from __future__ import annotations

import math
import shutil
import tempfile
import time

from kfx_components.common import problem
from kfx_formats import choices, saved_model

# The search space (tests check the written values against it).
WIDTHS = (16, 32, 64, 128)
DEPTH_RANGE = (1, 3)
LEARNING_RATE_RANGE = (1e-3, 3e-2)
HYPERBAND_FACTOR = 3


def hyperband_trials(max_epochs: int, factor: int = HYPERBAND_FACTOR) -> int:
    """Trials one Hyperband iteration creates (KerasTuner 1.3.5 ``HyperbandOracle`` arithmetic)."""
    brackets, e = 0, float(max_epochs)
    while e >= 1:
        e /= factor
        brackets += 1
    end0 = math.ceil(1 + math.log(max_epochs, factor))
    total = 0
    for b in range(brackets):
        for r in range(b + 1):
            total += math.ceil(end0 / (b + 1) * factor ** (b - r))
    return total


def hyperband_max_epochs(max_trials: int, epochs: int, factor: int = HYPERBAND_FACTOR) -> int:
    """Largest ``max_epochs`` in ``[1, epochs]`` whose Hyperband schedule fits in ``max_trials`` trials."""
    best = 1
    for e in range(1, int(epochs) + 1):
        if hyperband_trials(e, factor) <= max_trials:
            best = e
    return best


def _tuner(algorithm, hypermodel, objective, max_trials, epochs, seed, directory):
    import keras_tuner as kt
    common = dict(objective=objective, seed=seed, directory=directory, project_name="search",
                  overwrite=True)
    if algorithm == "hyperband":
        max_epochs = hyperband_max_epochs(max_trials, epochs)
        tuner = kt.Hyperband(hypermodel, max_epochs=max_epochs, factor=HYPERBAND_FACTOR,
                             hyperband_iterations=1, **common)
        tuner.oracle.max_trials = max_trials  # hard cap on top of the schedule
        return tuner, max_epochs
    if algorithm == "random":
        return kt.RandomSearch(hypermodel, max_trials=max_trials, **common), epochs
    return kt.BayesianOptimization(hypermodel, max_trials=max_trials, **common), epochs


def trial_budget(model_family: str, max_trials: int) -> dict:
    """Trials per family: {family: trials}; see the module doc."""
    if model_family == saved_model.FAMILY_NETWORK:
        return {saved_model.FAMILY_NETWORK: max_trials}
    if model_family == saved_model.FAMILY_FOREST:
        return {saved_model.FAMILY_FOREST: max_trials}
    trees = max(1, max_trials // 3)
    return {saved_model.FAMILY_NETWORK: max(1, max_trials - trees), saved_model.FAMILY_FOREST: trees}


def run(transformed_examples_dir: str, transform_graph_dir: str, hyperparameters_dir: str,
        label_key: str, problem_type: str, num_classes: int, algorithm: str = "hyperband",
        max_trials: int = 6, epochs: int = 4, seed: int = 42, model_family: str = "auto") -> dict:
    choices.check("algorithm", algorithm, choices.TUNERS)
    choices.check("model_family", model_family, choices.MODEL_FAMILIES)
    if int(max_trials) < 1:
        raise ValueError(f"max_trials must be >= 1, got {max_trials!r}")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")
    max_trials, epochs = int(max_trials), int(epochs)

    import tensorflow as tf
    from kfx_components.common import model as m

    start = time.time()
    tf.keras.utils.set_random_seed(seed)
    transform_output = m.load_transform_output(transform_graph_dir)
    m.output_units(problem_type, num_classes)  # validates problem_type / num_classes
    budget = trial_budget(model_family, max_trials)
    families, network, trees = {}, None, None
    if saved_model.FAMILY_NETWORK in budget:
        network = _search_network(transformed_examples_dir, transform_output, label_key, problem_type, num_classes,
                                  algorithm, budget[saved_model.FAMILY_NETWORK], epochs, seed)
        families[saved_model.FAMILY_NETWORK] = {k: network[k] for k in ("eval_metric", "trials", "seconds")}
    if saved_model.FAMILY_FOREST in budget:
        from kfx_components.tune import forest_search
        trees = forest_search.search(transformed_examples_dir, transform_output, label_key, problem_type,
                                     num_classes, budget[saved_model.FAMILY_FOREST], seed)
        families[saved_model.FAMILY_FOREST] = {"eval_metric": trees["score"], "trials": len(trees["trials"]),
                                               "seconds": trees["seconds"], "num_trees": trees["num_trees"],
                                               "settings": trees["best"]}
    family, reason = _choose(families, problem_type)
    hps = network["hyperparameters"] if network else dict(m.DEFAULT_HYPERPARAMETERS)
    m.write_hyperparameters(hyperparameters_dir, **hps, family=family,
                            forest=trees["best"] if family == saved_model.FAMILY_FOREST else None)
    facts = {
        **hps,
        "family": family,
        "family_reason": reason,
        "families": families,
        "model_family": model_family,
        "metric": problem.primary_metric(problem_type),
        "seconds": round(time.time() - start, 2),
    }
    if network:
        facts.update({k: network[k] for k in ("algorithm", "objective", "best_score", "trials", "max_epochs",
                                              "batch_size", "steps_per_epoch")})
        facts["max_trials"] = max_trials
    if trees:
        facts["forest_trials"] = trees["trials"]
    return facts


def _choose(families: dict, problem_type: str) -> tuple[str, str]:
    """(the family with the better eval metric, why); a tie goes to the network."""
    metric = problem.primary_metric(problem_type)
    if len(families) == 1:
        (only,) = families
        return only, f"{only} only (model_family)"
    net = families[saved_model.FAMILY_NETWORK]["eval_metric"]
    trees = families[saved_model.FAMILY_FOREST]["eval_metric"]
    if trees == net:
        return saved_model.FAMILY_NETWORK, (f"eval {metric}: a tie at {net:.4f}; the network converts to "
                                             "TFLite as it is")
    better = trees > net if problem.higher_is_better(problem_type) else trees < net
    winner = saved_model.FAMILY_FOREST if better else saved_model.FAMILY_NETWORK
    return winner, (f"eval {metric}: {saved_model.FAMILY_FOREST} {trees:.4f}, {saved_model.FAMILY_NETWORK} "
                    f"{net:.4f} (its short tuning trials); {winner} is better")


def _search_network(transformed_examples_dir, transform_output, label_key, problem_type, num_classes,
                    algorithm, max_trials, epochs, seed) -> dict:
    """KerasTuner over the network's space; its best trial scored on eval like the trees."""
    import keras_tuner as kt
    from kfx_components.common import model as m

    start = time.time()
    metric = problem.primary_metric(problem_type)
    objective = kt.Objective(f"val_{metric}", direction="max" if problem.higher_is_better(problem_type) else "min")
    stats = m.label_stats(transformed_examples_dir, transform_output, label_key, problem_type, num_classes)

    def hypermodel(hp):
        return m.build_model(
            transform_output, label_key, problem_type, num_classes,
            width=hp.Choice("width", list(WIDTHS)),
            depth=hp.Int("depth", DEPTH_RANGE[0], DEPTH_RANGE[1]),
            learning_rate=hp.Float("learning_rate", LEARNING_RATE_RANGE[0], LEARNING_RATE_RANGE[1],
                                   sampling="log"),
            label_stats=stats)

    plan = m.fit_plan(m.count_examples(transformed_examples_dir, "train"), epochs)
    train = m.make_dataset(transformed_examples_dir, "train", transform_output, label_key, plan["batch_size"],
                           shuffle=True, repeat=True, seed=seed, problem_type=problem_type)
    evals = m.make_dataset(transformed_examples_dir, "eval", transform_output, label_key, 1024,
                           problem_type=problem_type)
    workdir = tempfile.mkdtemp(prefix="kfx-tune-")
    try:
        tuner, trial_epochs = _tuner(algorithm, hypermodel, objective, max_trials, plan["epochs"], seed, workdir)
        tuner.search(train, validation_data=evals, epochs=trial_epochs, steps_per_epoch=plan["steps_per_epoch"],
                     callbacks=m.fit_callbacks(), verbose=0)
        best_trial = tuner.oracle.get_best_trials(1)[0]
        best = best_trial.hyperparameters.values
        trials = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
        best_model = tuner.get_best_models(1)[0]
        score = m.split_metric(lambda f: best_model(f, training=False), transformed_examples_dir,
                                          transform_output, label_key, problem_type)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "hyperparameters": {"width": int(best["width"]), "depth": int(best["depth"]),
                            "learning_rate": float(best["learning_rate"])},
        "algorithm": algorithm,
        "objective": f"val_{metric}",
        "best_score": float(best_trial.score),
        "eval_metric": score,
        "trials": len(trials),
        "max_epochs": int(trial_epochs),
        "batch_size": plan["batch_size"],
        "steps_per_epoch": plan["steps_per_epoch"],
        "seconds": round(time.time() - start, 2),
    }
