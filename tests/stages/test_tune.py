"""tune: KerasTuner search writes hyperparameters inside the search space (taxi fixtures)."""
import json
import os

import pytest

from kfx_components.tune import executor


def _in_space(hp):
    assert set(hp) == {"family", "width", "depth", "learning_rate"} and hp["family"] == "network"
    assert isinstance(hp["width"], int) and hp["width"] in executor.WIDTHS
    assert isinstance(hp["depth"], int) and executor.DEPTH_RANGE[0] <= hp["depth"] <= executor.DEPTH_RANGE[1]
    lo, hi = executor.LEARNING_RATE_RANGE
    assert isinstance(hp["learning_rate"], float) and lo <= hp["learning_rate"] <= hi


def test_hyperband_writes_valid_hyperparameters(hyperparameters):
    with open(os.path.join(hyperparameters.path, "hyperparameters.json")) as f:
        hp = json.load(f)
    _in_space(hp)
    facts = hyperparameters.metadata
    assert {k: facts[k] for k in hp} == hp and facts["family_reason"] == "network only (model_family)"
    assert facts["algorithm"] == "hyperband" and facts["objective"] == "val_auc"
    assert 1 <= facts["trials"] <= 2  # the fixture's max_trials
    assert 0.5 < facts["best_score"] <= 1.0
    assert os.listdir(hyperparameters.path) == ["hyperparameters.json"]  # tuner workdir is elsewhere


def test_random_search_runs_max_trials(model_args, tmp_path):
    facts = executor.run(hyperparameters_dir=str(tmp_path / "hp"), algorithm="random", max_trials=2,
                         epochs=1, model_family="network", **model_args)
    assert facts["trials"] == 2 and facts["algorithm"] == "random"
    with open(tmp_path / "hp" / "hyperparameters.json") as f:
        _in_space(json.load(f))


def test_unknown_algorithm_is_rejected(model_args, tmp_path):
    with pytest.raises(ValueError, match="algorithm"):
        executor.run(hyperparameters_dir=str(tmp_path / "hp"), algorithm="grid", **model_args)
    assert not (tmp_path / "hp").exists()


@pytest.mark.parametrize("max_epochs", [1, 2, 3, 4, 5, 9, 10])
def test_hyperband_trial_arithmetic_matches_keras_tuner(max_epochs, tmp_path):
    """hyperband_trials (used to map max_trials -> max_epochs) counts what the real oracle creates."""
    import keras_tuner as kt
    hps = kt.HyperParameters()
    hps.Int("x", 0, 1000)
    oracle = kt.oracles.HyperbandOracle(objective=kt.Objective("score", "max"), max_epochs=max_epochs,
                                        factor=executor.HYPERBAND_FACTOR, hyperband_iterations=1,
                                        hyperparameters=hps, seed=1)
    oracle._set_project_dir(str(tmp_path), "p")
    created = 0
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == "STOPPED":
            break
        created += 1
        oracle.update_trial(trial.trial_id, {"score": float(trial.hyperparameters.get("x"))})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    assert created == executor.hyperband_trials(max_epochs)


def test_hyperband_budget_mapping():
    assert executor.hyperband_max_epochs(max_trials=6, epochs=4) == 3
    assert executor.hyperband_max_epochs(max_trials=2, epochs=2) == 2
    assert executor.hyperband_max_epochs(max_trials=1, epochs=8) == 1
    for trials in range(1, 30):
        for epochs in range(1, 12):
            e = executor.hyperband_max_epochs(trials, epochs)
            assert 1 <= e <= epochs
            assert e == 1 or executor.hyperband_trials(e) <= trials


def test_component_compiles_without_tensorflow(tmp_path):
    import subprocess
    import sys
    script = ("import sys; from kfp import compiler; from kfx_components.tune.component import tune; "
              f"compiler.Compiler().compile(tune, {str(tmp_path / 'tune.yaml')!r}); "
              "assert 'tensorflow' not in sys.modules, 'component.py imported TF'")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (tmp_path / "tune.yaml").read_text()
    assert "kfx-tune:" in text and "executor.run(" in text
