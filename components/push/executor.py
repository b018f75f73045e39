"""push: publish a blessed model to the versioned registry with its model card.

A blessed model becomes `<registry_uri>/<model_name>/v<N>/` holding
`saved_model/` (the SavedModel), `tflite/` (the quantized files), `contract.json` (the request
contract clients must keep: kfx_formats.contract, read from the SavedModel and the schema),
`model_card.md`, `model_card.json` and `model_card.html` (the card rendered, with
inline SVG charts); the version is created by an atomic
rename (see `kfx_formats.registry`) and never overwritten. A model
that is not blessed publishes nothing.

No TensorFlow here: the push image carries none.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from typing import Any, Dict, Mapping

from kfx_components.common import families, problem
from kfx_formats import contract, registry
from kfx_components.common.facts import left_out_line
from kfx_components.push import card_html



def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _md_escape(value: Any) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def _kv_table(rows: Mapping[str, Any], header=("name", "value")) -> str:
    if not rows:
        return "_none recorded_\n"
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    lines += [f"| {_md_escape(k)} | {_md_escape(v)} |" for k, v in rows.items()]
    return "\n".join(lines) + "\n"


def _human_bytes(n: Any) -> str:
    try:
        n = float(n)
    except (TypeError, ValueError):
        return str(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def render_card(card: Mapping[str, Any]) -> str:
    """The human-readable model card (Markdown) for one published version."""
    name, version = card.get("model_name", "?"), card.get("version", "?")
    out = [f"# Model card: {name} v{version}", ""]
    out += [f"- **Registry URI:** `{card.get('uri', '')}`",
            f"- **Published:** {card.get('published_at', '')}",
            f"- **Problem type:** {card.get('problem_type', '')}"
            + (f" (label `{card['label_key']}`)" if card.get("label_key") else ""), ""]
    if card.get("label_vocabulary"):
        out += [f"- **Classes:** {', '.join(map(str, card['label_vocabulary']))}", ""]

    blessing = card.get("blessing") or {}
    out += ["## Evaluation", "",
            f"Blessed: **{'yes' if blessing.get('blessed', True) else 'no'}**"
            + (" (compared with baseline)" if blessing.get("baseline_used") else "")
            + " — every figure below is on the test split, which nothing trained or tuned on.", ""]
    out += [f"- warning: {w}" for w in card.get("warnings") or []] + ([""] if card.get("warnings") else [])
    trust = card.get("trust") or {}
    if trust:
        out += [f"### Against simple models ({trust.get('test_rows')} test rows, "
                f"{trust.get('confidence', 0.95):.0%} bootstrap CI)", "",
                f"| predictor | {trust.get('metric')} | CI |", "| --- | --- | --- |"]
        rows = [("this model", trust.get("model") or {}),
                (f"trivial: {(trust.get('trivial') or {}).get('predictor', '')}", trust.get("trivial") or {})]
        rows += [(f"reference: {r.get('estimator', k)}", r) for k, r in (trust.get("references") or {}).items()]
        for label, r in rows:
            ci = r.get("ci") or [None, None]
            span = "n/a" if ci[0] is None else f"{ci[0]:.4f} - {ci[1]:.4f}"
            out.append(f"| {_md_escape(label)} | {_md_escape(r.get('metric'))} | {span} |")
        out.append("")
        if trust.get("vs_boosting_ci"):
            out += [card_html.boosting_gap_line(trust), ""]
    header, rows = card_html.split_table(card)
    if rows:
        out += [f"### Random test split and temporal backtest (blessed on: {card.get('bless_on')})", "",
                "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        out += ["| " + " | ".join(_md_escape(v) for v in row) + " |" for row in rows] + [""]
    metrics = card.get("metrics") or {}
    overall = metrics.get("overall") or {}
    out += ["### Overall", "", _kv_table(overall, ("metric", "value"))]
    per_slice = metrics.get("per_slice") or {}
    if per_slice:
        cols = sorted({k for m in per_slice.values() for k in m})
        sliced = ", ".join(list(metrics.get("slice_features") or []) + list(metrics.get("crossed_slices") or [])
                           or [metrics.get("slice_feature", "")])
        out += [f"### Per slice ({sliced})", "",
                "| slice | " + " | ".join(cols) + " |",
                "| --- |" + " --- |" * len(cols)]
        out += ["| " + _md_escape(s) + " | " + " | ".join(_md_escape(m.get(c, "")) for c in cols) + " |"
                for s, m in per_slice.items()]
        out.append("")
    out += _fairness_md(card.get("fairness") or {})
    out += _explanation_md(card.get("explanation") or {})

    data = card.get("data") or {}
    out += ["## Data", "", _kv_table(data, ("fact", "value"))]
    family = card.get("model_family") or {}
    if family.get("families"):
        header, rows = families.table(family)
        out += ["## Model family", "", family.get("reason", ""), "",
                "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        out += ["| " + " | ".join(_md_escape(v) for v in row) + " |" for row in rows] + [""]
    out += ["## Hyperparameters", "", _kv_table(card.get("hyperparameters") or {})]
    edge = card_html.edge_line(card)
    if edge:
        out += ["## For the edge", "", edge, ""]
    which = card.get("which_model") or {}
    if which:
        out += ["## Which model this is", "",
                f"The **{which.get('passed_on', 'student')}**"
                + (" (distilled student)." if which.get("passed_on") == "student"
                   else f" (distributed-train): {which.get('reason', '')}"), ""]
        if which.get("teacher_strategy"):
            out += [f"distributed-train trained it with: {which['teacher_strategy']}.", ""]
    if card.get("training"):
        t = card["training"]
        out += ["## Training (distillation)", ""]
        if t.get("student_params") and t.get("teacher_params"):
            out += [f"The student has **{t['student_params']:,}** parameters, "
                    f"{t['student_params'] / t['teacher_params']:.2f}x the teacher's {t['teacher_params']:,}"
                    + (f"; its eval metric is {t['student_metric']:.4f} vs the teacher's {t['teacher_metric']:.4f} "
                       f"({t['student_metric'] / t['teacher_metric']:.3f}x)"
                       if t.get("student_metric") is not None and t.get("teacher_metric") else "") + ".", ""]
        out += [_kv_table(t)]

    quantized = card.get("quantized") or {}
    out += ["## Quantized variants (TFLite)", ""]
    if card.get("quantized_recommendation"):
        out += [f"**Recommended:** {card['quantized_recommendation']}", ""]
    if quantized:
        out += ["| variant | size | gzipped | weights | single-example latency | batch latency | metric | "
                "change | other |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for variant, info in quantized.items():
            if not isinstance(info, Mapping):
                out.append(f"| {_md_escape(variant)} | {_human_bytes(info)} | | | | | | | |")
                continue
            size = info.get("size_bytes", info.get("size", ""))
            lat = info.get("latency") or {}
            single = (lat.get("single_invoke") or {}).get("median_ms")
            batch = (lat.get("batch_invoke") or {}).get("median_ms")
            rest = {k: v for k, v in info.items() if k not in (
                "size_bytes", "size", "gzip_bytes", "weight_bytes", "latency", "metric", "metric_delta")}
            name = f"**{variant}** (recommended)" if variant == card.get("quantized_recommended") else variant
            out.append(" | ".join([
                f"| {_md_escape(name) if '**' not in name else name}",
                _human_bytes(size) if size != "" else "",
                _human_bytes(info["gzip_bytes"]) if "gzip_bytes" in info else "",
                _human_bytes(info["weight_bytes"]) if "weight_bytes" in info else "",
                f"{single * 1000:.1f} µs" if single is not None else "",
                f"{batch:.3f} ms (batch {lat.get('batch_size', '?')})" if batch is not None else "",
                _md_escape(info.get("metric")), _md_escape(info.get("metric_delta")),
                (_md_escape(rest) if rest else "") + " |"]))
        out.append("")
        ref = card.get("quantized_reference") or {}
        lat = ref.get("latency") or {}
        if lat:
            out += ["SavedModel latency (same machine, one thread per TFLite interpreter): "
                    + "; ".join(f"{k.replace('_', ' ')} {v['median_ms']:.3f} ms" for k, v in lat.items()
                                if isinstance(v, Mapping) and "median_ms" in v)
                    + " (end to end = tf.Example parsing + TFT graph + model).", ""]
        for variant, note in (card.get("quantized_notes") or {}).items():
            out += [f"- {variant}: {note}"]
        out.append("")
    else:
        out += [f"_{card.get('quantized_none') or 'none recorded'}_", ""]
    for variant, reason in (card.get("quantized_rejected") or {}).items():
        out += [f"- not published: {variant}: {reason}"]

    if card.get("contract"):
        out += ["## Request contract", "", "What clients send (`contract.json`; `kfx rollout start` refuses a "
                "candidate that breaks it).", "", "| " + " | ".join(card_html.CONTRACT_HEADER) + " |",
                "|" + " --- |" * len(card_html.CONTRACT_HEADER)]
        out += ["| " + " | ".join(_md_escape(v) for v in row) + " |" for row in card["contract"]] + [""]
    if card.get("infra_validation"):
        out += ["## Infra validation", "", _kv_table(card_html.infra_rows(card["infra_validation"]))]
    out += ["", "## Lineage", "", "Input artifact ids (ml-metadata):", "",
            _kv_table(card.get("lineage") or {}, ("input", "artifact id"))]
    return "\n".join(out)


TRAINING_FACTS = ("temperature", "alpha", "student_width", "student_depth", "student_embedding_dim",
                  "max_student_ratio", "epochs", "batch_size", "steps_per_epoch", "tolerance", "seed",
                  "teacher_params", "student_params", "param_ratio", "compression_ratio", "teacher_metric",
                  "student_metric", "metric_ratio")
VARIANT_FACTS = ("size_bytes", "gzip_bytes", "weight_bytes", "weight_ratio_to_float32", "size_ratio_to_float32",
                 "latency_ratio_to_float32", "metric", "metric_delta", "latency")


def _fairness_md(f: Mapping[str, Any]) -> list:
    if not f or not f.get("slices"):
        return []
    t = f"{f.get('gate_threshold', 0.5):g}"
    out = ["### Fairness (Fairness Indicators)", "",
           f"False positive / false negative / true positive rates per slice at threshold {t} "
           f"(also computed at {', '.join(f'{x:g}' for x in f.get('thresholds', []))}); gap = slice - overall."
           + (f" Gate: largest FPR/FNR gap at most {f['max_gap']:g} (slices of at least {f.get('min_slice_rows')} rows)."
              if f.get("max_gap") else " No gate."), ""]
    ov = (f.get("overall") or {}).get(t) or {}
    worst = f.get("largest_gap")
    if worst:
        out += [f"Largest gap: **{worst['rate'].replace('_', ' ')} {worst['gap']:+.4f}** on `{worst['slice']}` "
                f"({worst['value']:.4f} vs {worst['overall']:.4f} overall, {worst['example_count']} rows).", ""]
    out += ["| slice | rows | FPR | FNR | TPR | FPR gap | FNR gap |", "| --- | --- | --- | --- | --- | --- | --- |",
            f"| Overall | | {_md_escape(ov.get('false_positive_rate'))} | {_md_escape(ov.get('false_negative_rate'))} "
            f"| {_md_escape(ov.get('true_positive_rate'))} | | |"]
    for spec, slices in f["slices"].items():
        for s_ in slices[:15]:
            r, g = s_.get("rates") or {}, s_.get("gaps") or {}
            out.append(f"| {_md_escape(s_['slice'])} | {s_.get('example_count')} | "
                       f"{_md_escape(r.get('false_positive_rate'))} | {_md_escape(r.get('false_negative_rate'))} | "
                       f"{_md_escape(r.get('true_positive_rate'))} | {_md_escape(g.get('false_positive_rate'))} | "
                       f"{_md_escape(g.get('false_negative_rate'))} |")
    return out + [""]


def _explanation_md(e: Mapping[str, Any]) -> list:
    if e and e.get("skipped"):
        return ["### Explanation", "", f"Explanation {_md_escape(e['skipped'])}.", ""]
    if not e or not e.get("importance"):
        return []
    sample = f" Sample: {_md_escape(e['sample_note'])}." if e.get("sample_note") else ""
    out = ["### Explanation", "", f"{e.get('method', '')}, on {e.get('rows')} test rows "
           f"(output: {e.get('output')}).{sample} Features by mean |SHAP|:", "",
           "| feature | mean abs SHAP | mean SHAP |", "| --- | --- | --- |"]
    out += [f"| {_md_escape(i['feature'])} | {_md_escape(i['mean_abs_shap'])} | {_md_escape(i['mean_shap'])} |"
            for i in e["importance"][:10]]
    out.append("")
    for d in e.get("partial_dependence") or []:
        pairs = ", ".join(f"{v}: {(o if not isinstance(o, list) else o[-1]):.3f}"
                          for v, o in zip(d["values"], d["mean_output"]))
        out.append(f"- partial dependence of {e.get('output')} on `{d['feature']}`: {pairs}")
    return out + [""]


# What the card's Data section shows of ingest's facts: the file's own row count beside the rows used.
DATA_FACTS = ("source", "rows_in_file", "dropped_rows", "dropped_columns", "empty_columns", "rows", "rows_train",
              "rows_eval", "rows_test", "class_counts", "spans", "rows_per_span", "backtest_span", "rows_backtest")


def _data_warnings(examples: Mapping[str, Any]) -> list:
    """What ingest left out of the file, so `rows` is never read as the file's size."""
    line = left_out_line(examples)
    return [line] if line else []


