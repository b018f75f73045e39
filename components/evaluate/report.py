"""The pages evaluate writes: one self-contained HTML report (inline CSS and SVG charts: the verdict,
the comparison with simple models, the temporal backtest, overall metrics, ROC and confusion matrix, per-slice bars,
fairness gaps, the explanation, training curves) and the explanation page."""
from __future__ import annotations

import html
import os
from typing import Any, Dict, List

from kfx_components.common import families, plots
from kfx_components.evaluate import explain, fairness


def write_pages(facts: Dict[str, Any], report_path: str, explanation_path: str) -> None:
    """The report at ``report_path``; the explanation page at ``explanation_path`` unless it is ""."""
    _write(report_path, render_report(facts))
    if explanation_path:
        explanation = facts["explanation"]
        _write(explanation_path, explain.render_html(explanation) if explanation else _no_explanation_page())


def _write(path: str, page: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)


def _no_explanation_page() -> str:
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Model explanation</title></head>"
            "<body><h1>Model explanation</h1><p>Not computed (explain_rows = 0).</p></body></html>")


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e6 else f"{v:.4g}"
    return html.escape(str(v))


def _table(header: List[str], rows: List[List[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(x)}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _roc_svg(roc: Dict[str, List[float]]) -> str:
    if not roc.get("fpr"):
        return ""
    size, pad = 260, 30
    pts = sorted(zip(roc["fpr"], roc["tpr"]))
    path = " ".join(f"{pad + x * size:.1f},{pad + (1 - y) * size:.1f}" for x, y in pts)
    return (f'<svg width="{size + 2 * pad}" height="{size + 2 * pad}" role="img" '
            f'aria-label="ROC curve">'
            f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" stroke="#999"/>'
            f'<line x1="{pad}" y1="{pad + size}" x2="{pad + size}" y2="{pad}" stroke="#ccc" '
            f'stroke-dasharray="4"/>'
            f'<polyline points="{path}" fill="none" stroke="#1565c0" stroke-width="2"/>'
            f'<text x="{pad + size / 2}" y="{size + 2 * pad - 6}" font-size="12" '
            f'text-anchor="middle">false positive rate</text>'
            f'<text x="12" y="{pad + size / 2}" font-size="12" text-anchor="middle" '
            f'transform="rotate(-90 12 {pad + size / 2})">true positive rate</text></svg>')


def _ci_text(ci) -> str:
    return "n/a" if not ci or ci[0] is None else f"{ci[0]:.4f} - {ci[1]:.4f}"


def _trust_section(t: Dict[str, Any]) -> str:
    """The model beside the trivial predictor and the classical references, with CIs."""
    name = t["metric"]
    refs = t["references"]
    rows = [["this model", t["model"]["metric"], _ci_text(t["model"]["ci"])],
            [f"trivial: {t['trivial']['predictor']}", t["trivial"]["metric"], _ci_text(t["trivial"]["ci"])],
            [f"reference: {refs['linear']['estimator']}", refs["linear"]["metric"], _ci_text(refs["linear"]["ci"])],
            [f"reference: {refs['boosting']['estimator']}", refs["boosting"]["metric"],
             _ci_text(refs["boosting"]["ci"])]]
    out = [f"<h2>Against simple models ({t['test_rows']} test rows)</h2>",
           _table(["predictor", name, f"{t['confidence']:.0%} CI (bootstrap, {t['resamples']} resamples)"], rows),
           f"<p class='muted'>How much better than the trivial predictor: {_ci_text(t['vs_trivial_ci'])} "
           f"(must be above 0). Against the linear reference: {_ci_text(t['vs_reference_ci'])}"
           + (f"; against the boosting reference: {_ci_text(t['vs_boosting_ci'])}" if t.get("vs_boosting_ci") else "")
           + (f"; ratio {t['vs_reference_ratio']:.3f}" if t.get("vs_reference_ratio") is not None else "")
           + (f" (min_vs_reference {t['min_vs_reference']:g})" if t["min_vs_reference"] else "")
           + ".</p>"]
    if t["warnings"]:
        out.append("<ul class='warnings'>" + "".join(f"<li>warning: {html.escape(w)}</li>"
                                                    for w in t["warnings"]) + "</ul>")
    return "\n".join(out)


def _backtest_section(b: Dict[str, Any], bless_on: str) -> str:
    """The candidate (and the baseline) on the newest span, which it never trained on."""
    if not b:
        return ("<h2>Temporal backtest</h2><p class='muted'>None: the run trained on one span "
                "(train_spans with a backtest judges the model on the newest span too).</p>")
    rows = [["candidate", b["value"], _ci_text(b["interval"])]]
    if b["baseline"]:
        rows += [["baseline (production)", b["baseline"]["value"], _ci_text(b["baseline"]["interval"])],
                 ["change (candidate - baseline)", b["difference"]["value"], _ci_text(b["difference"]["interval"])]]
    verdict = "passes" if b["verdict"] == "pass" else "fails"
    role = ("decides the blessing too (bless_on=temporal)" if b["decides"]
            else "is reported, not gated (bless_on=random)")
    return "\n".join([
        f"<h2>Temporal backtest ({b['rows']} rows of the newest span, never trained on)</h2>",
        _table(["model", b["metric"], f"{b['confidence']:.0%} CI (bootstrap, {b['resamples']} resamples)"], rows),
        f"<p>The backtest <b>{verdict}</b> and {html.escape(role)}.</p>",
        ("<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in b["reasons"]) + "</ul>") if b["reasons"] else "",
        f"<p class='muted'>Blessed on: {html.escape(bless_on)}.</p>"])


def slice_sections(facts: Dict[str, Any]) -> str:
    """Per slicing spec: the primary metric per slice as bars (overall as a dashed line) and a table."""
    per_slice = facts.get("per_slice") or {}
    if not per_slice:
        return ""
    primary = facts["primary_metric"]
    overall = facts["overall"].get(primary)
    groups: Dict[str, List[str]] = {}
    for name in per_slice:
        groups.setdefault(fairness.spec_name(name), []).append(name)
    parts = []
    for spec, names in groups.items():
        chart = plots.hbars([(f"{n} (n={per_slice[n].get('example_count', '?')})", per_slice[n].get(primary))
                             for n in names], f"{primary} per slice: {spec}", reference=overall,
                            reference_label="overall", width=640)
        cols = sorted({k for n in names for k in per_slice[n]})
        total = (facts.get("slices_per_spec") or {}).get(spec, len(names))
        parts.append(f"<section class='slices'><h2>Per slice: {html.escape(spec)}</h2>"
                     f"<div class='charts'>{chart}</div>"
                     + _table(["slice"] + cols, [[n] + [per_slice[n].get(c, "") for c in cols] for n in names])
                     + (f"<p class='muted'>{len(names)} of {total} slices shown (the largest).</p>"
                        if total > len(names) else "") + "</section>")
    return "".join(parts)


def families_section(family: Dict[str, Any]) -> str:
    """The model families tune compared on eval, and the one chosen."""
    if not family.get("families"):
        return ""
    header, rows = families.table(family)
    chart = families.chart(family)
    return ("<section id='families'><h2>Model family (chosen on eval)</h2>"
            f"<p>{html.escape(str(family.get('reason', '')))}</p>"
            + (f"<div class='charts'>{chart}</div>" if chart else "") + _table(header, rows) + "</section>")


def curves_section(histories: Dict[str, dict]) -> str:
    charts = plots.training_curves(histories or {})
    if not charts:
        return ""
    return ("<section id='training'><h2>Training curves</h2><div class='charts'>" + "".join(charts)
            + "</div></section>")


def render_report(facts: Dict[str, Any]) -> str:
    """One self-contained HTML page (inline CSS and SVG, no scripts, no network fetches)."""
    blessed = facts["blessed"]
    verdict = ("<span class='verdict blessed'>BLESSED</span>" if blessed
               else "<span class='verdict not-blessed'>NOT BLESSED</span>")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>kfx evaluation</title>"
             f"<style>{plots.PAGE_CSS}</style></head><body>",
             "<h1>Model evaluation (TFMA)</h1>",
             f"<section id='verdict'><h2>Verdict</h2><p>{verdict}</p>"]
    if facts["reasons"]:
        parts.append("<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in facts["reasons"])
                     + "</ul>")
    else:
        parts.append("<p>All thresholds passed.</p>")
    thresholds = ["example_count >= 1 (always)"]
    if facts["metric_threshold"]:
        op = ">=" if facts["primary_metric"] != "rmse" else "<="
        thresholds.append(f"{facts['primary_metric']} {op} {facts['metric_threshold']:g}")
    if facts["baseline_used"]:
        thresholds.append(f"{facts['primary_metric']} may degrade by at most "
                          f"{facts['baseline_tolerance']:g} vs the baseline")
    if facts["bless_on"] == "temporal":
        thresholds.append("the same on the temporal backtest (bless_on=temporal)")
    if facts.get("max_fairness_gap"):
        thresholds.append(f"largest FPR/FNR gap to overall <= {facts['max_fairness_gap']:g}")
    parts.append("<p class='muted'>Thresholds: " + html.escape("; ".join(thresholds))
                 + f". Problem type: {html.escape(facts['problem_type'])}.</p></section>")
    parts.append("<section id='trust'>" + _trust_section(facts["trust"]) + "</section>")
    parts.append("<section id='backtest'>" + _backtest_section(facts["backtest"], facts["bless_on"]) + "</section>")

    parts.append("<section id='overall'><h2>Overall metrics</h2>")
    names = sorted(facts["overall"])
    if facts["baseline_used"]:
        base, diff = facts.get("baseline_overall", {}), facts.get("diff_overall", {})
        parts.append(_table(["metric", "candidate", "baseline", "change"],
                            [[n, facts["overall"].get(n, ""), base.get(n, ""), diff.get(n, "")]
                             for n in names]))
    else:
        parts.append(_table(["metric", "candidate"], [[n, facts["overall"][n]] for n in names]))
        parts.append("<p class='muted'>No baseline: first version in the registry.</p>")
    parts.append("</section>")
    if facts.get("roc") or facts.get("confusion_matrix"):
        parts.append("<section id='roc'><div class='charts'>")
        if facts.get("roc"):
            parts.append("<div><h2>ROC curve</h2>" + _roc_svg(facts["roc"]) + "</div>")
        if facts.get("confusion_matrix"):
            cm = facts["confusion_matrix"]
            parts.append("<div><h2>Confusion matrix</h2><p class='muted'>rows: actual, columns: predicted"
                         + (" (threshold 0.5)" if facts["problem_type"] == "binary" else "") + "</p>"
                         + _table([""] + [str(i) for i in range(len(cm))],
                                  [[str(i)] + row for i, row in enumerate(cm)]) + "</div>")
        parts.append("</div></section>")
    parts.append(slice_sections(facts))
    parts.append(fairness.section(facts.get("fairness") or {}))
    parts.append(explain.section(facts.get("explanation") or {}))
    parts.append(families_section(facts.get("model_families") or {}))
    parts.append(curves_section(facts.get("training_history") or {}))
    parts.append(f"<p class='muted'>Evaluated in {facts['seconds']:.1f} s "
                 f"(TFMA {facts['tfma_seconds']:.1f} s).</p></body></html>")
    return "\n".join(p for p in parts if p)
