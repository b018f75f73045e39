"""tune: KerasTuner search over the model's width, depth and learning rate.

Writes ``<hyperparameters_dir>/hyperparameters.json``
(``{"width": int, "depth": int, "learning_rate": float}``).

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
from kfx_formats import choices

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


def run(transformed_examples_dir: str, transform_graph_dir: str, hyperparameters_dir: str,
        label_key: str, problem_type: str, num_classes: int, algorithm: str = "hyperband",
        max_trials: int = 6, epochs: int = 4, seed: int = 42) -> dict:
    choices.check("algorithm", algorithm, choices.TUNERS)
    if int(max_trials) < 1:
        raise ValueError(f"max_trials must be >= 1, got {max_trials!r}")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")
    max_trials, epochs = int(max_trials), int(epochs)

    import keras_tuner as kt
    import tensorflow as tf
    from kfx_components.common import model as m

    start = time.time()
    tf.keras.utils.set_random_seed(seed)
    transform_output = m.load_transform_output(transform_graph_dir)
    m.output_units(problem_type, num_classes)  # validates problem_type / num_classes
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
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    hps = {"width": int(best["width"]), "depth": int(best["depth"]),
           "learning_rate": float(best["learning_rate"])}
    m.write_hyperparameters(hyperparameters_dir, **hps)
    return {
        **hps,
        "algorithm": algorithm,
        "objective": f"val_{metric}",
        "best_score": float(best_trial.score),
        "trials": len(trials),
        "max_trials": max_trials,
        "max_epochs": int(trial_epochs),
        "batch_size": plan["batch_size"],
        "steps_per_epoch": plan["steps_per_epoch"],
        "seconds": round(time.time() - start, 2),
    }
