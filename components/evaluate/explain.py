"""A global explanation of the served model, on the RAW features, through ``serving_default``.

What a person asks of a model before trusting it: which inputs drive its
answers, and how. On a bounded sample of test rows (``rows``, an even stride
over the split, so memory does not grow with the table):

* **SHAP values** (``shap.Explainer`` with a permutation algorithm on the
  served model: raw values -> serialized ``tf.Example`` -> ``serving_default``
  -> probability / prediction; ``background`` rows stand for "feature
  unknown"). Global importance is the mean |SHAP| per raw feature; local
  accuracy (base value + the row's SHAP values = the model's output for the
  row) is checked and reported as ``additivity_max_error``.
* **Partial dependence** of the model's output on the ``top_k`` most important
  features: the mean output over the sample rows with that feature set to each
  grid value (quantiles for numbers, the most frequent values for text/codes).

Categorical (bytes) columns are given to SHAP as integer codes into the
sample's vocabulary and decoded back to their text before the model sees
them; a missing cell is NaN and becomes an absent feature, as in the data.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Dict, List

import numpy as np

from kfx_components.common import problem

BACKGROUND_ROWS = 25
# Each explained row costs 2F+1 model evaluations of `background` rows of F cells: at a fixed row
# count SHAP grows with F squared (1,000 features x 200 rows: 10^10 cells, days). Past MAX_CELLS
# (about a minute here) the rows shrink, then the background; below MIN_ROWS the explanation is
# skipped and says why, so a wide table's evaluate still finishes.
MAX_CELLS = 20_000_000
MIN_ROWS = 10
SMALL_BACKGROUND = 5
TOP_K = 3
GRID_POINTS = 10
PREDICT_BATCH = 4096


class _Codec:
    """Raw feature table <-> float matrix SHAP can permute (bytes columns as vocabulary codes)."""

    def __init__(self, table, columns: Dict[str, str]):
        self.features = [c for c in table.columns if table[c].notna().any()]
        self.kinds = {c: columns.get(c, "float") for c in self.features}
        self.vocab: Dict[str, List[str]] = {}
        for c in self.features:
            if self.kinds[c] == "bytes":
                counts = table[c].dropna().astype(str).value_counts()
                self.vocab[c] = list(counts.index)
        self._cache: Dict[tuple, bytes] = {}

    def encode(self, table) -> np.ndarray:
        out = np.full((len(table), len(self.features)), np.nan)
        for j, c in enumerate(self.features):
            col = table[c]
            if c in self.vocab:
                index = {v: i for i, v in enumerate(self.vocab[c])}
                out[:, j] = [index.get(str(v), np.nan) if v == v and v is not None else np.nan for v in col]
            else:
                out[:, j] = np.asarray(col, dtype=np.float64)
        return out

    def decode_value(self, j: int, v: float):
        c = self.features[j]
        if c in self.vocab:
            return self.vocab[c][int(v)]
        return int(round(v)) if self.kinds[c] == "int64" else float(v)

    def _entry(self, j: int, v: float) -> bytes:
        """One feature's serialized ``Features`` map entry (cached per column and value)."""
        key = (j, v)
        entry = self._cache.get(key)
        if entry is None:
            import tensorflow as tf

            c = self.features[j]
            if c in self.vocab:
                feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[self.vocab[c][int(v)].encode("utf-8")]))
            elif self.kinds[c] == "int64":
                feature = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(round(v))]))
            else:
                feature = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))
            entry = tf.train.Features(feature={c: feature}).SerializeToString()
            if len(self._cache) < 200_000:
                self._cache[key] = entry
        return entry

    def serialize(self, x: np.ndarray) -> List[bytes]:
        """Serialized ``tf.Example`` per row; a NaN cell is an absent feature.

        Protobuf messages merge by concatenation, so an Example is field 1 (``features``)
        holding the concatenated single-entry ``Features`` of its cells: identical to what
        ``tf.train.Example(...).SerializeToString()`` parses to. SHAP asks for hundreds of
        thousands of rows, so the rows are joined column by column with numpy's element-wise
        ``+`` on arrays of bytes, each distinct value's entry serialized once.
        """
        bodies = np.full(len(x), b"", dtype=object)
        sizes = np.zeros(len(x), dtype=np.int64)
        for j in range(x.shape[1]):
            present = np.isfinite(x[:, j])
            distinct, which = np.unique(x[present, j], return_inverse=True)
            entries = np.empty(len(distinct), dtype=object)
            entries[:] = [self._entry(j, float(v)) for v in distinct]
            cells = np.full(len(x), b"", dtype=object)
            cells[present] = entries[which]
            bodies = bodies + cells
            sizes[present] += np.fromiter(map(len, entries), dtype=np.int64, count=len(entries))[which]
        lengths, which = np.unique(sizes, return_inverse=True)
        headers = np.empty(len(lengths), dtype=object)
        headers[:] = [b"\x0a" + _varint(int(n)) for n in lengths]
        return (headers[which] + bodies).tolist()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _predictor(serve, codec: _Codec, problem_type: str):
    """f(X float matrix [n, F]) -> model outputs [n] (binary: P(positive); regression) or [n, K]."""
    import tensorflow as tf

    key = "predictions" if problem_type == "regression" else "probabilities"
    calls = {"rows": 0}

    def f(x):
        x = np.asarray(x, dtype=np.float64).reshape(-1, len(codec.features))
        out = []
        for start in range(0, len(x), PREDICT_BATCH):
            records = codec.serialize(x[start:start + PREDICT_BATCH])
            out.append(serve(examples=tf.constant(records))[key].numpy())
        calls["rows"] += len(x)
        y = np.concatenate(out) if out else np.zeros((0, 1))
        return y[:, 0] if problem_type != "multiclass" else y

    return f, calls