def make_card(model_name: str, model: Mapping[str, Any], quantized: Mapping[str, Any],
              blessing: Mapping[str, Any], examples: Mapping[str, Any], hyperparameters: Mapping[str, Any],
              lineage: Mapping[str, Any]) -> Dict[str, Any]:
    """The model card's facts, from the metadata of push's input artifacts."""
    variants = quantized.get("variants") or {}
    return {
        "model_name": model_name,
        "problem_type": examples.get("problem_type", ""),
        "label_key": examples.get("label_key", ""),
        "label_vocabulary": examples.get("label_vocabulary", []),
        "metrics": {"split": blessing.get("split", ""),
                    "overall": blessing.get("overall", {}),
                    "baseline_overall": blessing.get("baseline_overall", {}),
                    "per_slice": blessing.get("per_slice", {}),
                    "slice_features": blessing.get("slice_features", []),
                    "crossed_slices": blessing.get("crossed_slices", [])},
        "fairness": blessing.get("fairness", {}),
        "explanation": blessing.get("explanation", {}),
        "blessing": {k: blessing.get(k) for k in ("blessed", "reasons", "baseline_used", "baseline_uri")},
        "trust": blessing.get("trust", {}),
        "bless_on": blessing.get("bless_on", "random"),
        "backtest": blessing.get("backtest"),   # the temporal backtest (evaluate's backtest.judge), or None
        "warnings": _data_warnings(examples) + list(blessing.get("warnings", [])),
        "data": {k: examples[k] for k in DATA_FACTS if examples.get(k) not in (None, [])},
        "hyperparameters": _hyperparameters(hyperparameters),
        "model_family": families.summary(hyperparameters),
        "which_model": {k: model[k] for k in ("passed_on", "reason", "teacher_family", "teacher_strategy",
                                              "edge_model", "edge_reason") if k in model},
        "quantized_none": quantized.get("no_edge_variant", ""),
        "training": {k: model[k] for k in TRAINING_FACTS if k in model},
        "training_history": {k: v for k, v in (("distributed_train (teacher)", model.get("teacher_history")),
                                               ("distill (student)", model.get("history"))) if v},
        "quantized": {name: {k: info[k] for k in VARIANT_FACTS if k in info}
                      for name, info in variants.items()},
        "quantized_recommended": quantized.get("recommended", ""),
        "quantized_recommendation": quantized.get("recommendation", ""),
        "quantized_reference": {k: v for k, v in (quantized.get("reference") or {}).items()
                                if k in ("metric", "saved_model_bytes", "latency", "stands_in_for")},
        "quantized_notes": quantized.get("notes", {}),
        "quantized_rejected": quantized.get("rejected", {}),
        "lineage": dict(lineage),
    }


