"""One shape for what the model saw and said, whatever the protocol.

Used by the server (to answer) and by the payload sink (to turn a logged V1 or
V2 request/response pair into the record `kfx monitor` reads, docs/serving.md).
Plain Python: no TensorFlow, no KServe.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

from kfx_serving.features import FeatureError, columns_to_instances

CLASSIFICATION = ("binary", "multiclass")


def class_names(problem_type: str, vocabulary: Sequence[Any], width: int) -> List[str]:
    names = [str(v) for v in vocabulary or []]
    k = 2 if problem_type == "binary" else width
    return names if len(names) == k else [str(i) for i in range(k)]


def outputs_from_model(problem_type: str, classes: Sequence[str], values) -> List[Any]:
    """Per-instance outputs from the signature's tensor (numpy [n,1] or [n,K]).

    classification: {"label": top class, "probabilities": {class: p, ...}}
    (binary: the model's P(class 1) and its complement); regression: a number in the
    label's units.
    """
    rows = values.tolist()
    out: List[Any] = []
    if problem_type == "regression":
        return [float(r[0]) if isinstance(r, list) else float(r) for r in rows]
    for r in rows:
        probs = [1.0 - float(r[0]), float(r[0])] if problem_type == "binary" else [float(x) for x in r]
        top = max(range(len(probs)), key=probs.__getitem__)
        out.append({"label": classes[top], "probabilities": dict(zip(classes, probs))})
    return out


def instances_from_request(body: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """V1 {"instances": [...]} or V2 {"inputs": [{name, shape, datatype, data}]} -> row dicts."""
    if "instances" in body:
        return list(body["instances"])
    if "inputs" in body:
        cols = {}
        for inp in body["inputs"]:
            cols[inp["name"]] = list(_flat(inp.get("data", [])))
        return columns_to_instances(cols)
    raise FeatureError('request has neither "instances" (V1) nor "inputs" (V2)', "instances")


def _flat(data):
    for d in data:
        if isinstance(d, list):
            yield from _flat(d)
        else:
            yield d


def outputs_from_response(body: Mapping[str, Any]) -> List[Any]:
    """V1 {"predictions": [...]} or the V2 tensors this server writes -> per-instance outputs."""
    if "predictions" in body:
        return list(body["predictions"])
    tensors = {o["name"]: o for o in body.get("outputs", [])}
    if "predictions" in tensors:
        return [float(x) for x in _flat(tensors["predictions"]["data"])]
    if "probabilities" in tensors:
        p = tensors["probabilities"]
        classes = list((p.get("parameters") or {}).get("classes", "").split(",")) \
            if isinstance((p.get("parameters") or {}).get("classes"), str) \
            else list((p.get("parameters") or {}).get("classes") or [])
        flat = list(_flat(p["data"]))
        k = int(p["shape"][1]) if len(p.get("shape", [])) > 1 else 1
        classes = classes if len(classes) == k else [str(i) for i in range(k)]
        labels = list(_flat(tensors["label"]["data"])) if "label" in tensors else [None] * (len(flat) // k)
        return [{"label": labels[i], "probabilities": dict(zip(classes, flat[i * k:(i + 1) * k]))}
                for i in range(len(flat) // k)]
    return []
