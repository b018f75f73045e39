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
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

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

class Split(NamedTuple):
    """An even-stride sample of one split: its serialized records, labels and raw feature table
    (one row per record, the columns of ``columns.json`` but the label)."""
    records: List[bytes]
    labels: np.ndarray
    table: Any  # pandas.DataFrame


def read_split(examples_dir: str, split: str, label_key: str, columns: Dict[str, str],
               max_rows: int = MAX_ROWS) -> Split:
    """An even-stride sample of at most ``max_rows`` records of one split.

    The count and the sample are tf.data passes in C++ and the records are decoded to columns by
    tfx_bsl in one call: no Python per record or cell (the table's cells as ``tf.train.Example``
    parsing gives them: a cell's first value, text decoded, NaN where absent)."""
    import pandas as pd
    import tensorflow as tf

    path = io.split_file(examples_dir, split)
    dataset = tf.data.TFRecordDataset(path, compression_type="GZIP")
    plain = tf.autograph.experimental.do_not_convert  # tensor arithmetic only: nothing to convert
    total = int(dataset.reduce(np.int64(0), plain(lambda n, _: n + 1)))
    stride = max(1, math.ceil(total / max_rows))
    sample = dataset.enumerate().filter(plain(lambda i, _: i % stride == 0)).map(plain(lambda _, r: r))
    records = [r for batch in sample.batch(4096).as_numpy_iterator() for r in batch.tolist()]
    cells = _first_values(records)
    labels = cells.pop(label_key, np.full(len(records), np.nan))
    features = [c for c in columns if c != label_key]
    table = pd.DataFrame({c: cells.get(c, np.full(len(records), np.nan)) for c in features},
                         columns=features)
    return Split(records, np.asarray(labels, dtype=np.float64), table)


def _first_values(records: Sequence[bytes]) -> Dict[str, np.ndarray]:
    """{feature: its first value per record}: int64 (float64 with NaN when a record lacks it),
    float64, or text (object, NaN when absent); a feature no record has a value of is left out."""
    import pyarrow as pa
    from tfx_bsl.coders import example_coder

    if not records:
        return {}
    batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(list(records))
    cells: Dict[str, np.ndarray] = {}
    for name, column in zip(batch.schema.names, batch.columns):
        if pa.types.is_null(column.type.value_type):
            continue
        offsets = column.offsets.to_numpy()
        present = (np.diff(offsets) > 0) & ~column.is_null().to_numpy(zero_copy_only=False)
        if not present.any():
            continue
        firsts = column.values.take(pa.array(offsets[:-1][present]))
        if pa.types.is_binary(firsts.type) or pa.types.is_large_binary(firsts.type):
            values = np.full(len(records), np.nan, dtype=object)
            values[present] = [v.decode("utf-8", "replace") for v in firsts.to_pylist()]
        elif present.all():
            values = firsts.to_numpy(zero_copy_only=False)
            values = values.astype(np.int64 if pa.types.is_integer(firsts.type) else np.float64)
        else:
            values = np.full(len(records), np.nan)
            values[present] = firsts.to_numpy(zero_copy_only=False)
        cells[name] = values
    return cells


def load_serving(model_dir: str):
    """The SavedModel's ``serving_default`` signature: serialized tf.Example -> outputs."""
    from kfx_components.common import loading

    return loading.load_model(model_dir).signatures[problem.SERVING_SIGNATURE]


def predict(serve, records: Sequence[bytes], batch: int = 1024) -> np.ndarray:
    """The served model's outputs (``probabilities`` [n, 1 or K] or ``predictions`` [n, 1]);
    ``serve``: ``load_serving(model_dir)``."""
    import tensorflow as tf

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
    from threadpoolctl import threadpool_limits

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
        # Early stopping on a tenth of the rows (55 of 100 iterations on the taxi rows).
        boosting = dict(max_iter=100, early_stopping=True, random_state=SEED)
        estimator = (HistGradientBoostingRegressor(**boosting) if problem_type == "regression"
                     else HistGradientBoostingClassifier(**boosting))
    model = make_pipeline(pre, estimator)
    y = train_labels if problem_type == "regression" else train_labels.astype(np.int64)
    # One thread: OpenMP's and OpenBLAS's threads spin waiting for each other when the cores are busy
    # (TFMA's workers, other steps). On the taxi rows at a load of 3.5-4.4 on 2 cores the boosting took
    # 13-28 s with two threads and 1.6-1.8 s with one, the same 55 trees (the linear: 1.7-2.1 s, 0.8 s).
    with threadpool_limits(limits=1):
        model.fit(train_table, y)
        if problem_type == "regression":
            return model.predict(test_table)[:, None]
        probabilities = model.predict_proba(test_table)
    # Class probabilities laid out by class index (a class absent from train gets 0).
    full = np.zeros((len(test_table), 2 if problem_type == "binary" else int(num_classes)))
    full[:, model.classes_] = probabilities
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


def assess(serve, examples_dir: str, test: Split, label_key: str, problem_type: str,
           num_classes: int, min_vs_reference: float = 0.0) -> Dict[str, Any]:
    """Compare the served model (``load_serving``) with the trivial predictor and the classical
    references on the test rows (``read_split(examples_dir, io.TEST, ...)``); the caller reads both
    once and shares them with ``explain``. The gates' verdicts and reasons (see the module doc)."""
    start = time.time()
    columns = io.read_columns(examples_dir)
    _, train_labels, train_table = read_split(examples_dir, io.TRAIN, label_key, columns)
    test_records, labels, test_table = test
    n = len(labels)
    name = problem.primary_metric(problem_type)
    outputs = {"model": served_outputs(problem_type, predict(serve, test_records), num_classes)}
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
    # Paired, like vs_trivial: on a small test split the two models' own intervals overlap widely
    # while their difference on the same resampled rows is much narrower.
    vs_boosting = interval(_better(problem_type, samples["model"], samples["boosting"]))
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
        "vs_boosting_ci": vs_boosting,
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
