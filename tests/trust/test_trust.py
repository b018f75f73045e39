"""Trustworthy models on tables of several shapes, through `kfx run` as a user runs it.

One run per table (module fixture), tiny training budgets. For each table the test
re-derives the verdict itself from the artifacts: it scores the pushed model on the
test split, fits its own plain scikit-learn model on the same training rows, and
checks the pushed model is within a few points of it (AUC within 0.03, accuracy
within 0.1, RMSE at most 1.2x). Random labels must push nothing.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kfx_components.common import loading
from tests.trust import tables
from tests.webhook import Webhook

pytestmark = pytest.mark.e2e

BUDGET = ["--param", "max_trials=1", "--param", "tune_epochs=3", "--param", "train_epochs=40", "--param", "explain_rows=0",
          "--param", "distill_epochs=40", "--param", "finetune_epochs=1", "--param", "pruning_sparsity=0",
          "--param", "quantize_qat=false"]
# How close the pushed model must come to a plain classical model on the same rows.
WITHIN = {"auc": 0.03, "accuracy": 0.1}
RMSE_RATIO = 1.2


@pytest.fixture(scope="module", params=[t.__name__ for t in tables.ALL])
def table_run(request, tmp_path_factory):
    name, problem_type, frame = getattr(tables, request.param)()
    work = tmp_path_factory.mktemp(name)
    data = work / f"{name}.csv"
    frame.to_csv(data, index=False)
    with Webhook() as hook:    # the run's outcome, as the notify exit task posts it
        proc = subprocess.run([sys.executable, "-m", "kfx.cli", "run", "--data", str(data), "--label", tables.LABEL,
                               "--task", problem_type, "--root", str(work / "root"), *BUDGET,
                               "--param", f"notify_url={hook.url}"], capture_output=True, text=True, timeout=1200)
    proc.posted = hook.posts
    assert proc.returncode == 0, f"{name}: kfx run exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return name, problem_type, work / "root", proc


def _split(examples_dir: Path, split: str):
    """(raw feature matrix with NaN for missing, labels, serialized records) of one split."""
    import tensorflow as tf
    records = list(tf.data.TFRecordDataset(str(examples_dir / split / "data.tfrecord.gz"), "GZIP").as_numpy_iterator())
    rows, labels = [], []
    for r in records:
        feats = tf.train.Example.FromString(r).features.feature
        row = {}
        for k, f in feats.items():
            kind = f.WhichOneof("kind")
            value = getattr(f, kind).value[0]
            row[k] = value.decode() if isinstance(value, bytes) else value
        labels.append(row.pop(tables.LABEL))
        rows.append(row)
    return rows, np.asarray(labels, dtype=float), records


def _own_reference(problem_type, train_rows, train_y, test_rows):
    """A plain scikit-learn model, fitted here, independently of kfx's evaluate stage."""
    import pandas as pd
    from sklearn.compose import make_column_selector, make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    train, test = pd.DataFrame(train_rows), pd.DataFrame(test_rows)[list(pd.DataFrame(train_rows).columns)]
    pre = make_column_transformer(
        (make_pipeline(SimpleImputer(), StandardScaler()), make_column_selector(dtype_include="number")),
        (OneHotEncoder(handle_unknown="ignore"), make_column_selector(dtype_exclude="number")))
    est = Ridge() if problem_type == "regression" else LogisticRegression(max_iter=3000)
    model = make_pipeline(pre, est).fit(train, train_y if problem_type == "regression" else train_y.astype(int))
    if problem_type == "regression":
        return model.predict(test)
    return model.predict_proba(test)


def _metric(problem_type, y, out):
    from sklearn.metrics import roc_auc_score
    out = np.asarray(out)
    if problem_type == "binary":
        return roc_auc_score(y.astype(int), out.reshape(len(y), -1)[:, -1])
    if problem_type == "multiclass":
        return float((out.argmax(axis=1) == y).mean())
    return float(np.sqrt(np.mean((out.reshape(-1) - y) ** 2)))


def test_pushed_model_is_close_to_a_classical_model_or_nothing_is_pushed(table_run):
    import tensorflow as tf

    name, problem_type, root, proc = table_run
    [examples_dir] = root.glob("artifacts/kfx-tabular/*/ingest/examples")
    train_rows, train_y, _ = _split(examples_dir, "train")
    test_rows, test_y, test_records = _split(examples_dir, "test")
    reference = _metric(problem_type, test_y, _own_reference(problem_type, train_rows, train_y, test_rows))
    pushed = re.search(r"^published: (\S+)$", proc.stdout, re.M)

    [posted] = proc.posted
    assert posted["kfx"]["state"] == "SUCCEEDED" and posted["kfx"]["pushed"] is (name != "random_labels")
    if name == "random_labels":   # refused by the blessing: the webhook hears that nothing was pushed
        assert posted["text"].endswith("SUCCEEDED: no model pushed (not blessed, or the same model is already "
                                       "published)"), posted
        assert pushed is None, proc.stdout
        assert not list((root / "registry").glob("*/v*"))
        assert re.search(r"not pushed: not blessed: .*does not beat the trivial predictor", proc.stdout), proc.stdout
        return

    assert pushed, f"{name}: nothing pushed\n{proc.stdout[-3000:]}"
    uri = Path(pushed.group(1))
    serve = loading.load_model(str(uri / "saved_model")).signatures["serving_default"]
    out = next(iter(serve(examples=tf.constant(test_records)).values())).numpy()
    got = _metric(problem_type, test_y, out)
    if problem_type == "regression":
        assert got <= RMSE_RATIO * reference, f"{name}: RMSE {got:.4g} vs plain ridge {reference:.4g}"
        trivial = float(np.sqrt(np.mean((test_y - train_y.mean()) ** 2)))
        assert got < trivial, f"{name}: RMSE {got:.4g} does not beat predicting the mean ({trivial:.4g})"
    else:
        metric = "auc" if problem_type == "binary" else "accuracy"
        assert got >= reference - WITHIN[metric], f"{name}: {metric} {got:.4f} vs plain model {reference:.4f}"

    # The card says the same, on the same test rows, with a confidence interval and the references.
    card = json.loads((uri / "model_card.json").read_text())
    trust = card["trust"]
    assert trust["test_rows"] == len(test_y)
    assert trust["model"]["metric"] == pytest.approx(got, rel=1e-3, abs=1e-3)
    low, high = trust["model"]["ci"]
    assert low <= trust["model"]["metric"] <= high
    assert trust["vs_trivial_ci"][0] > 0
    assert card["blessing"]["blessed"] is True and card["metrics"]["split"] == "test"
    assert card["which_model"]["passed_on"] in ("student", "teacher")
    # Both families were tried on eval and the better one was trained (max_trials=1: one trial each).
    tried = card["model_family"]["families"]
    assert set(tried) == {"network", "gradient_boosted_trees"}, card["model_family"]
    sign = -1 if problem_type == "regression" else 1   # RMSE: lower is better; a tie goes to the network
    assert card["model_family"]["chosen"] == max(tried, key=lambda f: (sign * tried[f]["eval_metric"], f == "network"))
    assert f"(95% CI {low:.4f}-{high:.4f})" in proc.stdout  # the run's one-line outcome
