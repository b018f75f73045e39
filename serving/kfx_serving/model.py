"""The kfx model behind KServe's ModelServer (V1 and V2 / Open Inference Protocol REST)."""
from __future__ import annotations

import json
import logging
import os
import re
import uuid
from typing import Any, Dict, Optional

import kserve
from kserve import InferOutput, InferRequest, InferResponse
from kserve.errors import InvalidInput
from prometheus_client import Counter

from kfx_formats import saved_model
from kfx_formats.features import Feature, spec_from_signature
from kfx_serving import features, normalize
from kfx_serving.payload import PayloadLogger

SIGNATURE = "serving_default"
log = logging.getLogger("kfx_serving")
REJECTED = Counter("kfx_requests_rejected_total", "requests answered 400: bad features", ["model", "field"])
PREDICTED = Counter("kfx_instances_predicted_total", "instances scored", ["model", "model_version"])


def read_card(model_dir: str) -> Dict[str, Any]:
    path = os.path.join(model_dir, "model_card.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


class KfxModel(kserve.Model):
    """A registry version (`<registry>/<model>/vN/`: saved_model/ + model_card.json)."""

    def __init__(self, model_dir: str, name: Optional[str] = None, payload_url: str = "",
                 namespace: str = ""):
        self.model_dir = os.path.abspath(model_dir)
        self.card = read_card(self.model_dir)
        base = os.path.basename(self.model_dir.rstrip("/"))
        # The registry path (<registry>/<model>/vN) names the version; the card's number otherwise.
        self.version = base if re.match(r"^v[0-9]+$", base) else (
            f"v{self.card['version']}" if self.card.get("version") else base)
        super().__init__(name or self.card.get("model_name") or "model", return_response_headers=True)
        self.problem_type = self.card.get("problem_type", "")
        self.payload = PayloadLogger(payload_url, self.name, self.version, namespace=namespace) \
            if payload_url else None
        self.spec: Dict[str, Feature] = {}
        self.classes: list = []

    # -------------------------------------------------------------- load
    def load(self) -> bool:
        import tensorflow as tf

        saved = os.path.join(self.model_dir, "saved_model")
        if not os.path.isdir(saved):
            raise RuntimeError(f"{self.model_dir}: no saved_model/ (not a kfx registry version)")
        for library in saved_model.op_libraries(saved):   # a forest's TF-DF ops
            tf.load_op_library(library)
        self._loaded = tf.saved_model.load(saved)
        if SIGNATURE not in self._loaded.signatures:
            raise RuntimeError(f"{saved}: no {SIGNATURE} signature")
        self._fn = self._loaded.signatures[SIGNATURE]
        self.spec = spec_from_signature(self._fn)
        self._output = "probabilities" if "probabilities" in self._fn.structured_outputs else "predictions"
        if not self.problem_type:
            self.problem_type = "regression" if self._output == "predictions" else (
                "binary" if self._fn.structured_outputs["probabilities"].shape[-1] == 1 else "multiclass")
        width = int(self._fn.structured_outputs[self._output].shape[-1] or 1)
        self.classes = normalize.class_names(self.problem_type, self.card.get("label_vocabulary") or [], width)
        self._tf = tf
        # Warm up the graph once so the first request does not pay for tracing.
        if not any(f.required for f in self.spec.values()):
            self._score([{k: [] for k in self.spec}])
        self.ready = True
        log.info("loaded %s %s (%s, %d raw features)", self.name, self.version, self.problem_type, len(self.spec))
        return self.ready

    def metadata(self) -> Dict[str, Any]:
        return {"name": self.name, "version": self.version, "problem_type": self.problem_type,
                "label_key": self.card.get("label_key", ""), "classes": self.classes,
                "features": [f.describe() for f in self.spec.values()]}

    def _score(self, rows):
        examples = features.serialize(rows, self.spec)
        out = self._fn(examples=self._tf.constant(examples, dtype=self._tf.string))
        return out[self._output].numpy()

    # -------------------------------------------------------------- request path
    def _reject(self, err: features.FeatureError):
        REJECTED.labels(self.name, err.field or "").inc()
        raise InvalidInput(str(err))

    async def preprocess(self, payload, headers: Dict[str, str] = None):
        return payload

    def predict(self, payload, headers: Dict[str, str] = None, response_headers: Dict[str, str] = None):
        headers = headers or {}
        v2 = isinstance(payload, InferRequest)
        request_id = headers.get("x-request-id") or (payload.id if v2 and payload.id else "") or uuid.uuid4().hex
        try:
            if v2:
                cols = {}
                for inp in payload.inputs:
                    data = inp.data if isinstance(inp.data, list) else list(inp.data)
                    cols[inp.name] = [d.decode() if isinstance(d, bytes) else d for d in data]
                instances = features.columns_to_instances(cols)
                raw = {"inputs": [{"name": k, "datatype": "", "shape": [len(v)], "data": v} for k, v in cols.items()]}
            else:
                if not isinstance(payload, dict) or "instances" not in payload:
                    raise features.FeatureError('V1 body must be {"instances": [{feature: value}, ...]}',
                                                "instances")
                instances = payload["instances"]
                raw = {"instances": instances}
            rows = features.validate(instances, self.spec)
        except features.FeatureError as err:
            self._reject(err)
        values = self._score(rows)
        outputs = normalize.outputs_from_model(self.problem_type, self.classes, values)
        PREDICTED.labels(self.name, self.version).inc(len(outputs))
        if response_headers is not None:
            response_headers["x-request-id"] = request_id
            response_headers["x-kfx-model-version"] = self.version
        if v2:
            response = self._v2_response(request_id, outputs)
            logged = {"model_name": self.name, "id": request_id, "outputs": [
                {"name": o.name, "shape": o.shape, "datatype": o.datatype, "data": o.data,
                 "parameters": {k: v for k, v in (o.parameters or {}).items()}} for o in response.outputs]}
        else:
            response = {"predictions": outputs, "model_version": self.version}
            logged = response
        if self.payload is not None:
            self.payload.log(request_id, raw, logged)
        return response

    def _v2_response(self, request_id: str, outputs) -> InferResponse:
        n = len(outputs)
        if self.problem_type == "regression":
            tensors = [InferOutput("predictions", [n], "FP32", data=[float(x) for x in outputs])]
        else:
            k = len(self.classes)
            probs = [o["probabilities"][c] for o in outputs for c in self.classes]
            tensors = [InferOutput("probabilities", [n, k], "FP32", data=probs,
                                   parameters={"classes": ",".join(self.classes)}),
                       InferOutput("label", [n], "BYTES", data=[o["label"] for o in outputs])]
        return InferResponse(response_id=request_id, model_name=self.name, infer_outputs=tensors, model_version=self.version,
                             parameters={"model_version": self.version})

    async def postprocess(self, result, headers=None, response_headers=None):
        return result
