"""monitor: is the model in production still seeing the data it was trained on?

Compares a serving window (logged requests: serving_data.py) with a pushed registry version's
training statistics and schema (comparison.py: schema anomalies, skew, drift against the previous
window, with TFDV) and, with late labels, the logged predictions with the labels (concept_drift.py);
writes the statistics, the anomalies with the verdict, and the page (page.py).

Retraining is due when any feature is skewed, drifted, missing or out of its domain, or when the
online metric is worse than the test metric by more than ``metric_tolerance`` (relative) across its
whole 95% bootstrap interval.

A registry version (docs/design.md, "pushed_model") must hold ``statistics/train/FeatureStats.pb``
and ``schema/schema.pbtxt`` (push publishes them with the model) and, for concept drift,
``model_card.json``. Late labels: kfx_formats.payload_log.LABELS_FORMAT.
"""
from __future__ import annotations

import json
import os
import time

from kfx_components.monitor import comparison, concept_drift, page, serving_data
from kfx_formats import payload_log, registry

ANOMALIES_FILE = "anomalies.pbtxt"
VERDICT_FILE = "verdict.json"
MIN_LABELS = payload_log.MIN_LABELS
# Bad input is a plain ValueError whose message names the file and what to do: the stages'
# bad-input contract, which the runner shows as one `error:` line without the type's name.
MonitorInputError = ValueError


def summary(verdict: dict, online: dict, rows: int, model: str) -> str:
    """The verdict in one line: `all is well: N serving instances match <model>`, or
    `retraining due: <feature> (skew, drift), <feature> (missing), concept drift (...)`."""
    if not verdict["retrain"]:
        return f"all is well: {rows} serving instances match {model}"
    kinds = {}
    for key, word in (("skewed", "skew"), ("drifted", "drift"), ("missing_features", "missing"),
                      ("schema_anomalies", "schema")):
        for feature in verdict[key]:
            kinds.setdefault(feature, []).append(word)
    parts = [f"{f} ({', '.join(kinds.get(f, ['anomaly']))})" for f in verdict["features"]]
    if verdict["concept_drift"]:
        parts.append(f"{concept_drift.CONCEPT_DRIFT} ({online['metric']} {online['value']:.3f} online vs "
                     f"{online['reference']:.3f} on test)")
    return "retraining due: " + ", ".join(parts)


def _model_label(card: dict, model_dir: str) -> str:
    """`<model name> v<N>` from the card, else from the registry path <registry>/<model>/vN."""
    path = model_dir.rstrip("/")
    name = card.get("model_name") or os.path.basename(os.path.dirname(path))
    return f"{name} {'v' + str(card['version']) if card.get('version') else os.path.basename(path)}".strip()


def run(serving_data_path: str, model_dir: str, statistics_dir: str, anomalies_dir: str, report_path: str,
        previous_path: str = "", labels_path: str = "", metric_tolerance: float = 0.05,
        min_labels: int = MIN_LABELS) -> dict:
    """Skew, drift, schema anomalies and concept drift of a serving window; writes statistics
    (``serving/FeatureStats.pb``: the next window's ``previous``), anomalies (``serving/``, ``skew/``,
    ``drift/`` anomalies.pbtxt and ``verdict.json``) and the HTML report. Returns the facts, with
    ``verdict`` = {"retrain", "features", "reasons", "concept_drift", ...} and ``summary`` (one line)."""
    import tensorflow_data_validation as tfdv
    start = time.time()
    if not 0 <= metric_tolerance < 1:
        raise MonitorInputError(f"metric_tolerance {metric_tolerance}: expected a fraction in [0, 1)")
    version = comparison.load_model_version(model_dir)
    card = version["card"]
    data = serving_data.read_serving_data(serving_data_path)
    labels = payload_log.read_labels(labels_path) if labels_path else None
    if labels is not None and not card:
        raise MonitorInputError(f"model {model_dir}: no {registry.CARD_JSON}; the online metric needs the "
                                "model's test metric and problem type from it")
    compared = comparison.compare(version["schema"], version["train_stats"], data["rows"], previous_path)
    online = concept_drift.judge(data["predictions"], labels, card, labels_path, metric_tolerance, min_labels) \
        if labels is not None else {}

    features = sorted({f["feature"] for f in compared.findings})
    concept = bool(online.get("concept_drift"))
    reasons = compared.reasons() + ([concept_drift.reason(online)] if concept else [])
    warnings = []
    model_version = card.get("version")
    logged = {v.lstrip("v") for v in data["model_versions"]}
    if model_version and logged and logged != {str(model_version)}:
        warnings.append(f"the serving data was logged by version(s) {', '.join(sorted(logged))}, "
                        f"compared here with v{model_version}")
    if online.get("note"):
        warnings.append(f"online metric: {online['note']}")
    verdict = {"retrain": bool(features) or concept, "features": features, "reasons": reasons,
               "concept_drift": concept, "skewed": compared.features("skew"), "drifted": compared.features("drift"),
               "missing_features": compared.features("missing"), "ignored_columns": compared.ignored,
               "schema_anomalies": compared.features("schema")}
    model = _model_label(card, model_dir)
    facts = {"verdict": verdict, "summary": summary(verdict, online, compared.rows, model), "model": model,
             "model_dir": model_dir, "serving_data": serving_data_path, "previous": compared.previous_source,
             "rows": compared.rows, "requests": data["requests"], "format": data["format"], "warnings": warnings,
             "online": online, "defaulted_comparators": compared.defaulted, "skew": dict(sorted(compared.skew.items())),
             "drift": dict(sorted(compared.drift.items())), "findings": compared.findings}

    # Outputs, each written whole (a runner commits them only when the step succeeds).
    serving_data.write_statistics(compared.serving_stats,
                                  os.path.join(statistics_dir, "serving", serving_data.STATS_FILE))
    for folder, found in compared.anomalies.items():
        if found is not None:
            os.makedirs(os.path.join(anomalies_dir, folder), exist_ok=True)
            tfdv.write_anomalies_text(found, os.path.join(anomalies_dir, folder, ANOMALIES_FILE))
    facts["seconds"] = round(time.time() - start, 2)
    with open(os.path.join(anomalies_dir, VERDICT_FILE), "w", encoding="utf-8") as f:
        json.dump({k: facts[k] for k in ("verdict", "summary", "model", "serving_data", "previous", "rows", "online",
                                         "skew", "drift", "warnings")}, f, indent=2, default=str)
    os.makedirs(os.path.dirname(report_path) or ".", exist_ok=True)
    with open(report_path, "w", encoding="utf-8") as f:
        f.write(page.render(facts, compared))
    return facts