def _hyperparameters(tuned: Mapping[str, Any]) -> Dict[str, Any]:
    """The chosen family's settings: the forest's, or the network's width, depth and learning rate."""
    forest = (tuned.get("families") or {}).get("gradient_boosted_trees") or {}
    if tuned.get("family") == "gradient_boosted_trees" and forest.get("settings"):
        return {**forest["settings"], "num_trees": forest.get("num_trees")}
    return {k: tuned[k] for k in ("width", "depth", "learning_rate") if k in tuned}


def summary_line(facts: Mapping[str, Any], card: Mapping[str, Any]) -> str:
    """The run's one-line outcome: what was pushed and how good it is, or why nothing was."""
    if not facts.get("pushed"):
        return f"not pushed: {facts.get('reason', '')}"
    trust = card.get("trust") or {}
    model = trust.get("model") or {}
    ci = model.get("ci") or [None, None]
    which = (card.get("which_model") or {}).get("passed_on", "model")
    quality = ""
    if model.get("metric") is not None:
        quality = (f": {trust.get('metric')} {model['metric']:.4f} on {trust.get('test_rows')} test rows"
                   + (f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci[0] is not None else "")
                   + f", trivial {trust['trivial']['metric']:.4f}, "
                   f"{trust['references']['linear']['estimator']} {trust['references']['linear']['metric']:.4f}")
    if facts.get("already"):
        return f"already v{facts['version']}: {facts['model_name']} v{facts['version']} holds this same model"
    return f"pushed {facts['model_name']} v{facts['version']} ({which}){quality}"


