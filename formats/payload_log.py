"""The serving payload log, the late labels joined to it, and the online metric scored on both.

**Events.** A server posts, per request, a CloudEvent of type REQUEST_TYPE and one of type
RESPONSE_TYPE (KServe's logger types), both with ce-id = the request id.

**Records.** The payload sink pairs them and writes one JSON line per answered request
(docs/serving.md), below ``<out>/<model>/<model_version>/``::

    {"request_id": "...", "time": "2026-11-26T01:02:03.456Z", "model": "chicago-taxi-big-tipper",
     "model_version": "v3", "instances": [{feature: value, ...}, ...], "outputs": [...]}

``outputs[i]`` answers ``instances[i]``: ``{"label", "probabilities": {class: p}}`` (classification)
or a number (regression). An instance is named by its key ``(request_id, index)``: a request may
carry several instances, so the request id alone names none of them.

**Late labels** are a CSV with the header ``request_id,index,label`` (LABELS_FORMAT): one row per
labelled instance. The ``index`` column may be left out when every request has one instance (each
request id then labels its instance 0). CSV because labels come from outside kfx (a warehouse
query, a ticket system, a spreadsheet), where CSV is what every tool exports; its header makes the
format checkable in one line.

**The online metric** is the problem type's primary metric (AUC, accuracy, RMSE) of the logged
outputs against the labels, with a 95% bootstrap interval, compared with a reference value (the
model's test metric, or another version's online metric): worse only when even the favourable
end of the interval is worse than the reference by more than a relative tolerance, so sampling
noise in a small labelled window is never a verdict.

Plain Python (numpy imported only to score); no TensorFlow.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
LOG_SUFFIXES = (".jsonl", ".json", ".ndjson")
Key = Tuple[str, int]     # (request_id, index of the instance in its request)

LABEL_COLUMNS = ("request_id", "index", "label")
LABELS_FORMAT = ("a CSV with the header request_id,index,label (index: the instance's position in its "
                 "request, from 0; the column may be left out when every request has one instance)")
# The metric each problem type is judged by (kfx_components.common.problem.PRIMARY_METRIC: the same
# table, which tests/formats/test_payload_log.py holds equal).
PRIMARY_METRIC = {"binary": "auc", "multiclass": "accuracy", "regression": "rmse"}
HIGHER_IS_BETTER = {"auc": True, "accuracy": True, "rmse": False}
BOOTSTRAP_SAMPLES = 200
# Below this many labelled predictions no verdict is given.
MIN_LABELS = 50
NO_REFERENCE = "no reference value to compare with"


# ------------------------------------------------------------------ files
def files(path: str, what: str, suffixes: Sequence[str] = LOG_SUFFIXES) -> List[str]:
    """``path`` itself, or the files of a directory (recursively) whose names end in ``suffixes``, sorted;
    a ValueError naming ``what`` and the path when there is none."""
    if os.path.isdir(path):
        found = sorted(os.path.join(root, n) for root, _, names in os.walk(path) for n in names
                       if n.endswith(tuple(suffixes)) and not n.startswith("."))
        if not found:
            raise ValueError(f"{what} {path}: a directory with no {'/'.join(suffixes)} file in it")
        return found
    if not os.path.isfile(path):
        raise ValueError(f"{what} {path}: no such file or directory")
    return [path]


def json_lines(file: str, what: str) -> Iterable[Tuple[int, dict]]:
    """(line number, object) of a JSON-lines file; a complete line that is no JSON object is a ValueError
    naming file and line. An unterminated last line that does not parse is skipped: a writer is still
    writing it."""
    with open(file, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            if n == len(lines):
                return
            raise ValueError(f"{what} {file}, line {n}: not JSON ({e}); expected one JSON object per line") from e
        if not isinstance(obj, dict):
            raise ValueError(f"{what} {file}, line {n}: expected a JSON object per line")
        yield n, obj


# ------------------------------------------------------------------ records
def record(request_id: str, time: str, model: str, model_version: str, instances: List[dict],
           outputs: List[Any]) -> dict:
    """One payload-log line (the sink writes it)."""
    return {"request_id": request_id, "time": time, "model": model, "model_version": model_version,
            "instances": instances, "outputs": outputs}


def is_record(obj: dict) -> bool:
    """A payload-log record (rather than, say, a bare feature dict)."""
    return "instances" in obj


def check_record(obj: dict, where: str) -> dict:
    """The record with ``request_id`` (default: ``where``) and ``model_version`` as strings and
    ``outputs`` a list; a ValueError naming ``where`` when its instances are not a list of objects."""
    instances = obj.get("instances")
    if not isinstance(instances, list) or not all(isinstance(i, dict) for i in instances):
        raise ValueError(f'{where}: "instances" must be a list of {{feature: value}} objects')
    outputs = obj.get("outputs")
    if outputs is not None and not isinstance(outputs, list):
        raise ValueError(f'{where}: "outputs" must be a list (one output per instance)')
    version = obj.get("model_version")
    return {**obj, "request_id": str(obj.get("request_id") or where),
            "model_version": "" if version is None else str(version), "outputs": outputs or []}


def read_records(path: str, what: str = "payload log") -> List[dict]:
    """The records of a payload-log file or directory (its .jsonl/.json/.ndjson files, recursively)."""
    out = []
    for file in files(path, what):
        for n, obj in json_lines(file, what):
            where = f"{what} {file}, line {n}"
            if not is_record(obj):
                raise ValueError(f'{where}: not a payload-log record (no "instances")')
            out.append(check_record(obj, where))
    return out


def predictions(records: Iterable[dict], model_version: Optional[str] = None) -> Dict[Key, Any]:
    """{(request_id, index): output} of the records (of one model version, e.g. "v3", when given)."""
    return {(r["request_id"], i): out for r in records
            if model_version is None or r["model_version"] == model_version
            for i, out in enumerate(r["outputs"])}


# ------------------------------------------------------------------ late labels
def _label_rows(file: str) -> Iterable[Tuple[int, str, Optional[str], str]]:
    """(line, request_id, index text or None, label) of one labels file."""
    with open(file, newline="", encoding="utf-8-sig") as f:     # -sig: a spreadsheet's byte-order mark
        head = f.read(4096).lstrip()
        if head[:1] in ("{", "["):
            raise ValueError(f"labels {file}: JSON, not CSV; late labels are {LABELS_FORMAT}")
        f.seek(0)
        reader = csv.DictReader(f)
        header = [(h or "").strip() for h in reader.fieldnames or []]
        if "request_id" not in header or "label" not in header:
            raise ValueError(f"labels {file}: header {header or '(none)'} lacks request_id and label; "
                             f"late labels are {LABELS_FORMAT}")
        has_index = "index" in header
        for n, row in enumerate(reader, 2):
            row = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in row.items()}
            yield n, row["request_id"], row["index"] if has_index else None, row["label"]


def read_labels(path: str) -> Dict[Key, str]:
    """{(request_id, index): label} from a labels CSV or a directory of them (LABELS_FORMAT). A row with an
    empty label is not labelled yet and is skipped; anything else kfx cannot take is a ValueError naming
    the file and line."""
    out: Dict[Key, str] = {}
    seen: Dict[Key, str] = {}
    for file in files(path, "labels", (".csv",) + LOG_SUFFIXES):
        for n, rid, index, label in _label_rows(file):
            where = f"labels {file}, line {n}"
            if not rid:
                raise ValueError(f"{where}: no request_id")
            if label == "":
                continue
            if index is None:
                key = (rid, 0)
            elif index.isdigit():
                key = (rid, int(index))
            else:
                raise ValueError(f"{where}: index {index!r} is not an instance position (0, 1, ...)")
            if key in seen:
                why = ("; the file has no index column: add one (the instance's position in its request)"
                       if index is None else "")
                raise ValueError(f"{where}: instance {key[1]} of request {rid} is labelled twice "
                                 f"(also at {seen[key]}){why}")
            seen[key] = f"line {n}" if file == path else f"{file}, line {n}"
            out[key] = label
    return out


# ------------------------------------------------------------------ the online metric
def _class_index(label: str, vocabulary: Sequence[str], where: str) -> int:
    vocab = [str(v) for v in vocabulary]
    if label in vocab:
        return vocab.index(label)
    lowered = label.lower()
    if vocab == ["false", "true"] and lowered in ("true", "false", "1", "0", "yes", "no"):
        return int(lowered in ("true", "1", "yes"))
    try:
        k = float(label)
    except ValueError:
        k = -1.0
    if k.is_integer() and 0 <= k < max(len(vocab), 2):
        return int(k)
    raise ValueError(f"{where}: label {label!r} is not a class of the model ({vocab})")


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


def _auc(y, p) -> Optional[float]:
    """ROC AUC of 0/1 labels ``y`` and scores ``p``: the chance a positive scores above a negative, ties
    counting half (Mann-Whitney U over average ranks: roc_auc_score's value, at bootstrap speed)."""
    import numpy as np
    positives = int(y.sum())
    negatives = len(y) - positives
    if not positives or not negatives:
        return None
    _, position, counts = np.unique(p, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[position]      # 1-based, tied scores share their mean
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def score(problem_type: str, y, scores) -> Optional[float]:
    """The primary metric of labels ``y`` (class indices or numbers) and ``scores`` (class probabilities
    or predictions); None when undefined (AUC of one class)."""
    import numpy as np
    y, scores = np.asarray(y), np.asarray(scores)
    if problem_type == "binary":
        return _auc(y, scores[:, 1] if scores.ndim == 2 else scores)
    if problem_type == "multiclass":
        return float((scores.argmax(axis=1) == y).mean())
    return float(np.sqrt(((scores - y) ** 2).mean()))


def worse_by_more_than(value: float, reference: float, metric: str, tolerance: float) -> bool:
    """``value`` worse than ``reference`` by more than the relative ``tolerance``."""
    if HIGHER_IS_BETTER[metric]:
        return value < reference * (1.0 - tolerance)
    return value > reference * (1.0 + tolerance)


def online_metric(predictions: Mapping[Key, Any], labels: Mapping[Key, str], problem_type: str,
                  vocabulary: Sequence[str] = (), *, reference: Optional[float] = None, tolerance: float = 0.05,
                  min_labels: int = MIN_LABELS, seed: int = 0, where: str = "labels") -> dict:
    """The logged outputs (``predictions``: {key: output}) joined to late labels by key and scored with the
    problem type's primary metric, with a 95% bootstrap interval; against ``reference`` when given.

    Returns {"metric", "labelled", "unmatched_labels", "value", "ci", "reference", "tolerance", "judged",
    "worse", "note" (when no verdict)}: ``judged`` when there is a reference and at least ``min_labels``
    labelled predictions; ``worse`` when, judged, even the favourable end of the interval is worse than the
    reference by more than ``tolerance`` (relative). A ValueError naming ``where`` for a label that is no
    class (or number) of the model, or no logged output at all."""
    import numpy as np
    if problem_type not in PRIMARY_METRIC:
        raise ValueError(f"{where}: problem type {problem_type!r} is not one of {', '.join(PRIMARY_METRIC)}: "
                         "the online metric cannot be chosen")
    if not any(out is not None for out in predictions.values()):
        raise ValueError(f"{where}: the serving data has no logged outputs to join the labels to; pass the "
                         "payload log (JSON lines with request_id and outputs)")
    metric = PRIMARY_METRIC[problem_type]
    y, scores, unmatched = [], [], 0
    for (rid, index), label in labels.items():
        output = predictions.get((rid, index))
        got = None if output is None else (
            _prediction(output) if problem_type == "regression" else _probabilities(output, vocabulary))
        if got is None:
            unmatched += 1
            continue
        if problem_type == "regression":
            try:
                y.append(float(label))
            except ValueError as e:
                raise ValueError(f"{where}: label {label!r} of request {rid} is not a number (a regression "
                                 "model)") from e
        else:
            y.append(_class_index(label, vocabulary, where))
        scores.append(got)
    out = {"metric": metric, "labelled": len(y), "unmatched_labels": unmatched, "reference": reference,
           "tolerance": tolerance, "value": None, "ci": None, "judged": False, "worse": False}
    if not y:
        return {**out, "note": "no label matched a logged prediction (request ids differ?)"}
    value = score(problem_type, y, scores)
    out["value"] = value
    if value is None:
        return {**out, "note": "all labels are one class: AUC is undefined"}
    rng = np.random.default_rng(seed)
    y_arr, s_arr = np.asarray(y), np.asarray(scores)
    boot = [m for m in (score(problem_type, y_arr[idx], s_arr[idx])
                        for idx in (rng.integers(0, len(y_arr), len(y_arr)) for _ in range(BOOTSTRAP_SAMPLES)))
            if m is not None]
    ci = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))] if boot else [value, value]
    out["ci"] = ci
    if reference is None:
        return {**out, "note": NO_REFERENCE}
    if len(y) < min_labels:
        return {**out, "note": f"{len(y)} labelled predictions: too few to judge (at least {min_labels})"}
    best = ci[1] if HIGHER_IS_BETTER[metric] else ci[0]
    return {**out, "judged": True, "worse": worse_by_more_than(best, reference, metric, tolerance)}