def _grid(codec: _Codec, j: int, x: np.ndarray) -> List[float]:
    values = x[:, j][np.isfinite(x[:, j])]
    if not len(values):
        return []
    c = codec.features[j]
    if c in codec.vocab:
        return list(range(min(GRID_POINTS + 2, len(codec.vocab[c]))))  # most frequent first
    distinct = np.unique(values)
    if len(distinct) <= GRID_POINTS:
        return [float(v) for v in distinct]
    return [float(v) for v in np.unique(np.quantile(values, np.linspace(0.05, 0.95, GRID_POINTS)))]


def sample_size(n_features: int, rows: int, background: int) -> tuple:
    """(rows, background rows, note) keeping SHAP's cells within MAX_CELLS; rows 0 (and the note
    saying why) when even MIN_ROWS rows on SMALL_BACKGROUND rows would not fit."""
    def fitting(bg: int) -> int:
        return MAX_CELLS // ((2 * n_features + 1) * bg * n_features)

    if fitting(background) >= rows:
        return rows, background, ""
    for bg in (background, min(background, SMALL_BACKGROUND)):
        if fitting(bg) >= MIN_ROWS:
            return (fitting(bg), bg, f"{fitting(bg)} rows on {bg} background rows instead of {rows} on {background}: "
                    f"{n_features} features x {rows} rows is past the explanation's budget of {MAX_CELLS:,} cells")
    return 0, 0, (f"skipped: {n_features} features need {(2 * n_features + 1) * SMALL_BACKGROUND * n_features:,} "
                  f"cells per explained row, past the explanation's budget of {MAX_CELLS:,} cells "
                  f"for {MIN_ROWS} rows")


def explain(serve, test_table, columns: Dict[str, str], problem_type: str, num_classes: int,
            rows: int = 200, background: int = BACKGROUND_ROWS, top_k: int = TOP_K, seed: int = 0) -> Dict[str, Any]:
    """SHAP importance and partial dependence of the served model (``serve``: ``trust.load_serving``)
    on an even stride of at most ``rows`` rows of ``test_table`` (the raw test features,
    ``trust.read_split``; ``columns``: their types); see the module doc."""
    # shap's maskers are numba functions compiled anew in every process (no cache=True): 10-100 s,
    # longer than running them as Python on a few hundred rows, with the same values. Set once numba
    # is imported (shap imported earlier in the process), the flag half-applies and the masker fails.
    if "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_DISABLE_JIT", "1")
    import shap

    start = time.time()
    problem.check_problem_type(problem_type)
    stride = max(1, math.ceil(len(test_table) / int(rows)))
    table = test_table.iloc[::stride].reset_index(drop=True)
    n_features = int(table.notna().any().sum())   # the codec's features: a value in some row
    rows, background, note = sample_size(max(1, n_features), int(rows), int(background))
    if not rows:
        return {"skipped": note, "features": n_features}
    if note:   # fewer rows than asked: exactly that many, spread evenly over the split
        picks = np.unique(np.linspace(0, len(test_table) - 1, rows).round().astype(int))
        table = test_table.iloc[picks].reset_index(drop=True)
    # Built on the rows explained, so every text value they hold is in its vocabulary.
    codec = _Codec(table, columns)
    if not codec.features:
        raise ValueError("the test split has no feature to explain")
    n_features = len(codec.features)
    x = codec.encode(table)
    rng = np.random.default_rng(seed)
    n_bg = min(int(background), len(x))
    bg = x[rng.choice(len(x), size=n_bg, replace=False)]
    f, calls = _predictor(serve, codec, problem_type)
    explainer = shap.Explainer(f, shap.maskers.Independent(bg, max_samples=n_bg), algorithm="permutation",
                               seed=seed)
    # One antithetic permutation per row (2F+1 evaluations): the global mean |SHAP| over the sample
    # averages the permutation noise out; local accuracy holds exactly for every row.
    values = explainer(x, max_evals=2 * n_features + 1, silent=True)
    shap_values = np.asarray(values.values, dtype=np.float64)           # [n, F] or [n, F, K]
    base = np.asarray(values.base_values, dtype=np.float64)              # [n] or [n, K]
    outputs = f(x)
    additivity = float(np.max(np.abs(base + shap_values.sum(axis=1) - outputs)))
    magnitude = np.abs(shap_values)
    if magnitude.ndim == 3:  # multiclass: summed over classes
        magnitude = magnitude.sum(axis=2)
        signed = shap_values.sum(axis=2)
    else:
        signed = shap_values
    mean_abs = magnitude.mean(axis=0)
    order = list(np.argsort(-mean_abs))
    importance = [{"feature": codec.features[j], "mean_abs_shap": round(float(mean_abs[j]), 6),
                   "mean_shap": round(float(signed[:, j].mean()), 6),
                   # direction: does a larger value (or a later code) raise the output?
                   "corr_with_value": _corr(x[:, j], signed[:, j])}
                  for j in order]

    dependence = []
    for j in order[:int(top_k)]:
        grid = _grid(codec, j, x)
        if not grid:
            continue
        means = []
        for v in grid:
            xv = x.copy()
            xv[:, j] = v
            out = f(xv)
            means.append(np.asarray(out).mean(axis=0).round(6).tolist())
        dependence.append({"feature": codec.features[j], "kind": "category" if codec.features[j] in codec.vocab
                           else "number",
                           "values": [codec.decode_value(j, v) for v in grid], "mean_output": means})

    output = "P(positive)" if problem_type == "binary" else (
        "class probabilities" if problem_type == "multiclass" else "prediction")
    return {
        "method": "SHAP (permutation, shap %s) through %s on raw features" % (shap.__version__,
                                                                           problem.SERVING_SIGNATURE),
        "output": output,
        "rows": int(len(x)),
        "background_rows": int(n_bg),
        **({"sample_note": note} if note else {}),
        "features": n_features,
        "importance": importance,
        "expected_output": np.asarray(base).mean(axis=0).round(6).tolist(),
        "additivity_max_error": round(additivity, 8),
        "partial_dependence": dependence,
        "model_calls_rows": int(calls["rows"]),
        "seconds": round(time.time() - start, 2),
    }


