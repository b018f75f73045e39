"""The temporal backtest: the candidate judged on the newest span, which it never trained on.

A random test split comes from the same spans the model trained on, so it overstates accuracy when the
world drifts. When a run trains on a window of spans, ingest writes the newest span's rows as a fourth
split, ``backtest``. ``judge`` scores the candidate (and the production model, when there is one) on
those rows and computes the primary metric exactly (``trust``'s rank AUC / accuracy / RMSE, not a
second TFMA pass) with a paired bootstrap interval for each model and for their difference. The gates
are the random split's: the value threshold and, with a baseline, candidate - baseline no worse than
``baseline_tolerance`` (on the point values, as TFMA's change threshold). ``bless_on`` says whether
they decide the blessing ("temporal") or are only reported ("random"). Like ``trust``, it reads at
most ``trust.MAX_ROWS`` rows (an even-stride sample); ``rows`` counts those it judged on.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List

import numpy as np

from kfx_components.common import io, problem
from kfx_formats import choices
from kfx_components.evaluate import trust

SPLIT = io.BACKTEST                # the examples split ingest writes (the newest span's rows)


def has_split(examples_dir: str) -> bool:
    return os.path.isfile(io.split_file(examples_dir, SPLIT))


def check_bless_on(bless_on: str, examples_dir: str) -> None:
    """ValueError in one line for an unknown ``bless_on`` or ``temporal`` with no backtest split."""
    choices.check("bless_on", bless_on, choices.BLESS_ON)
    if bless_on == "temporal" and not has_split(examples_dir):
        raise ValueError(f"bless_on='temporal' needs a {SPLIT} split (the newest span, not trained on): run with "
                         f"train_spans and a backtest; examples_dir {examples_dir!r} has none")


def judge(model_dir: str, baseline_model_dir: str, examples_dir: str, label_key: str, problem_type: str,
          num_classes: int, metric_threshold: float, baseline_tolerance: float, decides: bool) -> Dict[str, Any]:
    """The candidate (and the baseline) on the backtest split: values, 95% intervals, the verdict and its
    reasons (``decides``: whether they block the blessing)."""
    start = time.time()
    records, labels, _ = trust.read_split(examples_dir, SPLIT, label_key, io.read_columns(examples_dir))
    unlabelled = int(np.isnan(labels).sum())
    if not len(labels) or unlabelled:
        raise ValueError(f"the {SPLIT} split {io.split_file(examples_dir, SPLIT)!r} holds no examples"
                         if not len(labels) else f"{unlabelled} rows of the {SPLIT} split have no {label_key!r}")
    name = problem.primary_metric(problem_type)
    outputs = {who: trust.served_outputs(problem_type, trust.predict(trust.load_serving(path), records), num_classes)
               for who, path in (("model", model_dir), ("baseline", baseline_model_dir)) if path}
    samples = trust.bootstrap(problem_type, labels, outputs)   # paired: the same resamples for both models
    value = trust.metric(problem_type, labels, outputs["model"])
    facts: Dict[str, Any] = {
        "split": SPLIT, "rows": int(len(labels)), "metric": name, "value": value,
        "interval": trust.interval(samples["model"]), "confidence": trust.CONFIDENCE,
        "resamples": trust.BOOTSTRAP_RESAMPLES, "metric_threshold": float(metric_threshold),
        "baseline_tolerance": float(baseline_tolerance), "baseline": None, "difference": None,
    }
    if baseline_model_dir:
        base = trust.metric(problem_type, labels, outputs["baseline"])
        facts["baseline"] = {"value": base, "interval": trust.interval(samples["baseline"])}
        facts["difference"] = {"value": value - base,
                               "interval": trust.interval(samples["model"] - samples["baseline"])}
    facts["reasons"] = _reasons(facts, problem_type)
    facts["verdict"] = "fail" if facts["reasons"] else "pass"
    facts["decides"] = bool(decides)
    facts["seconds"] = round(time.time() - start, 2)
    return facts


def _reasons(facts: Dict[str, Any], problem_type: str) -> List[str]:
    """Why the backtest fails, one line each: the value threshold, then the change against the baseline."""
    name, value, threshold = facts["metric"], facts["value"], facts["metric_threshold"]
    where = f"on the {facts['rows']} {SPLIT} rows (the newest span)"
    higher = problem.higher_is_better(problem_type)
    found = []
    if threshold and not (value >= threshold if higher else value <= threshold):
        found.append(f"{SPLIT} {name} {where} = {value:.4f} (95% CI {trust.ci_text(facts['interval'])}), "
                     f"required {'>=' if higher else '<='} {threshold:g}")
    difference = facts["difference"]
    if difference is not None:
        allowed = -facts["baseline_tolerance"] if higher else facts["baseline_tolerance"]
        if not (difference["value"] >= allowed if higher else difference["value"] <= allowed):
            found.append(f"{SPLIT} {name} change vs baseline {where} = {difference['value']:+.4f} "
                         f"(95% CI {trust.ci_text(difference['interval'], signed=True)}; baseline "
                         f"{facts['baseline']['value']:.4f}), required {'>=' if higher else '<='} {allowed:+g}")
    return found

