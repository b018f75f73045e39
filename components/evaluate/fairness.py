"""Fairness Indicators in evaluate: error rates per slice, their gaps to the overall rate, an optional gate.

TFMA computes ``fairness_indicators.fairness_indicators_metrics.FairnessIndicators``
(binary classification) on every slicing spec of the evaluation: each slice
feature alone and each crossed pair. For each slice and each threshold in
``THRESHOLDS`` this module keeps the false positive, false negative and true
positive rates and their gap to the overall rate (slice - overall).

The gate (``max_gap`` > 0): the largest |gap| of the false positive or false
negative rate at ``GATE_THRESHOLD`` over the slices with at least
``MIN_SLICE_ROWS`` test rows must not exceed ``max_gap``. Smaller slices are
reported, not gated: their rates are too noisy to judge a model by.
"""
from __future__ import annotations

import html
import re
from typing import Any, Dict, List, Optional

THRESHOLDS = (0.25, 0.5, 0.75)
RATES = ("false_positive_rate", "false_negative_rate", "true_positive_rate")
GATED_RATES = ("false_positive_rate", "false_negative_rate")
GATE_THRESHOLD = 0.5
MIN_SLICE_ROWS = 30
MAX_SLICES_PER_SPEC = 25
_KEY = re.compile(r"^fairness_indicators_metrics/(" + "|".join(RATES) + r")@([0-9.]+)$")
SHORT = {"false_positive_rate": "FPR", "false_negative_rate": "FNR", "true_positive_rate": "TPR"}


def metrics_specs(model_name: str) -> list:
    """TFMA metrics specs of FairnessIndicators at ``THRESHOLDS`` for one model."""
    import tensorflow_model_analysis as tfma
    from fairness_indicators.fairness_indicators_metrics import FairnessIndicators

    return tfma.metrics.specs_from_metrics([FairnessIndicators(thresholds=list(THRESHOLDS))],
                                           model_names=[model_name])


def metric_name(tfma_name: str) -> Optional[str]:
    """'fairness_indicators_metrics/false_positive_rate@0.50' -> 'false_positive_rate@0.5'; else None."""
    m = _KEY.match(tfma_name)
    return f"{m.group(1)}@{float(m.group(2)):g}" if m else None


def spec_name(slice_name: str) -> str:
    """'a=1, b=x' -> 'a x b' (the slicing spec a slice belongs to)."""
    return " x ".join(part.split("=", 1)[0] for part in slice_name.split(", "))


def summarize(by_slice: Dict[str, Dict[str, Any]], max_gap: float = 0.0) -> Dict[str, Any]:
    """Rates and gaps per slice from ``{slice: {metric: value}}`` (TFMA candidate metrics); the gate."""
    overall_all = by_slice.get("Overall", {})
    overall = {f"{t:g}": {r: overall_all.get(f"{r}@{t:g}") for r in RATES} for t in THRESHOLDS}
    specs: Dict[str, List[Dict[str, Any]]] = {}
    for name, values in by_slice.items():
        if name == "Overall" or not any(f"{r}@{GATE_THRESHOLD:g}" in values for r in RATES):
            continue
        rates, gaps = {}, {}
        for t in THRESHOLDS:
            key = f"{t:g}"
            rates[key] = {r: values.get(f"{r}@{t:g}") for r in RATES}
            gaps[key] = {r: (None if rates[key][r] is None or overall[key][r] is None
                             else round(rates[key][r] - overall[key][r], 6)) for r in RATES}
        specs.setdefault(spec_name(name), []).append(
            {"slice": name, "example_count": int(values.get("example_count") or 0), "rates": rates, "gaps": gaps})

    largest: Dict[str, Dict[str, Any]] = {}
    worst: Optional[Dict[str, Any]] = None
    reported: Dict[str, List[Dict[str, Any]]] = {}
    for spec, slices in specs.items():
        slices.sort(key=lambda s: -s["example_count"])
        reported[spec] = slices[:MAX_SLICES_PER_SPEC]
        for s in slices:
            if s["example_count"] < MIN_SLICE_ROWS:
                continue
            for r in GATED_RATES:
                gap = s["gaps"][f"{GATE_THRESHOLD:g}"][r]
                if gap is None:
                    continue
                entry = {"spec": spec, "slice": s["slice"], "rate": r, "threshold": GATE_THRESHOLD,
                         "value": s["rates"][f"{GATE_THRESHOLD:g}"][r],
                         "overall": overall[f"{GATE_THRESHOLD:g}"][r], "gap": gap,
                         "example_count": s["example_count"]}
                if spec not in largest or abs(gap) > abs(largest[spec]["gap"]):
                    largest[spec] = entry
                if worst is None or abs(gap) > abs(worst["gap"]):
                    worst = entry
    reasons = []
    if max_gap and worst is not None and abs(worst["gap"]) > float(max_gap):
        reasons.append(f"fairness: {worst['rate'].replace('_', ' ')} at threshold {GATE_THRESHOLD:g} is "
                       f"{worst['value']:.4f} on slice {worst['slice']} ({worst['example_count']} test rows) vs "
                       f"{worst['overall']:.4f} overall: gap {worst['gap']:+.4f} exceeds max_fairness_gap "
                       f"{float(max_gap):g}")
    return {
        "thresholds": list(THRESHOLDS),
        "rates": list(RATES),
        "gate_threshold": GATE_THRESHOLD,
        "min_slice_rows": MIN_SLICE_ROWS,
        "max_gap": float(max_gap),
        "overall": overall,
        "slices": reported,
        "num_slices": {spec: len(slices) for spec, slices in specs.items()},
        "largest_gap_per_spec": largest,
        "largest_gap": worst,
        "reasons": reasons,
    }


