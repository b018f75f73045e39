"""infra_validate: load the candidate in the real serving runtime and query it (TFX's InfraValidator,
LOAD_AND_QUERY) before push may publish it.

The candidate SavedModel is served by kfx_serving (KServe's ModelServer; launcher.py says where the
runtime comes from) on 127.0.0.1; one V1 request per raw test row (as clients send them: the
model's raw features as JSON) must be answered, and each answer must equal what the same SavedModel
returns in this process for the same row within `tolerance` (absolute up to magnitude 1, so on
probabilities; relative above it, since a float32 prediction of 1e6 is only exact to 0.06). The
verdict is a marker file push reads, INFRA_BLESSED or NOT_BLESSED, holding the reason in one line,
and result.json beside it (runtime, load time, latency, requests, difference).

A candidate evaluate did not bless is not served: "skipped: not blessed", in well under a second.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from kfx_components.common import io
from kfx_components.infra_validate import launcher

BLESSED_FILE, NOT_BLESSED_FILE, RESULT_FILE = "INFRA_BLESSED", "NOT_BLESSED", "result.json"
SKIPPED = "skipped: not blessed"


def read_verdict(infra_blessing_dir: str) -> Dict[str, Any]:
    """{"blessed": bool, "reason": one line} from an infra_blessing directory (what push reads)."""
    for name, blessed in ((BLESSED_FILE, True), (NOT_BLESSED_FILE, False)):
        path = os.path.join(infra_blessing_dir, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return {"blessed": blessed, "reason": f.read().strip()}
    return {"blessed": False, "reason": f"no {BLESSED_FILE} or {NOT_BLESSED_FILE} in {infra_blessing_dir}"}


def _write(infra_blessing_dir: str, facts: Dict[str, Any]) -> Dict[str, Any]:
    os.makedirs(infra_blessing_dir, exist_ok=True)
    for stale in (BLESSED_FILE, NOT_BLESSED_FILE):
        if os.path.exists(os.path.join(infra_blessing_dir, stale)):
            os.remove(os.path.join(infra_blessing_dir, stale))
    marker = BLESSED_FILE if facts["infra_blessed"] else NOT_BLESSED_FILE
    with open(os.path.join(infra_blessing_dir, marker), "w", encoding="utf-8") as f:
        f.write(facts["reason"] + "\n")
    with open(os.path.join(infra_blessing_dir, RESULT_FILE), "w", encoding="utf-8") as f:
        json.dump(facts, f, indent=2, sort_keys=True)
    return facts


def instance(example, features: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """A tf.train.Example as the JSON instance a client sends: each feature the server takes, one
    value as a scalar, several as a list, none as null."""
    out = {}
    for feature in features:
        name = feature["name"]
        values: List[Any] = []
        if name in example.features.feature:
            f = example.features.feature[name]
            kind = f.WhichOneof("kind")
            values = list(getattr(f, kind).value) if kind else []
            if kind == "bytes_list":
                values = [v.decode("utf-8") for v in values]
        out[name] = None if not values else values[0] if len(values) == 1 and not feature.get("shape") else values
    return out


def _as_vector(answer: Any) -> List[float]:
    """A V1 answer as numbers: a regression's prediction, or the class probabilities in class order."""
    if isinstance(answer, Mapping):
        return [float(p) for p in answer["probabilities"].values()]
    return [float(answer)]


def difference(served: Any, local: Sequence[float]) -> float:
    """Largest difference between a served answer and the in-process output row, absolute where
    the in-process value is at most 1 in magnitude and relative above (float32 carries ~7 digits);
    a binary model's one probability is the served pair's second."""
    vector = _as_vector(served)
    local = [float(x) for x in local]
    if len(local) == 1 and len(vector) == 2:
        vector = vector[1:]
    if len(vector) != len(local):
        return float("inf")
    return max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(vector, local))


def in_process(model_dir: str, records: List[bytes]):
    """The SavedModel's serving_default outputs ([n, k]) for serialized tf.Examples, in this process."""
    import tensorflow as tf

    from kfx_components.common import loading
    fn = loading.load_model(model_dir).signatures["serving_default"]
    out = fn(examples=tf.constant(records, dtype=tf.string))
    key = "probabilities" if "probabilities" in out else "predictions"
    return out[key].numpy().reshape(len(records), -1)


def _percentile(values: Sequence[float], q: float) -> float:
    import numpy as np
    return float(np.percentile(np.asarray(values), q))


