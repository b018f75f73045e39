"""Would a person trust this model? Comparisons on the test split that TFMA's thresholds cannot make.

* the **trivial predictor** (majority class / class prior / training mean,
  learned from the train split), on the same test rows;
* a **plain classical reference** fitted on the same training rows
  (scikit-learn logistic regression for classification, ridge for
  regression; raw features: numbers imputed and standardized, text one-hot)
  and, shown beside it, a gradient-boosting reference;
* a **paired bootstrap** over the test rows: a confidence interval for the
  model's metric and for its difference from the trivial predictor and the
  reference. A fixed margin on a few dozen rows would either bless random
  labels or reject a good small model; the interval adapts to the test size.

Everything runs on bounded samples (``MAX_ROWS`` rows per split, taken at an
even stride), so memory does not grow with the table.

The gates (``assess``):
1. the lower bound of the CI of (model - trivial) must be above 0
   (for RMSE: trivial - model), i.e. the model beats the trivial predictor
   with ``CONFIDENCE`` confidence;
2. with ``min_vs_reference`` > 0, the model's metric must reach that
   fraction of the reference's (metric / reference for AUC and accuracy,
   reference / metric for RMSE).
"""
from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from kfx_components.common import io, problem

MAX_ROWS = 20_000          # rows per split used for the references and the bootstrap
BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95
SEED = 0
# Below these the verdict is too uncertain to trust without a look: the run warns.
MIN_TEST_ROWS = 200
MIN_TEST_ROWS_PER_CLASS = 20
ONE_HOT_MAX_DISTINCT = 30  # an integer column with at most this many values is treated as a category


# ------------------------------------------------------------------ data

