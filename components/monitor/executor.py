"""monitor: is the model in production still seeing the data it was trained on?

Compares logged serving data with a pushed registry version's training
statistics and schema, with TFDV:

* **schema** - the serving window against the schema in its ``SERVING``
  environment (the label is not expected): features missing from the
  requests, out-of-domain categorical values, wrong types;
* **skew** - training statistics against serving statistics with the
  schema's ``skew_comparator`` per feature (L-infinity distance for
  categorical features, Jensen-Shannon divergence for numeric ones); a feature
  whose schema sets none gets the defaults below, and the report says so;
* **drift** - with a previous window (its logged data, or its statistics), this
  window against it with the schema's ``drift_comparator`` (same defaults);
* **concept drift** - with late labels (``request_id,label`` CSV), the logged
  predictions are joined to them by request id and scored with the problem's
  primary metric (AUC, accuracy, RMSE: ``kfx_components.common.problem``); the
  online metric is compared with the model's test metric from its model card.
  Statistics of the inputs alone cannot see a change in how the label depends
  on them.

Skew and drift thresholds are the comparators' (practical) thresholds raised to
the distance chance alone reaches at the two samples' sizes
(``distributions.adapted_thresholds``): a window of unchanged data calls for
retraining with probability at most ``distributions.FALSE_ALARM_RATE`` per
check, however small the window.

Columns of the serving data that are not in the schema (the model's raw
features: columns ingest dropped, such as the taxi data's timestamp, or fields
clients send along) are listed as ignored: the model does not read them, so
they are information, never a reason to retrain.

Retraining is due when any feature is skewed, drifted, missing or out of
its domain, or when the online metric is worse than the test metric by more
than ``metric_tolerance`` (relative) across its whole 95% bootstrap interval
(so a handful of labels never triggers it).

Serving data (a file, or a directory of such files, read recursively):
* JSON lines from the payload logger, one request per line:
  ``{"request_id", "time", "model", "model_version", "instances": [{feature: value}], "outputs": [...]}``;
* JSON lines of bare feature dicts (one instance per line);
* CSV with a header (one instance per row; a ``request_id`` column is kept as the id,
  not as a feature).

A registry version (docs/design.md, "pushed_model") must hold
``statistics/train/FeatureStats.pb`` and ``schema/schema.pbtxt`` (push publishes
them with the model) and, for concept drift, ``model_card.json``.
"""
from __future__ import annotations

import csv
import html
import json
import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from kfx_components.common import distributions, problem

STATS_FILE = "FeatureStats.pb"
SCHEMA_FILE = "schema.pbtxt"
ANOMALIES_FILE = "anomalies.pbtxt"
VERDICT_FILE = "verdict.json"
CARD_JSON = "model_card.json"
TRAIN_STATISTICS = os.path.join("statistics", "train", STATS_FILE)   # in a registry version
SCHEMA = os.path.join("schema", SCHEMA_FILE)                          # in a registry version
SERVING = "SERVING"
TRAINING = "TRAINING"
# The practical thresholds validate uses for span-to-span drift (components/validate/executor.py):
# a shift of one standard deviation (JS 0.16 on the deciles) or a change of category mix of 10
# points exceeds them.
# Small windows get the higher threshold chance reaches at their size (see the module's docstring).
DEFAULT_JS_THRESHOLD = 0.1
DEFAULT_LINF_THRESHOLD = 0.1
# Columns of a CSV / keys of a bare-dict line that identify a request, never a feature.
ID_COLUMNS = ("request_id", "index")
BOOTSTRAP_SAMPLES = 200
# Below this many labelled predictions no verdict on concept drift is given.
MIN_LABELS = 50
CONCEPT_DRIFT = "concept drift"


# Bad input is a plain ValueError whose message names the file and what to do: the stages'
# bad-input contract, which the runner shows as one `error:` line without the type's name.
MonitorInputError = ValueError


