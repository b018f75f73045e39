"""The serving window against the model version's training data, with TFDV.

* **schema** - the window against the schema in its ``SERVING`` environment (the label is not
  expected): features missing from the requests, out-of-domain categorical values, wrong types;
* **skew** - training statistics against serving statistics with the schema's ``skew_comparator``
  per feature (L-infinity distance for categorical features, Jensen-Shannon divergence for numeric
  ones); a feature whose schema sets none gets the defaults below, and the report says so;
* **drift** - with a previous window (its logged data, or its statistics), this window against it
  with the schema's ``drift_comparator`` (same defaults).

Thresholds are the comparators' (practical) thresholds raised to the distance chance alone reaches
at the two samples' sizes (``distributions.adapted_thresholds``): a window of unchanged data calls
for retraining with probability at most ``distributions.FALSE_ALARM_RATE`` per check, however small
the window.

Columns of the serving data that are not in the schema (columns ingest dropped, such as the taxi
data's timestamp, or fields clients send along) are listed as ignored: the model does not read
them, so they are information, never a reason to retrain.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence

from kfx_components.common import distributions
from kfx_components.monitor import serving_data
from kfx_formats import registry

SERVING = "SERVING"
TRAINING = "TRAINING"
# The practical thresholds validate uses for span-to-span drift (components/validate/executor.py):
# a shift of one standard deviation (JS 0.16 on the deciles) or a change of category mix of 10
# points exceeds them. Small windows get the higher threshold chance reaches at their size.
DEFAULT_JS_THRESHOLD = 0.1
DEFAULT_LINF_THRESHOLD = 0.1
# What each kind of finding says in a reason line, in the order reasons are listed.
KINDS = (("missing", "missing from the serving data"), ("schema", "against the schema"),
         ("skew", "training/serving skew"), ("drift", "drift from the previous window"))


def load_model_version(model_dir: str) -> dict:
    """{"schema", "train_stats", "card", "dir"} of a registry version directory."""
    import tensorflow_data_validation as tfdv
    if not os.path.isdir(model_dir):
        raise ValueError(f"model {model_dir}: not a directory (expected a registry version "
                         f"<registry_uri>/<model_name>/vN)")
    stats_path = os.path.join(model_dir, registry.TRAIN_STATISTICS)
    schema_path = os.path.join(model_dir, registry.SCHEMA)
    for path, what in ((stats_path, "training statistics"), (schema_path, "schema")):
        if not os.path.isfile(path):
            raise ValueError(
                f"model {model_dir}: no {what} ({os.path.relpath(path, model_dir)}); this version was pushed "
                "without them: push the model again with a kfx that publishes statistics and schema")
    try:
        schema = tfdv.load_schema_text(schema_path)
    except Exception as e:  # a text-format parse error
        raise ValueError(f"{schema_path}: not a valid Schema text proto: {e}") from e
    try:
        train_stats = tfdv.load_stats_binary(stats_path)
    except Exception as e:
        raise ValueError(f"{stats_path}: not a binary DatasetFeatureStatisticsList: {e}") from e
    card = {}
    card_path = os.path.join(model_dir, registry.CARD_JSON)
    if os.path.isfile(card_path):
        try:
            with open(card_path, encoding="utf-8") as f:
                card = json.load(f)
        except ValueError as e:
            raise ValueError(f"{card_path}: not JSON: {e}") from e
    return {"schema": schema, "train_stats": train_stats, "card": card, "dir": model_dir}


def _comparator_schema(schema, field: str):
    """A copy of the schema in which every feature has a `field` comparator (skew_comparator or
    drift_comparator); the features that got the default are returned too."""
    from tensorflow_metadata.proto.v0 import schema_pb2
    out = type(schema)()
    out.CopyFrom(schema)
    defaulted = []
    for feature in out.feature:
        comparator = getattr(feature, field)
        if comparator.HasField("infinity_norm") or comparator.HasField("jensen_shannon_divergence"):
            continue
        categorical = (feature.type == schema_pb2.BYTES or feature.HasField("domain")
                       or feature.HasField("string_domain") or feature.HasField("bool_domain")
                       or (feature.HasField("int_domain") and feature.int_domain.is_categorical))
        if categorical:
            comparator.infinity_norm.threshold = DEFAULT_LINF_THRESHOLD
        else:
            comparator.jensen_shannon_divergence.threshold = DEFAULT_JS_THRESHOLD
        defaulted.append(feature.name)
    return out, defaulted


SKEW, DRIFT = "skew", "drift"
_COMPARED = {SKEW: ("skew_comparator", "serving_statistics", ("training", "serving")),
             DRIFT: ("drift_comparator", "previous_statistics", ("previous window", "this window"))}


def check(kind: str, schema, reference, current, environment: Optional[str] = None):
    """(TFDV's anomalies of ``current`` against ``reference`` with the ``kind`` ("skew": training vs
    serving; "drift": previous window vs this one) comparators at the thresholds for the two samples'
    sizes, the features given the default comparator). Both statistics `binned` on the training deciles."""
    import tensorflow_data_validation as tfdv
    field, argument, names = _COMPARED[kind]
    compared, defaulted = _comparator_schema(schema, field)
    # TFDV reads skew as (training, serving=...) and drift as (current, previous=...).
    first, other = (reference, current) if kind == SKEW else (current, reference)
    found = distributions.validate_at_adapted_thresholds(
        lambda s: tfdv.validate_statistics(first, s, environment=environment, **{argument: other}),
        compared, field, reference, current, names)
    return found, defaulted


def _type_name(reason) -> str:
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    return anomalies_pb2.AnomalyInfo.Type.Name(reason.type)


def _measurements(anomalies, which: str) -> Dict[str, dict]:
    """{feature: {"measure", "value", "threshold"}} from drift_skew_info (every compared feature)."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    out = {}
    for info in anomalies.drift_skew_info:
        name = ".".join(info.path.step)
        for m in getattr(info, which):
            out[name] = {"measure": anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(m.type).lower(),
                         "value": float(m.value), "threshold": float(m.threshold)}
    return out


