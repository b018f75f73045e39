"""The model card rendered as one self-contained HTML page (inline CSS and SVG; no scripts, no network).

Same facts as the Markdown card (``executor.render_card``), drawn where a
chart says more than a table: per-slice metrics and fairness gaps as bars,
the explanation (mean |SHAP| bars, partial dependence), training curves,
teacher vs student, and the quantized variants' size / latency / metric.
No TensorFlow: the push image carries none.
"""
from __future__ import annotations

import html
import json
import re
from typing import Any, Dict, List, Mapping

from kfx_components.common import families, plots


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e6 else f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (dict, list)):
        return _e(json.dumps(v, sort_keys=True))
    return _e(v)


def _table(header: List[str], rows: List[List[Any]], raw_first: bool = False) -> str:
    h = "".join(f"<th>{_e(x)}</th>" for x in header)
    body = "".join("<tr>" + "".join(
        f"<td>{x if (raw_first and i == 0) else _fmt(x)}</td>" for i, x in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _kv(rows: Mapping[str, Any], header=("name", "value")) -> str:
    if not rows:
        return "<p class='muted'>none recorded</p>"
    return _table(list(header), [[k, v] for k, v in rows.items()])


def _section(sid: str, title: str, body: str) -> str:
    return f"<section id='{sid}'><h2>{_e(title)}</h2>{body}</section>" if body else ""


def _evaluation(card: Mapping[str, Any]) -> str:
    blessing = card.get("blessing") or {}
    blessed = blessing.get("blessed", True)
    parts = [f"<p><span class='verdict {'blessed' if blessed else 'not-blessed'}'>"
             f"{'BLESSED' if blessed else 'NOT BLESSED'}</span> "
             + ("(compared with the baseline) " if blessing.get("baseline_used") else "")
             + "&mdash; every figure is on the test split, which nothing trained or tuned on.</p>"]
    warnings = card.get("warnings") or []
    if warnings:
        parts.append("<ul class='warnings'>" + "".join(f"<li>warning: {_e(w)}</li>" for w in warnings) + "</ul>")
    trust = card.get("trust") or {}
    if trust:
        rows = [["this model", trust.get("model") or {}],
                [f"trivial: {(trust.get('trivial') or {}).get('predictor', '')}", trust.get("trivial") or {}]]
        rows += [[f"reference: {r.get('estimator', k)}", r] for k, r in (trust.get("references") or {}).items()]
        table = []
        for label, r in rows:
            ci = r.get("ci") or [None, None]
            table.append([label, r.get("metric"), "n/a" if ci[0] is None else f"{ci[0]:.4f} - {ci[1]:.4f}"])
        parts.append(f"<h3>Against simple models ({_e(trust.get('test_rows'))} test rows)</h3>"
                     + _table(["predictor", str(trust.get("metric", "")), "95% CI"], table))
        if trust.get("vs_boosting_ci"):
            parts.append(f"<p>{_e(boosting_gap_line(trust))}</p>")
    header, rows = split_table(card)
    if rows:
        parts.append(f"<h3>Random test split and temporal backtest (blessed on: {_e(card.get('bless_on'))})</h3>"
                     + _table(header, rows))
    overall = (card.get("metrics") or {}).get("overall") or {}
    parts.append("<h3>Overall</h3>" + _kv(overall, ("metric", "value")))
    return "".join(parts)


def _spec(slice_name: str) -> str:
    return " x ".join(part.split("=", 1)[0] for part in slice_name.split(", "))


def _slices(card: Mapping[str, Any]) -> str:
    metrics = card.get("metrics") or {}
    per_slice = metrics.get("per_slice") or {}
    if not per_slice:
        return ""
    primary = (card.get("trust") or {}).get("metric") or next(
        (k for k in ("auc", "accuracy", "rmse") if any(k in m for m in per_slice.values())), "")
    overall = (metrics.get("overall") or {}).get(primary)
    groups: Dict[str, List[str]] = {}
    for name in per_slice:
        groups.setdefault(_spec(name), []).append(name)
    charts = [plots.hbars([(f"{n} (n={per_slice[n].get('example_count', '?')})", per_slice[n].get(primary))
                           for n in names], f"{primary} per slice: {spec}", reference=overall,
                          reference_label="overall", width=560) for spec, names in groups.items()]
    return "<div class='charts'>" + "".join(charts) + "</div>"


def _fairness(card: Mapping[str, Any]) -> str:
    f = card.get("fairness") or {}
    if not f.get("slices"):
        return ""
    t = f"{f.get('gate_threshold', 0.5):g}"
    ov = (f.get("overall") or {}).get(t) or {}
    parts = [f"<p class='muted'>Fairness Indicators at thresholds "
             f"{', '.join(f'{x:g}' for x in f.get('thresholds', []))}; bars: gap to the overall rate at {t} "
             f"(overall FPR {_fmt(ov.get('false_positive_rate'))}, FNR {_fmt(ov.get('false_negative_rate'))}, "
             f"TPR {_fmt(ov.get('true_positive_rate'))})."
             + (f" Gate: largest gap at most {f['max_gap']:g}." if f.get("max_gap") else " No gate.") + "</p>"]
    worst = f.get("largest_gap")
    if worst:
        parts.append(f"<p>Largest gap (slices of at least {_e(f.get('min_slice_rows'))} rows): "
                     f"<b>{_e(worst['rate'].replace('_', ' '))} {worst['gap']:+.4f}</b> on {_e(worst['slice'])} "
                     f"({worst['value']:.4f} vs {worst['overall']:.4f}, {worst['example_count']} rows).</p>")
    charts = []
    for spec, slices in f["slices"].items():
        for rate, short in (("false_positive_rate", "FPR"), ("false_negative_rate", "FNR")):
            charts.append(plots.hbars([(f"{s['slice']} (n={s['example_count']})", (s.get("gaps") or {}).get(rate))
                                       for s in slices], f"{short} gap at {t}: {spec}", signed=True, width=520))
    parts.append("<div class='charts'>" + "".join(charts) + "</div>")
    return "".join(parts)


def _explanation(card: Mapping[str, Any]) -> str:
    e = card.get("explanation") or {}
    if e.get("skipped"):
        return f"<p class='muted'>Explanation {_e(e['skipped'])}.</p>"
    if not e.get("importance"):
        return ""
    charts = [plots.hbars([(i["feature"], i["mean_abs_shap"]) for i in e["importance"]],
                          f"Mean |SHAP| on {e.get('output')} ({e.get('rows')} test rows)", width=520)]
    for d in e.get("partial_dependence") or []:
        outs = [o if not isinstance(o, list) else max(o) for o in d["mean_output"]]
        if d.get("kind") == "number":
            charts.append(plots.lines({str(e.get("output")): outs}, f"Partial dependence: {d['feature']}",
                                      x_label=d["feature"], xs={str(e.get("output")): d["values"]}, width=420))
        else:
            charts.append(plots.hbars([(str(v), o) for v, o in zip(d["values"], outs)],
                                      f"Partial dependence: {d['feature']}", width=420))
    sample = f" Sample: {_e(e['sample_note'])}." if e.get("sample_note") else ""
    return (f"<p class='muted'>{_e(e.get('method', ''))}; local accuracy error "
            f"{e.get('additivity_max_error', 0):.2g}.{sample}</p><div class='charts'>{''.join(charts)}</div>")


def _training(card: Mapping[str, Any]) -> str:
    t = card.get("training") or {}
    which = card.get("which_model") or {}
    parts = []
    if which:
        parts.append(f"<p>This is the <b>{_e(which.get('passed_on', 'student'))}</b>"
                     + (" (the distilled student)." if which.get("passed_on") == "student"
                        else f": {_e(which.get('reason', ''))}") + "</p>")
    if which.get("teacher_strategy"):
        parts.append(f"<p>distributed-train trained it with: {_e(which['teacher_strategy'])}.</p>")
    charts = []
    if t.get("teacher_params") and t.get("student_params"):
        charts.append(plots.hbars([("teacher", t["teacher_params"]), ("student", t["student_params"])],
                                  f"Parameters (student {t['student_params'] / t['teacher_params']:.2f}x the teacher)",
                                  width=420, value_format=lambda v: f"{v:,.0f}"))
    if t.get("teacher_metric") is not None and t.get("student_metric") is not None:
        charts.append(plots.hbars([("teacher", t["teacher_metric"]), ("student", t["student_metric"])],
                                  "Eval metric, teacher vs student", width=420))
    charts += plots.training_curves(card.get("training_history") or {})
    if charts:
        parts.append("<div class='charts'>" + "".join(c for c in charts if c) + "</div>")
    if t:
        parts.append(_kv(t))
    return "".join(parts)


def edge_line(card: Mapping[str, Any]) -> str:
    """Which variant suits the edge, and what it loses against the model pushed."""
    which = card.get("which_model") or {}
    t = card.get("training") or {}
    rec = card.get("quantized_recommended")
    if which.get("teacher_family") != "gradient_boosted_trees":
        return ""
    if which.get("passed_on") == "student":
        return ("The pushed model is the network student, which beat the forest on eval; it is its own edge "
                "variant (TFLite below).")
    if which.get("edge_model") != "student":
        return f"No edge variant: {which.get('edge_reason', '')}"
    loses = ""
    if t.get("student_metric") is not None and t.get("teacher_metric") is not None:
        loses = (f"; its eval metric is {t['student_metric']:.4f} against the forest's {t['teacher_metric']:.4f} "
                 f"({t['student_metric'] - t['teacher_metric']:+.4f})")
    stood_for = (card.get("quantized_reference") or {}).get("stands_in_for") or {}
    got = ((card.get("quantized") or {}).get(rec) or {}).get("metric")
    variant = (f" Its TFLite variant `{rec}` (below) is what a device runs"
               + (f": test {got:.4f} against the forest's {stood_for['metric']:.4f} on the same rows "
                  f"({got - stood_for['metric']:+.4f})" if got is not None and stood_for.get("metric") is not None
                  else "") + "."
               if rec else " None of its TFLite variants passed the quantize gate." if card.get("quantized_rejected")
               else "")
    return (f"The pushed model is the forest; for the edge, its distilled student (a network of "
            f"{t.get('student_params', 0):,} parameters){loses}.{variant} {which.get('edge_reason', '')}")


def _families(card: Mapping[str, Any]) -> str:
    family = card.get("model_family") or {}
    if not family.get("families"):
        return ""
    chart = families.chart(family)
    edge = edge_line(card)
    return (f"<p>{_e(family.get('reason', ''))}</p>" + (f"<div class='charts'>{chart}</div>" if chart else "")
            + _table(*families.table(family)) + (f"<p>{_code_spans(edge)}</p>" if edge else ""))


def _code_spans(text: str) -> str:
    """Escaped text with its `backticked` parts as <code> (the markdown card keeps the backticks)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text))


def _quantized(card: Mapping[str, Any]) -> str:
    q = card.get("quantized") or {}
    if not q:
        return f"<p class='muted'>{_e(card.get('quantized_none') or 'none recorded')}</p>"
    rec = card.get("quantized_recommended", "")
    parts = []
    if card.get("quantized_recommendation"):
        parts.append(f"<p><b>Recommended:</b> {_e(card['quantized_recommendation'])}</p>")
    points, rows = [], []
    for name, v in q.items():
        if not isinstance(v, Mapping):
            continue
        lat = v.get("latency") or {}
        single = (lat.get("single_invoke") or {}).get("median_ms")
        batch = (lat.get("batch_invoke") or {}).get("median_ms")
        if single is not None and v.get("size_bytes"):
            points.append((name, v["size_bytes"] / 1024, single * 1000, v.get("metric")))
        rows.append([f"<b>{_e(name)}</b> (recommended)" if name == rec else _e(name), v.get("size_bytes"),
                     v.get("gzip_bytes"), v.get("weight_bytes"),
                     None if single is None else round(single * 1000, 2),
                     None if batch is None else round(batch, 4), v.get("metric"), v.get("metric_delta")])
    chart = plots.scatter(points, "TFLite variants: size vs single-example latency (label: test metric)",
                          "file size (KiB)", "latency (µs, one thread)", size_label="metric")
    parts.append(f"<div class='charts'>{chart}</div>")
    parts.append(_table(["variant", "bytes", "gzipped", "weight bytes", "single (µs)", "batch (ms)", "metric",
                         "change"], rows, raw_first=True))
    lat = (card.get("quantized_reference") or {}).get("latency") or {}
    if lat:
        parts.append("<p class='muted'>SavedModel: " + "; ".join(
            f"{_e(k.replace('_', ' '))} {v['median_ms']:.3f} ms" for k, v in lat.items()
            if isinstance(v, Mapping) and "median_ms" in v) + " (end to end: parsing + TFT + model).</p>")
    notes = card.get("quantized_notes") or {}
    rejected = card.get("quantized_rejected") or {}
    items = [f"<li>{_e(k)}: {_e(n)}</li>" for k, n in notes.items()]
    items += [f"<li>not published: {_e(k)}: {_e(r)}</li>" for k, r in rejected.items()]
    if items:
        parts.append("<ul>" + "".join(items) + "</ul>")
    return "".join(parts)


INFRA_FACTS = ("runtime", "load_seconds", "latency_ms", "requests", "max_difference", "tolerance", "reason")


def infra_rows(infra: Mapping[str, Any]) -> Dict[str, Any]:
    """What the card shows of infra_validate's facts (the Markdown card too)."""
    if not infra:
        return {}
    latency = infra.get("latency_ms") or {}
    return {"runtime": infra.get("runtime"), "load time (s)": infra.get("load_seconds"),
            "p50 latency (ms)": latency.get("p50"), "p99 latency (ms)": latency.get("p99"),
            "requests": infra.get("requests"), "max |served - in-process|": infra.get("max_difference"),
            "tolerance": infra.get("tolerance")}


CONTRACT_HEADER = ["field", "type", "required", "categories"]


def contract_rows(contract: Mapping[str, Any]) -> List[List[Any]]:
    """The card's request-contract table (the Markdown card too) of a contract.json document: per field
    its type, whether clients must send a value (else the model has a default; a field the model does
    not read is refused) and how many categories its schema knows."""
    return [[f["name"], f["type"] + (f"[{','.join(map(str, f['shape']))}]" if f.get("shape") else ""),
             ("yes" if f["required"] else "no (has a default)") if f.get("used", True) else "not read (refused)",
             (f"{len(f['categories'])}+ (capped)" if f.get("categories_capped") else len(f["categories"]))
             if f.get("categories") else ""]
            for f in contract.get("fields", [])]


def _ci_text(ci) -> str:
    return "n/a" if not ci or ci[0] is None else f"{ci[0]:.4f} - {ci[1]:.4f}"


def split_table(card: Mapping[str, Any]) -> tuple:
    """(header, rows): the random test split beside the temporal backtest (the newest span, never trained
    on), each with rows, the primary metric and its 95% CI, the baseline's and whether it decided the
    blessing (the Markdown card too); ([], []) without a backtest."""
    back = card.get("backtest")
    if not back:
        return [], []
    trust, ci = card.get("trust") or {}, _ci_text   # ci: short for the rows below
    reasons = (card.get("blessing") or {}).get("reasons") or []
    model, diff = trust.get("model") or {}, back.get("difference")
    rows = [["random test split", trust.get("test_rows"), model.get("metric"), ci(model.get("ci")),
             ((card.get("metrics") or {}).get("baseline_overall") or {}).get(back["metric"]), "n/a",
             "fail" if [r for r in reasons if r not in back["reasons"]] else "pass", "yes"],
            ["temporal backtest (newest span)", back["rows"], back["value"], ci(back["interval"]),
             (back.get("baseline") or {}).get("value"),
             "n/a" if not diff else f"{diff['value']:+.4f} ({ci(diff['interval'])})", back["verdict"],
             "yes" if back["decides"] else "no (reported)"]]
    return ["split", "rows", back["metric"], "95% CI", "baseline", "change vs baseline (95% CI)", "verdict",
            "decides the blessing"], rows


def render(card: Mapping[str, Any]) -> str:
    """The whole card as HTML; sections with nothing to show are left out."""
    name, version = card.get("model_name", "?"), card.get("version", "?")
    head = (f"<ul><li><b>Registry URI:</b> <code>{_e(card.get('uri', ''))}</code></li>"
            f"<li><b>Published:</b> {_e(card.get('published_at', ''))}</li>"
            f"<li><b>Problem type:</b> {_e(card.get('problem_type', ''))}"
            + (f" (label <code>{_e(card['label_key'])}</code>)" if card.get("label_key") else "") + "</li>"
            + (f"<li><b>Classes:</b> {_e(', '.join(map(str, card['label_vocabulary'])))}</li>"
               if card.get("label_vocabulary") else "") + "</ul>")
    sections = [
        _section("summary", "Summary", head),
        _section("evaluation", "Evaluation", _evaluation(card)),
        _section("slices", "Per slice", _slices(card)),
        _section("fairness", "Fairness", _fairness(card)),
        _section("explanation", "Explanation", _explanation(card)),
        _section("data", "Data", _kv(card.get("data") or {}, ("fact", "value"))),
        _section("family", "Model family (chosen on eval)", _families(card)),
        _section("hyperparameters", "Hyperparameters", _kv(card.get("hyperparameters") or {})),
        _section("training", "Which model, and how it was trained", _training(card)),
        _section("quantized", "Quantized variants (TFLite)", _quantized(card)),
        _section("infra", "Infra validation (served by the serving runtime)",
                 _kv(infra_rows(card.get("infra_validation") or {})) if card.get("infra_validation") else ""),
        _section("contract", "Request contract (what clients send; contract.json)",
                 _table(CONTRACT_HEADER, card["contract"]) if card.get("contract") else ""),
        _section("lineage", "Lineage (ml-metadata input artifact ids)",
                 _kv(card.get("lineage") or {}, ("input", "artifact id"))),
    ]
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Model card: {_e(name)} v{_e(version)}"
            f"</title><style>{plots.PAGE_CSS}</style></head><body><h1>Model card: {_e(name)} v{_e(version)}</h1>"
            + "".join(s for s in sections if s) + "</body></html>")


def not_pushed(model_name: str, reason: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(model_name)}: not pushed</title>"
            f"<style>{plots.PAGE_CSS}</style></head><body><h1>{_e(model_name)}: not pushed</h1>"
            f"<section id='reason'><p>{_e(reason)}</p></section></body></html>")


def boosting_gap_line(trust: dict) -> str:
    """The paired bootstrap interval of how much better the model is than the boosting reference."""
    low, high = trust["vs_boosting_ci"]
    if low is None:
        return "Against the boosting reference on the same rows: n/a."
    return (f"How much better than the boosting reference on the same resampled rows "
            f"(paired 95% CI, positive = this model): {low:+.4f} to {high:+.4f}.")