# ------------------------------------------------------------------ the model version
def load_model_version(model_dir: str) -> dict:
    """{"schema", "train_stats", "card", "dir"} of a registry version directory."""
    import tensorflow_data_validation as tfdv
    if not os.path.isdir(model_dir):
        raise MonitorInputError(f"model {model_dir}: not a directory (expected a registry version "
                                f"<registry_uri>/<model_name>/vN)")
    stats_path = os.path.join(model_dir, TRAIN_STATISTICS)
    schema_path = os.path.join(model_dir, SCHEMA)
    for path, what in ((stats_path, "training statistics"), (schema_path, "schema")):
        if not os.path.isfile(path):
            raise MonitorInputError(
                f"model {model_dir}: no {what} ({os.path.relpath(path, model_dir)}); this version was pushed "
                "without them: push the model again with a kfx that publishes statistics and schema")
    try:
        schema = tfdv.load_schema_text(schema_path)
    except Exception as e:  # a text-format parse error
        raise MonitorInputError(f"{schema_path}: not a valid Schema text proto: {e}") from e
    try:
        train_stats = tfdv.load_stats_binary(stats_path)
    except Exception as e:
        raise MonitorInputError(f"{stats_path}: not a binary DatasetFeatureStatisticsList: {e}") from e
    card = {}
    card_path = os.path.join(model_dir, CARD_JSON)
    if os.path.isfile(card_path):
        try:
            with open(card_path, encoding="utf-8") as f:
                card = json.load(f)
        except ValueError as e:
            raise MonitorInputError(f"{card_path}: not JSON: {e}") from e
    return {"schema": schema, "train_stats": train_stats, "card": card, "dir": model_dir}


# ------------------------------------------------------------------ reading serving data
def _files(path: str, what: str) -> List[str]:
    if os.path.isdir(path):
        found = sorted(os.path.join(root, n) for root, _, names in os.walk(path) for n in names
                       if n.endswith((".jsonl", ".json", ".csv", ".ndjson")) and not n.startswith("."))
        if not found:
            raise MonitorInputError(f"{what} {path}: a directory with no .jsonl/.json/.csv file in it")
        return found
    if not os.path.isfile(path):
        raise MonitorInputError(f"{what} {path}: no such file or directory")
    return [path]


