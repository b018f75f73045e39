"""The model families tune compared, as the card and the evaluate report show them.

``summary`` is what travels: tune's facts reduced to the chosen family, why, the
metric, and each family's best eval metric, trials and seconds. distributed_train
puts it on its model, distill carries it on, and evaluate and push render it.
"""
from __future__ import annotations

from typing import Any, Mapping

from kfx_components.common import plots

HEADER = ("family", "eval metric", "trials", "seconds", "chosen")


def summary(tuned: Mapping[str, Any]) -> dict:
    """{"chosen", "reason", "metric", "families"} from tune's facts (the hyperparameters' metadata)."""
    return {"chosen": tuned.get("family", "network"), "reason": tuned.get("family_reason", ""),
            "metric": tuned.get("metric", ""), "families": dict(tuned.get("families") or {})}


def table(family: Mapping[str, Any]) -> tuple:
    """(header, rows): each family tune tried, its best eval metric, trials and time."""
    header = list(HEADER)
    header[1] = f"eval {family.get('metric') or 'metric'}"
    rows = [[name, f.get("eval_metric"), f.get("trials"), None if f.get("seconds") is None else f"{f['seconds']:.1f}",
             "yes" if name == family.get("chosen") else ""] for name, f in (family.get("families") or {}).items()]
    return header, rows


def chart(family: Mapping[str, Any]) -> str:
    """Bars of each family's best eval metric ("" with fewer than two families)."""
    header, rows = table(family)
    scores = [(r[0], r[1]) for r in rows if isinstance(r[1], (int, float))]
    return plots.hbars(scores, f"{header[1]} of each family's best trial", width=420) if len(scores) > 1 else ""