def compact(summary: Dict[str, Any]) -> Dict[str, Any]:
    """What travels in artifact metadata (the model card): overall rates, the largest gaps, and
    per slice the rates and gaps at the gate threshold only."""
    if not summary:
        return {}
    t = f"{summary['gate_threshold']:g}"
    return {
        "thresholds": summary["thresholds"], "gate_threshold": summary["gate_threshold"],
        "min_slice_rows": summary["min_slice_rows"], "max_gap": summary["max_gap"],
        "overall": summary["overall"], "largest_gap": summary["largest_gap"],
        "largest_gap_per_spec": summary["largest_gap_per_spec"],
        "slices": {spec: [{"slice": s["slice"], "example_count": s["example_count"],
                           "rates": s["rates"][t], "gaps": s["gaps"][t]} for s in slices]
                   for spec, slices in summary["slices"].items()},
    }


def section(summary: Dict[str, Any]) -> str:
    """HTML: per spec, gap bars (FPR and FNR at the gate threshold) and a table at every threshold."""
    from kfx_components.common import plots

    if not summary or not summary.get("slices"):
        return ""
    t = f"{summary['gate_threshold']:g}"
    ov = summary["overall"][t]
    parts = ["<section id='fairness'><h2>Fairness Indicators</h2>",
             f"<p class='muted'>Rates at thresholds {', '.join(f'{x:g}' for x in summary['thresholds'])}; "
             f"gap = slice rate - overall rate. Overall at {t}: "
             + ", ".join(f"{SHORT[r]} {_f(ov[r])}" for r in RATES)
             + (f". Gate: largest |FPR/FNR gap| at {t} over slices of at least {summary['min_slice_rows']} "
                f"rows must be at most {summary['max_gap']:g}." if summary["max_gap"] else ". No gate (max_fairness_gap 0).")
             + "</p>"]
    worst = summary.get("largest_gap")
    if worst:
        parts.append(f"<p>Largest gap (slices of at least {summary['min_slice_rows']} rows): "
                     f"<b>{html.escape(SHORT[worst['rate']])} {worst['gap']:+.4f}</b> on "
                     f"{html.escape(worst['slice'])} ({worst['value']:.4f} vs {worst['overall']:.4f}, "
                     f"{worst['example_count']} rows).</p>")
    for spec, slices in summary["slices"].items():
        charts = []
        for r in GATED_RATES:
            charts.append(plots.hbars([(f"{s['slice']} (n={s['example_count']})", s["gaps"][t][r]) for s in slices],
                                      f"{SHORT[r]} gap at {t}: {spec}", signed=True, width=520))
        parts.append(f"<h3>{html.escape(spec)}</h3><div class='charts'>{''.join(charts)}</div>")
        header = "".join(f"<th>{SHORT[r]}@{x:g}</th>" for x in summary["thresholds"] for r in RATES)
        rows = "".join(
            f"<tr><td>{html.escape(s['slice'])}</td><td>{s['example_count']}</td>"
            + "".join(f"<td>{_f(s['rates'][f'{x:g}'][r])}</td>" for x in summary["thresholds"] for r in RATES)
            + "</tr>" for s in slices)
        total = summary.get("num_slices", {}).get(spec, len(slices))
        parts.append(f"<details open><summary>Rates per slice ({len(slices)} of {total} slices, largest first)"
                     f"</summary><div class='wide'><table><tr><th>slice</th><th>rows</th>{header}</tr>{rows}</table></div></details>")
    parts.append("</section>")
    return "".join(parts)


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