def findings(anomalies, kinds: Sequence[str], only_comparators: bool) -> List[dict]:
    out = []
    for name, info in sorted(anomalies.anomaly_info.items()):
        reasons = [r for r in info.reason if not only_comparators or distributions.is_comparison(r)]
        if not reasons:
            continue
        out.append({"feature": name, "kind": kinds[0], "types": [_type_name(r) for r in reasons],
                    "short": "; ".join(r.short_description for r in reasons),
                    "description": "; ".join(r.description for r in reasons)})
    return out


def _classify_schema_findings(found: List[dict]) -> List[dict]:
    for f in found:
        types = set(f["types"])
        if "SCHEMA_MISSING_COLUMN" in types or "FEATURE_TYPE_NOT_PRESENT" in types:
            f["kind"] = "missing"
        else:
            f["kind"] = "schema"
    return found


@dataclasses.dataclass
class Comparison:
    """What compare() found: the window's statistics, the statistics compared (binned on the training
    deciles: training, serving, the previous window or None), TFDV's anomalies
    ({"serving", "skew", "drift"}: drift None without a previous window), measurements per feature
    and the findings ({"feature", "kind": missing|schema|skew|drift, "short", "description"})."""
    rows: int
    ignored: List[str]
    serving_stats: object
    train_binned: object
    serving_binned: object
    previous_binned: object
    previous_source: str
    anomalies: Dict[str, object]
    skew: Dict[str, dict]
    drift: Dict[str, dict]
    findings: List[dict]
    defaulted: List[str]

    def features(self, kind: str) -> List[str]:
        return sorted(f["feature"] for f in self.findings if f["kind"] == kind)

    def reasons(self) -> List[str]:
        """One line per finding: feature, kind, measurement and TFDV's description."""
        lines = []
        for kind, what in KINDS:
            for f in (x for x in self.findings if x["kind"] == kind):
                measure = (self.skew if kind == "skew" else self.drift if kind == "drift" else {}).get(f["feature"])
                value = (f" ({measure['measure'].replace('_', ' ')} {measure['value']:.3f} > "
                         f"{measure['threshold']:.3g})" if measure else "")
                lines.append(f"{f['feature']}: {what}{value}: {f['description'] or f['short']}")
        return lines


def compare(schema, train_stats, rows: List[dict], previous_path: str = "") -> Comparison:
    """The window's rows (their columns the schema does not know are ignored) against the schema, the
    training statistics (skew) and, with ``previous_path``, the previous window (drift)."""
    import tensorflow_data_validation as tfdv
    environments = set(schema.default_environment)
    serving_env = SERVING if SERVING in environments else None
    training_env = TRAINING if TRAINING in environments else None
    label_features = [f.name for f in schema.feature if SERVING in f.not_in_environment]
    used = {f.name for f in schema.feature} - set(label_features)
    ignored = sorted({k for r in rows for k in r} - used - set(label_features))
    rows = [{k: v for k, v in r.items() if k in used} for r in rows]
    serving_stats = serving_data.statistics(rows, schema)

    # 1. the window against the schema (SERVING: no label expected).
    schema_found = tfdv.validate_statistics(serving_stats, schema, environment=serving_env)
    found = _classify_schema_findings(findings(schema_found, ["schema"], only_comparators=False))
    missing = {f["feature"] for f in found if f["kind"] == "missing"}
    # 2. skew: training vs serving with the skew comparators.
    edges = distributions.reference_edges(train_stats)
    train_cmp, serving_cmp = distributions.binned(train_stats, edges), distributions.binned(serving_stats, edges)
    skew_found, defaulted = check(SKEW, schema, train_cmp, serving_cmp, training_env)
    found += [{**f, "kind": "skew"} for f in findings(skew_found, ["skew"], only_comparators=True)
              if f["feature"] not in missing and f["feature"] not in label_features]
    # 3. drift: the previous window vs this one with the drift comparators.
    previous_stats, previous_source, drift_found = None, "", None
    if previous_path:
        previous_stats, previous_source = serving_data.load_previous(previous_path, schema)
        previous_stats = distributions.binned(previous_stats, edges)
        drift_found, _ = check(DRIFT, schema, previous_stats, serving_cmp, serving_env)
        found += [{**f, "kind": "drift"} for f in findings(drift_found, ["drift"], only_comparators=True)
                  if f["feature"] not in missing]
    return Comparison(
        rows=len(rows), ignored=ignored, serving_stats=serving_stats, train_binned=train_cmp,
        serving_binned=serving_cmp, previous_binned=previous_stats, previous_source=previous_source,
        anomalies={"serving": schema_found, "skew": skew_found, "drift": drift_found},
        skew=_measurements(skew_found, "skew_measurements"),
        drift=_measurements(drift_found, "drift_measurements") if drift_found is not None else {},
        findings=found, defaulted=defaulted)
