"""The component's outputs derived from ``run``'s facts, so the component body only reads inputs,
calls ``run`` and writes outputs: the verdict file push reads, the artifacts' metadata, the Metrics
scalars, the confusion matrix's class names; and the training curves a Model artifact carries."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

from kfx_components.evaluate import fairness


def training_histories(model_metadata: Optional[dict]) -> Dict[str, dict]:
    """The training curves a Model artifact's metadata carries, named by the fit that drew them:
    distill's student (and its teacher), or distributed_train's model."""
    meta = dict(model_metadata or {})
    histories = {}
    if meta.get("teacher_history"):
        histories["distributed_train (teacher)"] = meta["teacher_history"]
    if meta.get("history"):
        histories["distill (student)"] = meta["history"]
    elif meta.get("curves"):
        histories["distributed_train"] = {k: meta[k] for k in ("epochs_run", "best_epoch", "curves") if k in meta}
    return histories


def write_blessing(blessing_dir: str, facts: Dict[str, Any]) -> None:
    """The verdict file push reads: ``BLESSED`` or ``NOT_BLESSED``, holding the reasons one a line."""
    os.makedirs(blessing_dir, exist_ok=True)
    with open(os.path.join(blessing_dir, "BLESSED" if facts["blessed"] else "NOT_BLESSED"), "w") as f:
        f.write("\n".join(facts["reasons"]) + ("\n" if facts["reasons"] else ""))


def verdict_metadata(facts: Dict[str, Any], baseline_uri: str) -> Dict[str, Any]:
    """The blessing artifact's metadata: the verdict and what it rests on (push and the model card read it)."""
    return {
        "blessed": bool(facts["blessed"]),
        "reasons": facts["reasons"],
        "warnings": facts["warnings"],
        "trust": facts["trust"],
        "split": facts["split"],
        "bless_on": facts["bless_on"],
        "baseline_used": facts["baseline_used"],
        "baseline_uri": baseline_uri,   # lineage: which model judged this one
        "primary_metric": facts["primary_metric"],
        "slice_features": facts["slice_features"],
        "crossed_slices": facts["crossed_slices"],
        "overall": facts["overall"],
        "baseline_overall": facts.get("baseline_overall", {}),   # TFMA's, on the test split
        "per_slice": facts["per_slice"],
        "fairness": fairness.compact(facts["fairness"]),
        "explanation": facts["explanation"],
        # the temporal backtest (``backtest.judge``), only when the examples hold a backtest split
        **({"backtest": facts["backtest"]} if facts["backtest"] else {}),
    }


def evaluation_metadata(facts: Dict[str, Any], baseline_uri: str) -> Dict[str, Any]:
    """The evaluation artifact's metadata: the verdict's, plus sizes and timings."""
    return {**verdict_metadata(facts, baseline_uri), "problem_type": facts["problem_type"],
            "num_slices": facts["num_slices"], "seconds": facts["seconds"], "tfma_seconds": facts["tfma_seconds"]}


def explanation_metadata(facts: Dict[str, Any]) -> Dict[str, Any]:
    return {k: facts["explanation"][k] for k in ("method", "rows", "seconds", "sample_note", "skipped")
            if k in facts["explanation"]}


def logged_metrics(facts: Dict[str, Any]) -> Dict[str, float]:
    """The Metrics artifact's scalars: the overall metrics, then the primary metric's confidence
    interval, the trivial predictor's and the references', then the backtest's (``backtest_auc``,
    ``_ci_low``, ``_ci_high``, ``_baseline``, ``_change``). Undefined values (None) stay out."""
    trusted, primary = facts["trust"], facts["primary_metric"]
    out = {name: float(value) for name, value in facts["overall"].items() if value is not None}
    for key, value in (("ci_low", trusted["model"]["ci"][0]), ("ci_high", trusted["model"]["ci"][1]),
                       ("trivial", trusted["trivial"]["metric"]),
                       ("reference_linear", trusted["references"]["linear"]["metric"]),
                       ("reference_boosting", trusted["references"]["boosting"]["metric"])):
        if value is not None:
            out[f"{primary}_{key}"] = float(value)
    temporal = facts["backtest"]
    if temporal:
        base, diff = temporal["baseline"] or {}, temporal["difference"] or {}
        for key, value in (("", temporal["value"]), ("_ci_low", temporal["interval"][0]),
                           ("_ci_high", temporal["interval"][1]), ("_baseline", base.get("value")),
                           ("_change", diff.get("value"))):
            if value is not None:
                out[f"backtest_{primary}{key}"] = float(value)
    return out


def confusion_categories(matrix: List[List[float]], label_vocabulary: Optional[Sequence]) -> List[str]:
    """The confusion matrix's class names: the label vocabulary when it fits the matrix, else indices."""
    vocabulary = [str(v) for v in (label_vocabulary or [])]
    return vocabulary if len(vocabulary) == len(matrix) else [str(i) for i in range(len(matrix))]
