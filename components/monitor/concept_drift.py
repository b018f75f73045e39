"""Concept drift: the logged predictions against late labels, scored with kfx_formats.payload_log's
online metric (the problem's primary metric with a 95% bootstrap interval) and compared with the
model's test metric from its model card. Statistics of the inputs alone cannot see a change in how
the label depends on them; this can.

Concept drift when the online metric is worse than the test metric by more than ``tolerance``
(relative) across its whole interval, and only with at least ``min_labels`` labelled predictions:
a handful of labels never triggers it.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

from kfx_components.common import problem
from kfx_formats import payload_log

CONCEPT_DRIFT = "concept drift"


def reference_metric(card: dict) -> Tuple[Optional[float], str]:
    """The model's test metric from its card: trust.model.metric, else metrics.overall[<metric>]."""
    name = problem.PRIMARY_METRIC.get(card.get("problem_type", ""), "")
    trust = card.get("trust") or {}
    value = (trust.get("model") or {}).get("metric")
    if value is not None:
        return float(value), (f"model_card.json trust.model.metric ({trust.get('metric', name)} on "
                              f"{trust.get('test_rows', '?')} test rows)")
    overall = (card.get("metrics") or {}).get("overall") or {}
    for key in (name, name.upper(), f"{name}_overall"):
        if isinstance(overall.get(key), (int, float)):
            return float(overall[key]), f"model_card.json metrics.overall.{key}"
    return None, ""


def judge(predictions: Mapping[payload_log.Key, Any], labels: Mapping[payload_log.Key, str], card: dict,
          labels_path: str, tolerance: float, min_labels: int = payload_log.MIN_LABELS) -> Dict[str, Any]:
    """The online metric against the card's test metric: payload_log.online_metric's answer, with
    ``concept_drift`` (its ``worse``) and ``reference_source``."""
    ptype = card.get("problem_type", "")
    if ptype not in problem.PROBLEM_TYPES:
        raise ValueError(f"labels {labels_path}: the model card has no problem_type, so the online metric "
                         "cannot be chosen; push the model again with its card")
    reference, source = reference_metric(card)
    online = payload_log.online_metric(predictions, labels, ptype, card.get("label_vocabulary") or [],
                                       reference=reference, tolerance=tolerance, min_labels=min_labels,
                                       where=f"labels {labels_path}")
    if reference is None and online.get("note") == payload_log.NO_REFERENCE:
        online["note"] = "the model card holds no test metric (trust.model.metric or metrics.overall)"
    online["concept_drift"] = online.pop("worse")
    return {**online, "reference_source": source}


def reason(online: dict) -> str:
    """The reason line of a concept drift."""
    return (f"{CONCEPT_DRIFT}: online {online['metric']} {online['value']:.4f} (95% CI {online['ci'][0]:.4f}-"
            f"{online['ci'][1]:.4f}) on {online['labelled']} labelled predictions vs {online['reference']:.4f} "
            f"on the test split (tolerance {online['tolerance']:.0%})")