def _first_char(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                return line.strip()[0]
    return ""


def read_serving_data(path: str, what: str = "serving data") -> dict:
    """{"rows": [{feature: value}], "records": [(request_id, index, output or None)], "model_versions": set,
    "requests": n, "format": ...} from payload logs, bare JSON lines or CSV files."""
    rows: List[dict] = []
    records: List[Tuple[str, int, Any]] = []
    versions = set()
    requests = 0
    formats = set()
    for file in _files(path, what):
        first = _first_char(file)
        if not first:
            continue
        if first in "{[":
            with open(file, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError as e:
                        raise MonitorInputError(f"{what} {file}, line {n}: not JSON ({e}); expected one "
                                                "request (or one feature dict) per line") from e
                    if not isinstance(obj, dict):
                        raise MonitorInputError(f"{what} {file}, line {n}: expected a JSON object per line")
                    if "instances" in obj:
                        formats.add("payload log")
                        instances = obj["instances"]
                        if not isinstance(instances, list) or not all(isinstance(i, dict) for i in instances):
                            raise MonitorInputError(f"{what} {file}, line {n}: \"instances\" must be a list of "
                                                    "{feature: value} objects")
                        outputs = obj.get("outputs") or []
                        rid = str(obj.get("request_id", f"{os.path.basename(file)}:{n}"))
                        requests += 1
                        if obj.get("model_version") is not None:
                            versions.add(str(obj["model_version"]))
                        for i, inst in enumerate(instances):
                            rows.append(inst)
                            records.append((rid, i, outputs[i] if i < len(outputs) else None))
                    else:
                        formats.add("feature dicts")
                        requests += 1
                        rid = str(obj.get("request_id", f"{os.path.basename(file)}:{n}"))
                        rows.append({k: v for k, v in obj.items() if k not in ID_COLUMNS})
                        records.append((rid, int(obj.get("index", 0) or 0), None))
        else:
            formats.add("csv")
            with open(file, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames:
                    raise MonitorInputError(f"{what} {file}: no CSV header")
                for n, row in enumerate(reader, 2):
                    requests += 1
                    rid = row.get("request_id") or f"{os.path.basename(file)}:{n}"
                    rows.append({k: v for k, v in row.items() if k not in ID_COLUMNS and k is not None})
                    records.append((rid, 0, None))
    if not rows:
        raise MonitorInputError(f"{what} {path}: no rows (expected payload-log JSON lines, JSON lines of "
                                "feature dicts, or a CSV with a header)")
    return {"rows": rows, "records": records, "model_versions": versions, "requests": requests,
            "format": ", ".join(sorted(formats))}


# ------------------------------------------------------------------ statistics
def _cell(value) -> Optional[list]:
    """A cell as a list of scalar values, or None when missing."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        values = [v for v in value if v is not None and not (isinstance(v, float) and math.isnan(v))]
        return values or None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str) and value.strip() == "":
        return None
    return [value]


def _number(v) -> Optional[float]:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _kind(cells: List[Optional[list]], expected: str) -> str:
    """"INT", "FLOAT" or "BYTES" for a column: the schema's type when the values allow it."""
    values = [v for c in cells if c for v in c]
    numbers = [_number(v) for v in values]
    numeric = all(n is not None and math.isfinite(n) for n in numbers)
    integral = numeric and all(float(n).is_integer() for n in numbers)
    if expected == "BYTES":
        return "BYTES"
    if expected == "INT":
        return "INT" if integral else ("FLOAT" if numeric else "BYTES")
    if expected == "FLOAT":
        return "FLOAT" if numeric else "BYTES"
    if not values:
        return "BYTES"
    return "INT" if integral else ("FLOAT" if numeric else "BYTES")


def record_batch(rows: List[dict], schema=None):
    """Rows as the Arrow RecordBatch of list arrays TFDV computes statistics on (a missing cell is null),
    typed as the schema says (an INT column parsed from text stays INT) unless the values disagree."""
    import pyarrow as pa
    from tensorflow_metadata.proto.v0 import schema_pb2
    declared = {f.name: schema_pb2.FeatureType.Name(f.type) for f in schema.feature} if schema is not None else {}
    names = list(dict.fromkeys(k for r in rows for k in r))
    arrays, fields = [], []
    for name in names:
        cells = [_cell(r.get(name)) for r in rows]
        kind = _kind(cells, declared.get(name, ""))
        if kind == "INT":
            data = [[int(_number(v)) for v in c] if c else None for c in cells]
            arrays.append(pa.array(data, type=pa.list_(pa.int64())))
        elif kind == "FLOAT":
            data = [[_number(v) for v in c] if c else None for c in cells]
            arrays.append(pa.array(data, type=pa.list_(pa.float32())))
        else:
            data = [[(v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v))
                     .encode("utf-8") for v in c] if c else None for c in cells]
            arrays.append(pa.array(data, type=pa.list_(pa.binary())))
        fields.append(name)
    return pa.RecordBatch.from_arrays(arrays, fields)


def statistics(rows: List[dict], schema=None):
    """TFDV statistics of in-memory rows (no Beam: a serving window fits in memory)."""
    import tensorflow_data_validation as tfdv
    from tensorflow_data_validation.statistics import stats_impl
    options = tfdv.StatsOptions(schema=schema) if schema is not None else tfdv.StatsOptions()
    return stats_impl.generate_statistics_in_memory(record_batch(rows, schema), options)


def write_statistics(stats, path: str) -> None:
    """A binary DatasetFeatureStatisticsList, as validate writes FeatureStats.pb (tfdv.load_stats_binary reads it)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(stats.SerializeToString())


def _load_previous(path: str, schema):
    """The previous window's statistics: a FeatureStats.pb, a directory holding one (a monitor's
    statistics output: serving/FeatureStats.pb), or the previous window's logged data."""
    import tensorflow_data_validation as tfdv
    candidates = [path] if path.endswith(".pb") else [os.path.join(path, "serving", STATS_FILE),
                                                        os.path.join(path, STATS_FILE)]
    for file in candidates:
        if os.path.isfile(file):
            try:
                return tfdv.load_stats_binary(file), file
            except Exception as e:
                raise MonitorInputError(f"previous window {file}: not a binary DatasetFeatureStatisticsList: "
                                        f"{e}") from e
    return statistics(read_serving_data(path, "previous window")["rows"], schema), path


# ------------------------------------------------------------------ comparisons
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
    compared, thresholds = distributions.adapted_thresholds(compared, field, reference, current)
    # TFDV reads skew as (training, serving=...) and drift as (current, previous=...).
    first, other = (reference, current) if kind == SKEW else (current, reference)
    found = tfdv.validate_statistics(first, compared, environment=environment, **{argument: other})
    distributions.annotate(found, thresholds, names)
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


def _findings(anomalies, kinds: Sequence[str], only_comparators: bool) -> List[dict]:
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


# ------------------------------------------------------------------ late labels: concept drift
def read_labels(path: str) -> Dict[str, List[Tuple[Optional[int], str]]]:
    """{request_id: [(index or None, label), ...]} from a CSV with request_id and label columns."""
    if not os.path.isfile(path):
        raise MonitorInputError(f"labels {path}: no such file (expected a CSV with columns request_id,label)")
    out: Dict[str, List[Tuple[Optional[int], str]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        if "request_id" not in header or "label" not in header:
            raise MonitorInputError(f"labels {path}: header {header or '(none)'} lacks request_id and label "
                                    "(expected a CSV with columns request_id,label[,index])")
        for n, row in enumerate(reader, 2):
            row = {(k or "").strip(): v for k, v in row.items()}
            rid, label = (row.get("request_id") or "").strip(), (row.get("label") or "").strip()
            if not rid or label == "":
                continue
            index = row.get("index")
            try:
                index = int(index) if index not in (None, "") else None
            except ValueError as e:
                raise MonitorInputError(f"labels {path}, line {n}: index {index!r} is not an integer") from e
            out.setdefault(rid, []).append((index, label))
    return out


def _class_index(label: str, vocabulary: Sequence[str], path: str) -> int:
    vocab = [str(v) for v in vocabulary]
    if label in vocab:
        return vocab.index(label)
    lowered = label.lower()
    if vocab == ["false", "true"] and lowered in ("true", "false", "1", "0", "yes", "no"):
        return int(lowered in ("true", "1", "yes"))
    try:
        k = int(float(label))
    except ValueError:
        k = -1
    if 0 <= k < max(len(vocab), 2) and float(label).is_integer():
        return k
    raise MonitorInputError(f"labels {path}: label {label!r} is not a class of the model ({vocab})")


def _probabilities(output, vocabulary: Sequence[str]) -> Optional[List[float]]:
    """Class probabilities of one logged output: {"label", "probabilities": {class: p}}, a list, or P(class 1)."""
    if isinstance(output, dict):
        probs = output.get("probabilities", output.get("scores"))
        if isinstance(probs, dict):
            vocab = [str(v) for v in vocabulary] or sorted(probs)
            if all(v in probs for v in vocab):
                return [float(probs[v]) for v in vocab]
            return [float(p) for p in probs.values()]
        output = probs if probs is not None else output.get("predictions")
    if isinstance(output, (list, tuple)):
        flat = [float(x) for x in output]
        return [1.0 - flat[0], flat[0]] if len(flat) == 1 else flat
    if isinstance(output, (int, float)) and not isinstance(output, bool):
        return [1.0 - float(output), float(output)]
    return None


def _prediction(output) -> Optional[float]:
    if isinstance(output, dict):
        output = output.get("predictions", output.get("value"))
    if isinstance(output, (list, tuple)) and len(output) == 1:
        output = output[0]
    return float(output) if isinstance(output, (int, float)) and not isinstance(output, bool) else None


def _metric(problem_type: str, y, scores):
    import numpy as np
    y, scores = np.asarray(y), np.asarray(scores)
    if problem_type == "binary":
        if len(set(y.tolist())) < 2:
            return None
        from sklearn.metrics import roc_auc_score
        return float(roc_auc_score(y, scores[:, 1] if scores.ndim == 2 else scores))
    if problem_type == "multiclass":
        return float((scores.argmax(axis=1) == y).mean())
    return float(np.sqrt(((scores - y) ** 2).mean()))


def reference_metric(card: dict) -> Tuple[Optional[float], str]:
    """The model's test metric from its card: trust.model.metric, else metrics.overall[<metric>]."""
    ptype = card.get("problem_type", "")
    name = problem.PRIMARY_METRIC.get(ptype, "")
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


def online_metric(records: List[Tuple[str, int, Any]], labels: Dict[str, list], card: dict, labels_path: str,
                  tolerance: float, min_labels: int = MIN_LABELS, seed: int = 0) -> dict:
    """The logged predictions joined to late labels by request id, scored; compared with the test metric."""
    import numpy as np
    ptype = card.get("problem_type", "")
    if ptype not in problem.PROBLEM_TYPES:
        raise MonitorInputError(f"labels {labels_path}: the model card has no problem_type, so the online "
                                "metric cannot be chosen; push the model again with its card")
    name = problem.primary_metric(ptype)
    vocabulary = card.get("label_vocabulary") or []
    by_request: Dict[str, List[Tuple[int, Any]]] = {}
    for rid, index, output in records:
        by_request.setdefault(rid, []).append((index, output))
    if not any(out is not None for _, _, out in records):
        raise MonitorInputError(f"labels {labels_path}: the serving data has no logged outputs to join the labels "
                                "to; pass the payload logger's JSON lines (with request_id and outputs)")
    y, scores, unmatched = [], [], 0
    for rid, rows in labels.items():
        logged = dict(by_request.get(rid, []))
        if not logged:
            unmatched += len(rows)
            continue
        for k, (index, label) in enumerate(rows):
            output = logged.get(index if index is not None else k)
            if output is None:
                unmatched += 1
                continue
            if ptype == "regression":
                pred = _prediction(output)
                if pred is None:
                    unmatched += 1
                    continue
                try:
                    y.append(float(label))
                except ValueError as e:
                    raise MonitorInputError(f"labels {labels_path}: label {label!r} of request {rid} is not a "
                                            "number (a regression model)") from e
                scores.append(pred)
            else:
                probs = _probabilities(output, vocabulary)
                if probs is None:
                    unmatched += 1
                    continue
                y.append(_class_index(label, vocabulary, labels_path))
                scores.append(probs)
    reference, source = reference_metric(card)
    out = {"metric": name, "labelled": len(y), "unmatched_labels": unmatched, "reference": reference,
           "reference_source": source, "tolerance": tolerance, "value": None, "ci": None,
           "concept_drift": False, "judged": False}
    if not y:
        out["note"] = "no label matched a logged prediction (request ids differ?)"
        return out
    value = _metric(ptype, y, scores)
    out["value"] = value
    if value is None:
        out["note"] = "all labels are one class: AUC is undefined"
        return out
    rng = np.random.default_rng(seed)
    y_arr, s_arr = np.asarray(y), np.asarray(scores)
    boot = []
    for _ in range(BOOTSTRAP_SAMPLES):
        idx = rng.integers(0, len(y_arr), len(y_arr))
        m = _metric(ptype, y_arr[idx], s_arr[idx])
        if m is not None:
            boot.append(m)
    ci = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))] if boot else [value, value]
    out["ci"] = ci
    if reference is None:
        out["note"] = "the model card holds no test metric (trust.model.metric or metrics.overall)"
        return out
    if len(y) < min_labels:
        out["note"] = f"{len(y)} labelled predictions: too few to judge (at least {min_labels})"
        return out
    out["judged"] = True
    # Concept drift only when even the favourable end of the interval is worse than the test metric
    # by more than the tolerance: sampling noise in a small labelled window is not drift.
    best = ci[1] if problem.higher_is_better(ptype) else ci[0]
    out["concept_drift"] = problem.worse_by_more_than(best, reference, ptype, tolerance)
    return out