def read_split(examples_dir: str, split: str, label_key: str, columns: Dict[str, str],
               max_rows: int = MAX_ROWS):
    """(serialized records, labels, raw feature table) of an even-stride sample of one split."""
    import pandas as pd
    import tensorflow as tf

    path = io.split_file(examples_dir, split)
    total = sum(1 for _ in tf.data.TFRecordDataset(path, compression_type="GZIP"))
    stride = max(1, math.ceil(total / max_rows))
    records = [r for i, r in enumerate(io.read_records(path)) if i % stride == 0]
    rows, labels = [], []
    for record in records:
        example = tf.train.Example.FromString(record)
        row = {}
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            values = getattr(feature, kind).value if kind else []
            if not values:
                continue
            value = values[0]
            row[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        labels.append(row.pop(label_key, np.nan))
        rows.append(row)
    features = [c for c in columns if c != label_key]
    table = pd.DataFrame(rows, columns=features)
    return records, np.asarray(labels, dtype=np.float64), table


def predict(model_dir: str, records: Sequence[bytes], batch: int = 1024) -> np.ndarray:
    """The served model's outputs (``probabilities`` [n, 1 or K] or ``predictions`` [n, 1])."""
    import tensorflow as tf

    serve = tf.saved_model.load(model_dir).signatures[problem.SERVING_SIGNATURE]
    out = []
    for start in range(0, len(records), batch):
        result = serve(examples=tf.constant(list(records[start:start + batch])))
        out.append(next(iter(result.values())).numpy())
    return np.concatenate(out).astype(np.float64)


# ------------------------------------------------------------------ metrics on predictions

def _auc_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC per row of [B, n] label and score matrices (rank formula, ties averaged); NaN
    where a row holds one class only."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * labels).sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)
    auc[(positives == 0) | (negatives == 0)] = np.nan
    return auc


def metric_rows(problem_type: str, labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """The primary metric per row of [B, n] labels and [B, n, k] predictions."""
    if problem_type == "binary":
        return _auc_rows(labels, predictions[..., -1])
    if problem_type == "multiclass":
        return (predictions.argmax(axis=-1) == labels).mean(axis=1)
    return np.sqrt(((predictions[..., 0] - labels) ** 2).mean(axis=1))


def metric(problem_type: str, labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(metric_rows(problem_type, labels[None], predictions[None])[0])


def served_outputs(problem_type: str, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """[n, k] in the served model's layout: P(class 1) for binary, class probabilities, or the value."""
    p = np.asarray(predictions, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if problem_type == "multiclass" and p.shape[1] != num_classes:
        raise ValueError(f"expected {num_classes} class probabilities, got {p.shape[1]}")
    return p


# ------------------------------------------------------------------ the comparisons

def trivial_outputs(problem_type: str, train_labels: np.ndarray, n: int, num_classes: int):
    """(outputs [n, k], description) of the trivial predictor learned from the train labels."""
    if problem_type == "regression":
        mean = float(np.mean(train_labels))
        return np.full((n, 1), mean), f"the training mean ({mean:.4g})"
    k = 2 if problem_type == "binary" else int(num_classes)
    counts = np.bincount(train_labels.astype(np.int64), minlength=k)[:k].astype(np.float64)
    prior = counts / counts.sum()
    if problem_type == "binary":
        return np.full((n, 1), prior[1]), f"the class prior ({prior[1]:.3f} positive)"
    majority = int(np.argmax(prior))
    return np.tile(prior, (n, 1)), f"the majority class ({majority}, {prior[majority]:.3f} of train)"


def _preprocessor(table, columns: Dict[str, str], kind: str):
    """A scikit-learn ColumnTransformer for the raw columns. linear: numbers imputed and scaled,
    categories one-hot; boosting: numbers as they are (trees take missing values), categories
    as ordinal codes."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    numeric, categorical = [], []
    for name in table.columns:
        present = table[name].dropna()
        if present.empty:
            continue
        column_type = columns.get(name, "bytes")
        if column_type == "bytes" or (column_type == "int64" and present.nunique() <= ONE_HOT_MAX_DISTINCT):
            categorical.append(name)
        else:
            numeric.append(name)
    missing = SimpleImputer(strategy="constant", fill_value="(missing)")
    if kind == "linear":
        numbers = make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler())
        codes = make_pipeline(missing, OneHotEncoder(handle_unknown="ignore", min_frequency=3, max_categories=50))
    else:
        numbers = "passthrough"
        codes = make_pipeline(missing, OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1))
    parts = [(name, step, cols) for name, step, cols in (("numeric", numbers, numeric),
                                                          ("categorical", codes, categorical)) if cols]
    if not parts:
        raise ValueError("no feature column has a value: nothing to fit a reference model on")
    return ColumnTransformer(parts, sparse_threshold=0.0 if kind == "boosting" else 0.3), categorical


def reference_outputs(problem_type: str, kind: str, train_table, train_labels, test_table,
                      columns: Dict[str, str], num_classes: int) -> np.ndarray:
    """Outputs [n, k] of a classical model fitted on the training rows: kind "linear" or "boosting"."""
    from sklearn.pipeline import make_pipeline

    pre, categorical = _preprocessor(train_table, columns, kind)
    for name in categorical:  # OneHotEncoder wants one type per column
        train_table[name] = train_table[name].astype("object").where(train_table[name].notna(), None)
        test_table[name] = test_table[name].astype("object").where(test_table[name].notna(), None)
    if kind == "linear":
        from sklearn.linear_model import LogisticRegression, RidgeCV
        estimator = (RidgeCV(alphas=np.logspace(-3, 3, 13)) if problem_type == "regression"
                     else LogisticRegression(max_iter=2000, C=1.0))
    else:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        # Early stopping on a tenth of the rows keeps it to seconds on a few thousand rows.
        boosting = dict(max_iter=100, early_stopping=True, random_state=SEED)
        estimator = (HistGradientBoostingRegressor(**boosting) if problem_type == "regression"
                     else HistGradientBoostingClassifier(**boosting))
    model = make_pipeline(pre, estimator)
    y = train_labels if problem_type == "regression" else train_labels.astype(np.int64)
    model.fit(train_table, y)
    if problem_type == "regression":
        return model.predict(test_table)[:, None]
    # Class probabilities laid out by class index (a class absent from train gets 0).
    full = np.zeros((len(test_table), 2 if problem_type == "binary" else int(num_classes)))
    full[:, model.classes_] = model.predict_proba(test_table)
    return full[:, 1:2] if problem_type == "binary" else full


def bootstrap(problem_type: str, labels: np.ndarray, outputs: Dict[str, np.ndarray],
              resamples: int = BOOTSTRAP_RESAMPLES, seed: int = SEED) -> Dict[str, np.ndarray]:
    """The primary metric of every named output on the same ``resamples`` resamples of the rows."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    values: Dict[str, List[np.ndarray]] = {name: [] for name in outputs}
    for start in range(0, resamples, 100):
        idx = rng.integers(0, n, size=(min(100, resamples - start), n))
        y = labels[idx]
        for name, out in outputs.items():
            values[name].append(metric_rows(problem_type, y, out[idx]))
    return {name: np.concatenate(v) for name, v in values.items()}


def interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> List[Optional[float]]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return [None, None]
    tail = (1.0 - confidence) / 2 * 100
    return [float(np.percentile(samples, tail)), float(np.percentile(samples, 100 - tail))]


def _better(problem_type: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How much better a is than b (positive = better), per resample."""
    return a - b if problem.higher_is_better(problem_type) else b - a


def assess(model_dir: str, examples_dir: str, label_key: str, problem_type: str, num_classes: int,
           min_vs_reference: float = 0.0) -> Dict[str, Any]:
    """Compare the model with the trivial predictor and the classical references on the test split;
    the gates' verdicts and reasons (see the module doc)."""
    start = time.time()
    columns = io.read_columns(examples_dir)
    _, train_labels, train_table = read_split(examples_dir, io.TRAIN, label_key, columns)
    test_records, labels, test_table = read_split(examples_dir, io.TEST, label_key, columns)
    n = len(labels)
    name = problem.primary_metric(problem_type)
    outputs = {"model": served_outputs(problem_type, predict(model_dir, test_records), num_classes)}
    outputs["trivial"], trivial_desc = trivial_outputs(problem_type, train_labels, n, num_classes)
    references: Dict[str, Any] = {}
    for kind in ("linear", "boosting"):
        t = time.time()
        outputs[kind] = reference_outputs(problem_type, kind, train_table.copy(), train_labels,
                                          test_table.copy(), columns, num_classes)
        references[kind] = {"seconds": round(time.time() - t, 2)}
    point = {k: metric(problem_type, labels, v) for k, v in outputs.items()}
    samples = bootstrap(problem_type, labels, outputs)
    ci = {k: interval(v) for k, v in samples.items()}
    vs_trivial = interval(_better(problem_type, samples["model"], samples["trivial"]))
    vs_linear = interval(_better(problem_type, samples["model"], samples["linear"]))
    for kind in references:
        references[kind].update({"metric": point[kind], "ci": ci[kind]})
    references["linear"]["estimator"] = "RidgeCV" if problem_type == "regression" else "LogisticRegression"
    references["boosting"]["estimator"] = ("HistGradientBoostingRegressor" if problem_type == "regression"
                                           else "HistGradientBoostingClassifier")

    reasons = []
    if vs_trivial[0] is None or not vs_trivial[0] > 0:
        reasons.append(f"{name} {point['model']:.4f} (95% CI {ci_text(ci['model'])}) on {n} test rows does not "
                       f"beat the trivial predictor, {trivial_desc}: {name} {point['trivial']:.4f}")
    ratio = _ratio(problem_type, point["model"], point["linear"])
    if min_vs_reference and (ratio is None or ratio < min_vs_reference):
        reasons.append(f"{name} {point['model']:.4f} is {_fmt_ratio(ratio)} of the plain "
                       f"{references['linear']['estimator']}'s {point['linear']:.4f} on the same test rows; "
                       f"min_vs_reference requires {min_vs_reference:g}")
    return {
        "test_rows": int(n),
        "metric": name,
        "model": {"metric": point["model"], "ci": ci["model"]},
        "trivial": {"metric": point["trivial"], "ci": ci["trivial"], "predictor": trivial_desc},
        "references": references,
        "vs_trivial_ci": vs_trivial,
        "vs_reference_ci": vs_linear,
        "vs_reference_ratio": ratio,
        "min_vs_reference": float(min_vs_reference),
        "confidence": CONFIDENCE,
        "resamples": BOOTSTRAP_RESAMPLES,
        "warnings": _small_test_warnings(problem_type, labels, ci["model"]),
        "reasons": reasons,
        "seconds": round(time.time() - start, 2),
    }


def _ratio(problem_type: str, value: float, reference: float) -> Optional[float]:
    """value / reference for AUC and accuracy, reference / value for RMSE (1.0 = as good)."""
    num, den = (value, reference) if problem.higher_is_better(problem_type) else (reference, value)
    return float(num / den) if den and math.isfinite(num / den) else None


def _fmt_ratio(ratio: Optional[float]) -> str:
    return "n/a" if ratio is None else f"{ratio:.3f}x"


def ci_text(ci: List[Optional[float]], signed: bool = False) -> str:
    """"0.8123-0.8710"; signed (a difference): "-0.0310 to +0.0120"."""
    if ci[0] is None:
        return "n/a"
    return f"{ci[0]:+.4f} to {ci[1]:+.4f}" if signed else f"{ci[0]:.4f}-{ci[1]:.4f}"


def _small_test_warnings(problem_type: str, labels: np.ndarray, model_ci) -> List[str]:
    width = "" if model_ci[0] is None else f"; the 95% CI of the metric is {model_ci[1] - model_ci[0]:.3f} wide"
    warnings = []
    if len(labels) < MIN_TEST_ROWS:
        warnings.append(f"the test split has only {len(labels)} rows (fewer than {MIN_TEST_ROWS}): "
                        f"the verdict is uncertain{width}")
    if problem_type != "regression":
        counts = np.bincount(labels.astype(np.int64))
        present = counts[counts > 0]
        if present.size and present.min() < MIN_TEST_ROWS_PER_CLASS:
            warnings.append(f"the smallest class has {int(present.min())} test rows "
                            f"(fewer than {MIN_TEST_ROWS_PER_CLASS}){width}")
    return warnings