def _corr(a: np.ndarray, b: np.ndarray):
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return None
    return round(float(np.corrcoef(a[ok], b[ok])[0, 1]), 4)


def render_html(explanation: Dict[str, Any], title: str = "Model explanation") -> str:
    """A self-contained page (inline SVG) for the explanation artifact the KFP UI shows."""
    from kfx_components.common import plots

    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + plots._esc(title) + "</title>"
            f"<style>{plots.PAGE_CSS}</style></head><body><h1>{plots._esc(title)}</h1>"
            + section(explanation) + "</body></html>")


def section(e: Dict[str, Any]) -> str:
    """The explanation as an HTML section: importance bars and partial-dependence charts."""
    from kfx_components.common import plots

    if not e:
        return ""
    if e.get("error") or e.get("skipped"):
        return (f"<section id='explanation'><h2>Explanation</h2><p class='warnings'>"
                f"{plots._esc(e.get('error') or 'Explanation ' + e['skipped'])}</p></section>")
    bars = plots.hbars([(i["feature"], i["mean_abs_shap"]) for i in e["importance"]],
                       f"Mean |SHAP| on {e['output']} ({e['rows']} test rows)")
    charts = []
    for d in e.get("partial_dependence") or []:
        outs = d["mean_output"]
        if outs and isinstance(outs[0], list):
            per = list(zip(*outs))
        else:
            per = [outs]
        if d["kind"] == "number":
            series = {(f"class {k}" if len(per) > 1 else e["output"]): list(v) for k, v in enumerate(per)}
            charts.append(plots.lines(series, f"Partial dependence: {d['feature']}", x_label=d["feature"],
                                      xs={k: d["values"] for k in series}, y_label=e["output"], width=420))
        else:
            charts.append(plots.hbars([(str(v), (o if not isinstance(o, list) else max(o)))
                                       for v, o in zip(d["values"], outs)],
                                      f"Partial dependence: {d['feature']}", width=420,
                                      reference=(e["expected_output"] if not isinstance(e["expected_output"], list)
                                                 else None), reference_label="mean"))
    return ("<section id='explanation'><h2>Explanation (what drives the model)</h2>"
            f"<p class='muted'>{plots._esc(e['method'])}; {e['background_rows']} background rows; "
            f"local accuracy error {e['additivity_max_error']:.2g}; {e['seconds']:.1f} s."
            f"{' Sample: ' + plots._esc(e['sample_note']) + '.' if e.get('sample_note') else ''}</p>"
            f"<div class='charts'>{bars}</div><h3>Partial dependence of the top features</h3>"
            f"<div class='charts'>{''.join(charts)}</div></section>")