# ------------------------------------------------------------------ report
def _summary(f) -> Tuple[str, str]:
    """(present/missing, detail) of one feature's statistics."""
    if f is None:
        return "absent", ""
    which = f.WhichOneof("stats")
    s = getattr(f, which) if which else None
    present, missing = distributions.presence(f)
    total = present + missing
    pct = f"{100.0 * missing / total:.1f}% missing" if total else ""
    if which == "num_stats":
        return pct, f"mean {s.mean:.4g}, std {s.std_dev:.4g}"
    if which == "string_stats":
        top = ", ".join(f"{v.value} ({100.0 * v.frequency / max(present, 1):.0f}%)" for v in s.top_values[:3])
        return pct, f"{s.unique} values; {top}"
    return pct, ""


def _report(facts: dict, train_stats, serving_stats, previous_stats, skew_m: Dict[str, dict],
            drift_m: Dict[str, dict], findings: List[dict]) -> str:
    esc = html.escape
    verdict = facts["verdict"]
    if verdict["retrain"]:
        head = (f'<p class="bad"><b>Retraining is due</b>: '
                f'{esc(", ".join(verdict["features"] + ([CONCEPT_DRIFT] if verdict["concept_drift"] else [])))}</p>')
    else:
        head = '<p class="ok"><b>All is well</b>: the serving data matches the training data.</p>'
    reasons = "".join(f"<li>{esc(r)}</li>" for r in verdict["reasons"]) or "<li>none</li>"
    warnings = "".join(f"<li>{esc(w)}</li>" for w in facts["warnings"])
    serving_f, train_f = distributions.feature_stats(serving_stats), distributions.feature_stats(train_stats)
    flagged: Dict[str, str] = {}
    for f in findings:
        flagged[f["feature"]] = ", ".join(filter(None, [flagged.get(f["feature"]), f["kind"]]))
    rows = []
    for name in sorted(set(train_f) | set(serving_f)):
        t_missing, t_detail = _summary(train_f.get(name))
        s_missing, s_detail = _summary(serving_f.get(name))
        sk, dr = skew_m.get(name), drift_m.get(name)
        cls = ' class="bad"' if name in flagged else ""
        cells = [name, flagged.get(name, ""), f"{t_missing} {t_detail}", f"{s_missing} {s_detail}",
                 f"{sk['value']:.3f} / {sk['threshold']:.2g} ({sk['measure'].replace('_', ' ')})" if sk else "",
                 f"{dr['value']:.3f} / {dr['threshold']:.2g}" if dr else ""]
        rows.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    table = ("<table><thead><tr><th>feature</th><th>finding</th><th>training</th><th>serving</th>"
             "<th>skew / threshold</th><th>drift / threshold</th></tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>")
    found_rows = "".join(f"<tr><td>{esc(f['feature'])}</td><td>{esc(f['kind'])}</td><td>{esc(f['short'])}</td>"
                         f"<td>{esc(f['description'])}</td></tr>" for f in findings)
    found_html = (("<table><thead><tr><th>feature</th><th>kind</th><th>anomaly</th><th>description</th></tr>"
                   f"</thead><tbody>{found_rows}</tbody></table>") if findings
                  else '<p class="ok">No anomalies.</p>')
    plots = []
    for f in findings:
        name = f["feature"]
        if f["kind"] == "drift" and previous_stats is not None:
            a, b = distributions.pair(previous_stats, serving_stats, name)
            plots.append(distributions.side_by_side(name, a, b, ("previous window", "this window")))
        elif f["kind"] != "missing":
            a, b = distributions.pair(train_stats, serving_stats, name)
            plots.append(distributions.side_by_side(name, a, b, ("training", "serving")))
    online = facts.get("online") or {}
    if online:
        ci = online.get("ci")
        line = (f"{online['metric']} {online['value']:.4f} online on {online['labelled']} labelled predictions"
                + (f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else "") if online.get("value") is not None
                else f"{online['labelled']} labelled predictions")
        ref = (f"; test {online['metric']} {online['reference']:.4f} ({online['reference_source']})"
               if online.get("reference") is not None else "")
        verdict_line = ("<b>concept drift</b>: worse than the test metric by more than "
                        f"{100 * online['tolerance']:.0f}% across the whole interval" if online["concept_drift"]
                        else online.get("note") or "no concept drift")
        online_html = (f"<p>{esc(line + ref)}</p><p class=\"{'bad' if online['concept_drift'] else 'ok'}\">"
                       f"{verdict_line if online['concept_drift'] else esc(verdict_line)}</p>"
                       f"<p>{online['unmatched_labels']} label(s) matched no logged prediction.</p>")
    else:
        online_html = "<p>No labels given (<code>--labels</code>): the online metric is not known.</p>"
    defaulted = facts.get("defaulted_comparators") or []
    default_note = (f"<p>The schema sets no skew comparator for {esc(', '.join(defaulted))}: the defaults "
                    f"(L-infinity {DEFAULT_LINF_THRESHOLD}, Jensen-Shannon {DEFAULT_JS_THRESHOLD}) were used.</p>"
                    if defaulted else "")
    default_note += ("<p>Thresholds are the comparators', raised for small samples to the distance chance alone "
                     f"reaches at their sizes ({distributions.FALSE_ALARM_RATE:.0%} false alarms per check).</p>")
    prev = esc(facts["previous"]) if facts.get("previous") else "none given (<code>--previous</code>)"
    ignored = verdict["ignored_columns"]
    ignored_html = (f"<p>Ignored (not features of the model: dropped before training, or never in its data): "
                    f"{esc(', '.join(ignored))}.</p>" if ignored else "")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>kfx monitor: {esc(facts['model'])}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; max-width: 1200px; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }}
