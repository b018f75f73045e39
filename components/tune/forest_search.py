"""The trees' search: a few TF-DF gradient-boosted-tree settings, each scored on the eval split.

The first trial is TF-DF's defaults (a strong prior on tabular data); the others
are drawn, seeded and without repeats, from ``SPACE``. The number of trees is a
cap: every trial stops early on the eval split's loss and keeps its best
iteration. A trial's score is the primary metric on eval computed from its
logits (``model.split_metric``), the measure the network's best trial is
scored with too (``executor``), so the two families are compared alike.
"""
from __future__ import annotations

import random
import time

from kfx_components.common import forest
from kfx_components.common import model as M
from kfx_components.common import problem

SPACE = {
    "max_depth": (4, 6, 8),
    "growing_strategy": ("LOCAL", "BEST_FIRST_GLOBAL"),
    "shrinkage": (0.05, 0.1, 0.2),
    "min_examples": (5, 10, 20),
    "index_semantic": ("NUMERICAL", "CATEGORICAL"),
}


def settings(trials: int, seed: int) -> list[dict]:
    """``trials`` distinct settings: TF-DF's defaults first, then seeded draws from ``SPACE``."""
    defaults = {k: forest.DEFAULT_FOREST_HYPERPARAMETERS[k] for k in SPACE}
    chosen, rng = [defaults], random.Random(seed)
    size = 1
    for values in SPACE.values():
        size *= len(values)
    while len(chosen) < min(int(trials), size):
        draw = {k: rng.choice(v) for k, v in SPACE.items()}
        if draw not in chosen:
            chosen.append(draw)
    return chosen


def search(transformed_examples_dir: str, transform_output, label_key: str, problem_type: str,
           num_classes: int, trials: int, seed: int) -> dict:
    """``{"best": settings, "score", "trials": [...], "seconds"}`` over ``settings(trials, seed)``."""
    start = time.time()
    higher = problem.higher_is_better(problem_type)
    results = []
    for hps in settings(trials, seed):
        model, facts = forest.train_forest(transformed_examples_dir, transform_output, label_key, problem_type,
                                           num_classes, seed, **hps)
        score = M.split_metric(lambda f: model(f, training=False), transformed_examples_dir, transform_output,
                            label_key, problem_type)
        results.append({"settings": hps, "score": score, "num_trees": facts["num_trees"],
                        "seconds": facts["seconds"]})
    best = (max if higher else min)(results, key=lambda r: r["score"])
    return {"best": best["settings"], "score": best["score"], "num_trees": best["num_trees"],
            "trials": results, "seconds": round(time.time() - start, 2)}