def fingerprint(*dirs: str) -> str:
    """sha256 over the relative paths and bytes of every file below ``dirs``: the same artifacts
    (a cached model and its variants) give the same fingerprint."""
    digest = hashlib.sha256()
    for top in dirs:
        if not top:
            continue
        for root, subdirs, files in os.walk(top):
            subdirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, top).encode("utf-8") + b"\0")
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        digest.update(chunk)
    return digest.hexdigest()


def _already_published(registry_uri: str, model_name: str, model_fingerprint: str):
    """The head version when it holds exactly this model, else None."""
    head = registry.latest(registry_uri, model_name)
    if head is None:
        return None
    raw = registry.read_file(head, registry.CARD_JSON)
    try:
        recorded = json.loads(raw or b"{}").get("model_fingerprint")
    except ValueError:
        recorded = None
    return head if recorded == model_fingerprint else None


def run(model_dir: str, quantized_dir: str, blessing: Dict[str, Any], registry_uri: str,
        model_name: str, card: Dict[str, Any], statistics_dir: str = "", schema_dir: str = "",
        source_fingerprint: str = "", infra_blessing: Mapping[str, Any] | None = None) -> dict:
    """Publish the blessed model as the next registry version, or nothing when not blessed.

    The version holds the model, its TFLite variants, its card and, when given, the statistics
    of the data it was trained on and the schema they were validated with: what the next run's
    drift check (through resolve) and the monitor compare new data with.

    Idempotent: when the registry's head version holds the same model and variants (same
    fingerprint), nothing new is published and the head is returned (``already: True``). The
    fingerprint is ``source_fingerprint`` when the runner gives one (what made the model: data,
    parameters and code, the same with or without the cache), else the files' bytes.
    """
    if not isinstance(blessing, Mapping) or "blessed" not in blessing:
        raise ValueError("blessing must be a dict with a 'blessed' entry")
    if not registry_uri:
        raise ValueError("registry_uri is empty")
    if not blessing["blessed"]:
        reasons = blessing.get("reasons") or []
        reason = "not blessed" + (": " + "; ".join(map(str, reasons)) if reasons else "")
        return {"pushed": False, "reason": reason, "model_name": model_name}
    # infra_validate's verdict (None: a pipeline without that stage): the serving runtime must load it.
    if infra_blessing is not None and not infra_blessing.get("infra_blessed"):
        return {"pushed": False, "reason": f"not infra-blessed: {infra_blessing.get('reason', '')}",
                "model_name": model_name}

    problem.require_saved_model(model_dir, "model_dir")
    sources = {registry.SAVED_MODEL: model_dir}
    if quantized_dir:
        if not os.path.isdir(quantized_dir):
            raise ValueError(f"quantized_dir {quantized_dir!r} is not a directory")
        sources[registry.TFLITE] = quantized_dir
    for name, path in ((registry.STATISTICS, statistics_dir), (registry.SCHEMA_DIR, schema_dir)):
        if path:
            if not os.path.isdir(path):
                raise ValueError(f"{name}_dir {path!r} is not a directory")
            sources[name] = path
    model_fingerprint = source_fingerprint or fingerprint(model_dir, quantized_dir)
    head = _already_published(registry_uri, model_name, model_fingerprint)
    if head is not None:
        markdown = registry.read_file(head, registry.CARD_MD) or b""
        page = registry.read_file(head, registry.CARD_HTML) or b""
        return {"pushed": True, "already": True, "version": head.number, "uri": head.uri,
                "model_name": model_name, "model_card": markdown.decode("utf-8"),
                "model_card_html": page.decode("utf-8")}
    base_card = dict(card or {})
    schema = os.path.join(schema_dir, os.path.basename(registry.SCHEMA)) if schema_dir else ""
    request = contract.from_saved_model(model_dir, schema if os.path.isfile(schema) else "",
                                        str(base_card.get("label_key") or ""))
    base_card["contract"] = card_html.contract_rows(request.to_json())
    base_card["model_fingerprint"] = model_fingerprint
    base_card.setdefault("model_name", model_name)
    base_card.setdefault("blessing", {k: v for k, v in blessing.items()
                                      if k in ("blessed", "reasons", "baseline_used")})
    published_at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def card_files(number: int) -> Dict[str, bytes]:
        full = {**base_card, "version": number, "published_at": published_at,
                "uri": f"{registry_uri.rstrip('/')}/{model_name}/v{number}"}
        return {registry.CARD_MD: render_card(full).encode("utf-8"),
                registry.CARD_JSON: json.dumps(full, indent=2, sort_keys=True, default=str).encode("utf-8"),
                registry.CARD_HTML: card_html.render(full).encode("utf-8")}

    published: Dict[str, bytes] = {}

    def remember(number: int) -> Dict[str, bytes]:
        published.clear()
        published.update(card_files(number))
        return published

    version = registry.publish(sources, {registry.CONTRACT: contract.dumps(request)}, registry_uri, model_name,
                               versioned_files=remember)
    # `model_card` (the Markdown) and `model_card_html` are for the component's outputs, not for metadata.
    return {"pushed": True, "already": False, "version": version.number, "uri": version.uri,
            "model_name": model_name, "model_card": published[registry.CARD_MD].decode("utf-8"),
            "model_card_html": published[registry.CARD_HTML].decode("utf-8")}
