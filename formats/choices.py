"""The run parameters that take one of a few words, defined once.

The stages check their own argument against these (a stage can run without kfx), and `kfx run`
checks every run parameter named here before anything runs, so a mistyped word fails in a second
instead of at the stage that reads it, minutes into the run.
"""
from __future__ import annotations

PROBLEM_TYPES = ("binary", "multiclass", "regression")
TUNERS = ("hyperband", "random", "bayesian")
DRIFT_ACTIONS = ("block", "warn")
FINETUNE_WHEN = ("int8_rejected", "always")   # when quantize fine-tunes its pruned and QAT variants
BLESS_ON = ("random", "temporal")             # which split's gates decide the blessing
ROLLOUTS = ("none", "canary", "blue-green", "shadow")
MODEL_FAMILIES = ("auto", "network", "gradient_boosted_trees")   # auto: tune chooses on eval

# The lifecycle pipeline's parameter -> the words it takes.
RUN_PARAMETERS = {
    "problem_type": PROBLEM_TYPES,
    "tuner": TUNERS,
    "model_family": MODEL_FAMILIES,
    "drift_action": DRIFT_ACTIONS,
    "finetune_when": FINETUNE_WHEN,
    "bless_on": BLESS_ON,
    "rollout": ROLLOUTS,
}


def check(name: str, value, allowed: tuple[str, ...]) -> str:
    """`value` when it is one of `allowed`; else a one-line ValueError naming the parameter."""
    if value not in allowed:
        raise ValueError(f"{name} {value!r}: expected one of {', '.join(allowed)}")
    return value


def check_run_parameters(params: dict) -> None:
    """Every run parameter of RUN_PARAMETERS present in `params` holds one of its words."""
    for name, allowed in RUN_PARAMETERS.items():
        if name in params:
            check(name, params[name], allowed)