def _query(server: launcher.Server, examples: list, records: List[bytes], local, tolerance: float) -> Dict[str, Any]:
    """One V1 request per row; the latencies and the largest difference, or the first failure."""
    status, meta = launcher.http_json("GET", f"{server.url}/kfx/metadata")
    if status != 200:
        return {"failure": f"GET /kfx/metadata answered {status}: {json.dumps(meta)[:200]}"}
    features = meta.get("features") or []
    url = f"{server.url}/v1/models/{launcher.MODEL_NAME}:predict"
    latencies, worst, worst_row = [], 0.0, -1
    for i, example in enumerate(examples):
        body = {"instances": [instance(example, features)]}
        start = time.perf_counter()
        status, answer = launcher.http_json("POST", url, body)
        latencies.append((time.perf_counter() - start) * 1000)
        if status != 200:
            error = answer.get("error", answer) if isinstance(answer, dict) else answer
            return {"failure": f"request {i + 1} of {len(records)} answered {status}: {str(error)[:200]}",
                    "latencies": latencies}
        diff = difference(answer["predictions"][0], local[i])
        if diff > worst:
            worst, worst_row = diff, i
    facts = {"latencies": latencies, "max_difference": worst}
    if worst > tolerance:
        facts["failure"] = (f"served answers differ from in-process predictions by up to {worst:.3g} "
                            f"(test row {worst_row + 1}), tolerance {tolerance:g}")
    return facts


def run(model_dir: str, examples_dir: str, infra_blessing_dir: str, blessed: bool,
        tolerance: float = 1e-4, requests: int = 100, runtime: str = "auto",
        ready_timeout: float = 300.0) -> Dict[str, Any]:
    """Serve the candidate, query it with `requests` raw test rows and compare with in-process
    predictions; write the verdict into `infra_blessing_dir` and return the facts."""
    start = time.monotonic()
    if not blessed:
        return _write(infra_blessing_dir, {"infra_blessed": False, "reason": SKIPPED, "skipped": True,
                                           "seconds": round(time.monotonic() - start, 3)})
    if tolerance < 0 or requests < 1:
        raise ValueError(f"tolerance={tolerance} must be >= 0 and requests={requests} at least 1")
    served_by = launcher.find_runtime(runtime)
    import tensorflow as tf
    records = [r for _, r in zip(range(requests), io.read_records(io.split_file(examples_dir, io.TEST)))]
    if not records:
        raise ValueError(f"examples_dir {examples_dir!r}: the test split has no rows to query with")
    examples = [tf.train.Example.FromString(r) for r in records]
    scratch = launcher.workdir()
    facts: Dict[str, Any] = {"runtime": served_by.describe(), "tolerance": tolerance, "requests": 0}
    try:
        with launcher.Server(served_by, model_dir, scratch) as server:
            server.watch_ready(ready_timeout)
            local: Optional[Any] = None
            local_error = ""
            try:   # while the server loads
                local = in_process(model_dir, records)
            except Exception as err:  # noqa: BLE001 - any failure to call it is the verdict, in one line
                local_error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            try:
                facts["load_seconds"] = round(server.ready_seconds(), 3)
            except launcher.ServerDidNotLoad as err:
                facts["reason"] = f"does not load in the serving runtime ({served_by.kind}): {err}"
            if "reason" not in facts and local is None:
                facts["reason"] = f"does not run in the stage process: {local_error[:300]}"
            if "reason" not in facts:
                queried = _query(server, examples, records, local, tolerance)
                latencies = queried.get("latencies") or []
                facts["requests"] = len(latencies)
                if latencies:
                    facts["latency_ms"] = {"p50": round(_percentile(latencies, 50), 3),
                                           "p99": round(_percentile(latencies, 99), 3)}
                if "max_difference" in queried:
                    facts["max_difference"] = queried["max_difference"]
                if "failure" in queried:
                    facts["reason"] = queried["failure"]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    facts["infra_blessed"] = "reason" not in facts
    if facts["infra_blessed"]:
        facts["reason"] = (f"loaded in {facts['load_seconds']:.1f}s by {served_by.kind}; {facts['requests']} "
                           f"requests answered as in-process within {tolerance:g} "
                           f"(max {facts['max_difference']:.2g}); p99 {facts['latency_ms']['p99']:.1f} ms")
    facts["reason"] = " ".join(facts["reason"].split())   # one line, whatever a log line held
    facts["seconds"] = round(time.monotonic() - start, 3)
    return _write(infra_blessing_dir, facts)


def summary_line(facts: Mapping[str, Any]) -> str:
    """The stage's one line: infra-blessed or not, and why."""
    return f"{'infra-blessed' if facts['infra_blessed'] else 'not infra-blessed'}: {facts['reason']}"