th {{ background: #eee; }} .ok {{ color: #1b5e20; }} .bad {{ color: #b71c1c; }}
tr.bad td {{ background: #ffebee; }} figure {{ display: inline-block; margin: 0.5em 1.5em 1em 0; }}
</style></head><body>
<h1>Monitoring: {esc(facts['model'])}</h1>
{head}
<p>Serving data: {esc(facts['serving_data'])} ({facts['rows']} instances in {facts['requests']} requests,
{esc(facts['format'])}). Model: {esc(facts['model_dir'])}. Previous window: {prev}.</p>
{ignored_html}
<h2>Why</h2><ul>{reasons}</ul>
{f'<h2>Warnings</h2><ul>{warnings}</ul>' if warnings else ''}
<h2>Anomalies</h2>{found_html}
<h2>Distributions that moved</h2>{''.join(plots) or '<p class="ok">None.</p>'}
<h2>Online metric (late labels)</h2>{online_html}
<h2>Every feature: training vs serving</h2>{default_note}{table}
</body></html>
"""


# ------------------------------------------------------------------ entry point
def run(serving_data_path: str, model_dir: str, statistics_dir: str, anomalies_dir: str, report_path: str,
        previous_path: str = "", labels_path: str = "", metric_tolerance: float = 0.05,
        min_labels: int = MIN_LABELS) -> dict:
    """Skew, drift, schema anomalies and concept drift of a serving window; writes statistics
    (``serving/FeatureStats.pb``: the next window's ``previous``), anomalies (``serving/``, ``skew/``,
    ``drift/`` anomalies.pbtxt and ``verdict.json``) and the HTML report. Returns the facts, with
    ``verdict`` = {"retrain", "features", "reasons", "concept_drift", ...}."""
    import tensorflow_data_validation as tfdv
    start = time.time()
    if not 0 <= metric_tolerance < 1:
        raise MonitorInputError(f"metric_tolerance {metric_tolerance}: expected a fraction in [0, 1)")
    version = load_model_version(model_dir)
    schema, train_stats, card = version["schema"], version["train_stats"], version["card"]
    data = read_serving_data(serving_data_path)
    labels = read_labels(labels_path) if labels_path else None
    if labels is not None and not card:
        raise MonitorInputError(f"model {model_dir}: no {CARD_JSON}; the online metric needs the model's "
                                "test metric and problem type from it")

    environments = set(schema.default_environment)
    serving_env = SERVING if SERVING in environments else None
    training_env = TRAINING if TRAINING in environments else None
    label_features = [f.name for f in schema.feature if SERVING in f.not_in_environment]
    used = {f.name for f in schema.feature} - set(label_features)
    ignored = sorted({k for r in data["rows"] for k in r} - used - set(label_features))
    rows = [{k: v for k, v in r.items() if k in used} for r in data["rows"]]
    serving_stats = statistics(rows, schema)

    # 1. the window against the schema (SERVING: no label expected).
    schema_found = tfdv.validate_statistics(serving_stats, schema, environment=serving_env)
    findings = _classify_schema_findings(_findings(schema_found, ["schema"], only_comparators=False))
    # 2. skew: training vs serving with the skew comparators.
    edges = distributions.reference_edges(train_stats)
    train_cmp, serving_cmp = distributions.binned(train_stats, edges), distributions.binned(serving_stats, edges)
    skew_found, defaulted = check(SKEW, schema, train_cmp, serving_cmp, training_env)
    skew_m = _measurements(skew_found, "skew_measurements")
    missing = {f["feature"] for f in findings if f["kind"] == "missing"}
    skew = [f for f in _findings(skew_found, ["skew"], only_comparators=True)
            if f["feature"] not in missing and f["feature"] not in label_features]
    for f in skew:
        f["kind"] = "skew"
    # 3. drift: the previous window vs this one with the drift comparators.
    previous_stats, previous_source, drift, drift_m = None, "", [], {}
    if previous_path:
        previous_stats, previous_source = _load_previous(previous_path, schema)
        previous_stats = distributions.binned(previous_stats, edges)
        drift_found, _ = check(DRIFT, schema, previous_stats, serving_cmp, serving_env)
        drift_m = _measurements(drift_found, "drift_measurements")
        drift = [f for f in _findings(drift_found, ["drift"], only_comparators=True) if f["feature"] not in missing]
        for f in drift:
            f["kind"] = "drift"
    else:
        drift_found = None
    findings = findings + skew + drift
    # 4. concept drift: the logged predictions against late labels.
    online = online_metric(data["records"], labels, card, labels_path, metric_tolerance, min_labels) \
        if labels is not None else {}

    features = sorted({f["feature"] for f in findings})
    reasons = []
    for kind, what in (("missing", "missing from the serving data"), ("schema", "against the schema"),
                       ("skew", "training/serving skew"), ("drift", "drift from the previous window")):
        for f in (x for x in findings if x["kind"] == kind):
            measure = (skew_m if kind == "skew" else drift_m if kind == "drift" else {}).get(f["feature"])
            value = (f" ({measure['measure'].replace('_', ' ')} {measure['value']:.3f} > {measure['threshold']:.3g})"
                     if measure else "")
            reasons.append(f"{f['feature']}: {what}{value}: {f['description'] or f['short']}")
    concept = bool(online.get("concept_drift"))
    if concept:
        reasons.append(f"{CONCEPT_DRIFT}: online {online['metric']} {online['value']:.4f} (95% CI "
                       f"{online['ci'][0]:.4f}-{online['ci'][1]:.4f}) on {online['labelled']} labelled predictions "
                       f"vs {online['reference']:.4f} on the test split (tolerance {metric_tolerance:.0%})")
    warnings = []
    model_name, model_version = card.get("model_name", ""), card.get("version")
    model_label = f"{model_name or os.path.basename(os.path.dirname(model_dir.rstrip('/')))} " \
                  f"{'v' + str(model_version) if model_version else os.path.basename(model_dir.rstrip('/'))}"
    logged = {v.lstrip("v") for v in data["model_versions"]}
    if model_version and logged and logged != {str(model_version)}:
        warnings.append(f"the serving data was logged by version(s) {', '.join(sorted(logged))}, "
                        f"compared here with v{model_version}")
    if labels is not None and online.get("note"):
        warnings.append(f"online metric: {online['note']}")
    verdict = {"retrain": bool(features) or concept, "features": features, "reasons": reasons,
               "concept_drift": concept,
               "skewed": sorted(f["feature"] for f in skew), "drifted": sorted(f["feature"] for f in drift),
               "missing_features": sorted(f["feature"] for f in findings if f["kind"] == "missing"),
               "ignored_columns": ignored,
               "schema_anomalies": sorted(f["feature"] for f in findings if f["kind"] == "schema")}
    facts = {"verdict": verdict, "model": model_label.strip(), "model_dir": model_dir,
             "serving_data": serving_data_path, "previous": previous_source, "rows": len(rows),
             "requests": data["requests"], "format": data["format"], "warnings": warnings,
             "online": online, "defaulted_comparators": defaulted,
             "skew": {k: v for k, v in sorted(skew_m.items())}, "drift": {k: v for k, v in sorted(drift_m.items())},
             "findings": findings}

    # Outputs, each written whole (a runner commits them only when the step succeeds).
    os.makedirs(os.path.join(statistics_dir, "serving"), exist_ok=True)
    write_statistics(serving_stats, os.path.join(statistics_dir, "serving", STATS_FILE))
    for folder, found in (("serving", schema_found), ("skew", skew_found), ("drift", drift_found)):
        if found is not None:
            os.makedirs(os.path.join(anomalies_dir, folder), exist_ok=True)
            tfdv.write_anomalies_text(found, os.path.join(anomalies_dir, folder, ANOMALIES_FILE))
    facts["seconds"] = round(time.time() - start, 2)
    with open(os.path.join(anomalies_dir, VERDICT_FILE), "w", encoding="utf-8") as f:
        json.dump({k: facts[k] for k in ("verdict", "model", "serving_data", "previous", "rows", "online",
                                         "skew", "drift", "warnings")}, f, indent=2, default=str)
    os.makedirs(os.path.dirname(report_path) or ".", exist_ok=True)
    with open(report_path, "w", encoding="utf-8") as f:
        f.write(_report(facts, train_cmp, serving_cmp, previous_stats, skew_m, drift_m, findings))
    return facts


def describe(verdict: dict) -> str:
    """The verdict in one line."""
    if not verdict["retrain"]:
        return "monitor: all is well"
    named = verdict["features"] + ([CONCEPT_DRIFT] if verdict["concept_drift"] else [])
    return f"monitor: retraining is due: {', '.join(named)}"
