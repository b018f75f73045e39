"""`kfx serve` answers real HTTP (KServe ModelServer in .venv-serving, process executor) with the
SavedModel's own probabilities, on both protocols; bad requests are 4xx naming the field; health,
readiness and Prometheus metrics; payload logs land in the documented JSON-lines format."""
import json
import re
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from kfx.serving.batch import to_example
from kfx.serving.servers import DEFAULT_IMAGE, Server, free_port
from kfx.serving.traffic import instances_from_csv
from kfx_components.common import loading
from kfx_formats import features
from tests.serving.conftest import MODEL, REPO

N = 40


@pytest.fixture(scope="module")
def server(served_registry, tmp_path_factory):
    logs = tmp_path_factory.mktemp("payloads")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kfx.cli", "serve", f"{served_registry['model_dir']}/v1",
                             "--port", str(port), "--log-dir", str(logs)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        time.sleep(0.5)
    else:
        pytest.fail("kfx serve did not become ready")
    yield {"url": url, "logs": logs, "proc": proc}
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


@pytest.fixture(scope="module")
def instances(server, taxi_csv):
    meta = httpx.get(f"{server['url']}/kfx/metadata").json()
    types = {f["name"]: f["dtype"] for f in meta["features"]}
    return instances_from_csv(str(taxi_csv), types, N)


@pytest.fixture(scope="module")
def in_process(served_registry, taxi_csv):
    """P(class 1) from the SavedModel called in this process on the same rows."""
    import csv

    import tensorflow as tf
    fn = loading.load_model(str(served_registry["v1"] / "saved_model")).signatures["serving_default"]
    spec = features.spec_from_signature(fn)
    with open(taxi_csv) as f:
        rows = [r for _, r in zip(range(N), csv.DictReader(f))]
    examples = [to_example(tf, r, spec) for r in rows]
    return fn(examples=tf.constant(examples))["probabilities"].numpy()[:, 0]


def test_v1_matches_savedmodel(server, instances, in_process, served_registry):
    r = httpx.post(f"{server['url']}/v1/models/{MODEL}:predict", json={"instances": instances},
                   headers={"x-request-id": "req-v1-match"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["x-request-id"] == "req-v1-match" and body["model_version"] == "v1"
    vocab = served_registry["card"]["label_vocabulary"]
    got = np.array([p["probabilities"][vocab[1]] for p in body["predictions"]])
    assert got.shape == (N,)
    np.testing.assert_allclose(got, in_process, rtol=1e-5, atol=1e-6)
    assert {p["label"] for p in body["predictions"]} <= set(vocab)
    assert in_process.std() > 1e-3   # the rows really differ: equality above is not vacuous


def test_v2_matches_savedmodel(server, instances, in_process):
    cols = {k: [i[k] for i in instances] for k in instances[0]}
    meta = httpx.get(f"{server['url']}/kfx/metadata").json()
    dt = {"int64": "INT64", "float": "FP32", "string": "BYTES"}
    body = {"id": "req-v2", "inputs": [{"name": f["name"], "shape": [N], "datatype": dt[f["dtype"]],
                                        "data": cols[f["name"]]} for f in meta["features"]]}
    r = httpx.post(f"{server['url']}/v2/models/{MODEL}/infer", json=body)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    probs = np.array(out["probabilities"]["data"]).reshape(out["probabilities"]["shape"])
    assert probs.shape == (N, 2)
    np.testing.assert_allclose(probs[:, 1], in_process, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("mutate, field", [
    (lambda i: i.update(fare="twelve"), "fare"),                 # ill-typed
    (lambda i: i.update(company=7), "company"),                  # number for a string feature
    (lambda i: i.update(trip_start_hour=3.5), "trip_start_hour"),  # fraction for an int64 feature
    (lambda i: i.update(surge_multiplier=2.0), "surge_multiplier"),  # unknown
    (lambda i: i.pop("trip_miles"), "trip_miles"),               # missing
    (lambda i: i.update(payment_type=True), "payment_type"),     # boolean
])
def test_bad_request_is_400_naming_the_field(server, instances, mutate, field):
    inst = dict(instances[0])
    mutate(inst)
    r = httpx.post(f"{server['url']}/v1/models/{MODEL}:predict", json={"instances": [instances[1], inst]})
    assert r.status_code == 400, r.text
    assert field in r.json()["error"] and "instances[1]" in r.json()["error"]


@pytest.mark.parametrize("body", [b"{not json", b'{"instances": "x"}', b'{"rows": []}', b'{"instances": []}',
                                  b'{"instances": [1, 2]}'])
def test_malformed_body_is_4xx(server, body):
    r = httpx.post(f"{server['url']}/v1/models/{MODEL}:predict", content=body,
                   headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, (r.status_code, r.text)


def test_v2_bad_tensor_is_400(server, instances):
    body = {"inputs": [{"name": "fare", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}
    r = httpx.post(f"{server['url']}/v2/models/{MODEL}/infer", json=body)
    assert r.status_code == 400 and "fare" in r.json()["error"] or "missing" in r.json()["error"], r.text


def test_health_readiness_metrics(server):
    u = server["url"]
    assert httpx.get(f"{u}/v2/health/live").status_code == 200
    assert httpx.get(f"{u}/v2/health/ready").status_code == 200
    assert httpx.get(f"{u}/v1/models/{MODEL}").json()["ready"] is True
    assert httpx.get(f"{u}/v1/models/no-such-model").status_code == 404
    metrics = httpx.get(f"{u}/metrics").text
    assert f'request_predict_seconds_count{{model_name="{MODEL}"}}' in metrics
    assert "kfx_requests_rejected_total" in metrics and "kfx_instances_predicted_total" in metrics


def test_payload_log_format(server, instances):
    rid = "req-payload-log"
    r = httpx.post(f"{server['url']}/v1/models/{MODEL}:predict", json={"instances": instances[:3]},
                   headers={"x-request-id": rid})
    assert r.status_code == 200
    deadline, rec = time.time() + 20, None
    while time.time() < deadline and rec is None:
        for path in server["logs"].rglob("*.jsonl"):
            for line in path.read_text().splitlines():
                d = json.loads(line)
                if d["request_id"] == rid:
                    rec = d
        time.sleep(0.3)
    assert rec is not None, "no payload log line for the request"
    assert set(rec) == {"request_id", "time", "model", "model_version", "instances", "outputs"}
    assert rec["model"] == MODEL and rec["model_version"] == "v1"
    assert rec["instances"] == instances[:3]
    assert rec["outputs"] == r.json()["predictions"]
    # one directory per model and version
    assert any(p.parent.name == "v1" and p.parent.parent.name == MODEL for p in server["logs"].rglob("*.jsonl"))
    # a rejected request is not logged as a prediction
    bad = httpx.post(f"{server['url']}/v1/models/{MODEL}:predict", json={"instances": [{"x": 1}]},
                     headers={"x-request-id": "req-rejected"})
    assert bad.status_code == 400
    time.sleep(1)
    assert "req-rejected" not in "".join(p.read_text() for p in server["logs"].rglob("*.jsonl"))


@pytest.mark.docker
def test_docker_executor_same_answers(served_registry, instances, in_process):
    """The serving image (images/serve, `make serving-image`), model mounted read-only, uid 1000."""
    import shutil
    if not shutil.which("docker") or subprocess.run(["docker", "image", "inspect", DEFAULT_IMAGE],
                                                    capture_output=True).returncode != 0:
        pytest.skip(f"no Docker engine or no {DEFAULT_IMAGE} (make serving-image)")
    user = subprocess.run(["docker", "run", "--rm", "--entrypoint", "id", DEFAULT_IMAGE, "-u"],
                          capture_output=True, text=True).stdout.strip()
    assert user == "1000"
    srv = Server(str(served_registry["v1"]), free_port(), executor="docker").start()
    try:
        srv.wait_ready(180)
        r = httpx.post(f"{srv.url}/v1/models/{MODEL}:predict", json={"instances": instances})
        assert r.status_code == 200, r.text
        vocab = served_registry["card"]["label_vocabulary"]
        got = np.array([p["probabilities"][vocab[1]] for p in r.json()["predictions"]])
        np.testing.assert_allclose(got, in_process, rtol=1e-5, atol=1e-6)
    finally:
        srv.stop()


def test_serving_logs_pass_through_kfx_monitor(server, instances, served_registry, tmp_path):
    """What the model really saw, logged by the server, is what kfx monitor checks: the payload logs
    of requests drawn from the training data are read whole and judged (a verdict, never an error)."""
    for start in range(0, len(instances), 8):
        r = httpx.post(f"{server['url']}/v1/models/{MODEL}:predict", json={"instances": instances[start:start + 8]},
                       headers={"x-request-id": f"req-monitor-{start}"})
        assert r.status_code == 200
    logged = lambda: sum(1 for p in server["logs"].rglob("*.jsonl")   # noqa: E731
                         for line in p.read_text().splitlines() if '"req-monitor-' in line)
    deadline = time.time() + 20
    while logged() < (len(instances) + 7) // 8 and time.time() < deadline:
        time.sleep(0.3)
    proc = subprocess.run([sys.executable, "-m", "kfx.cli", "monitor", "--serving-data", str(server["logs"]),
                           "--model", str(served_registry["v1"]), "--root", str(tmp_path / "monitor")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 3), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "report: " in proc.stdout and "error:" not in proc.stderr
    if proc.returncode == 0:
        assert re.search(r"all is well: \d+ serving instances", proc.stdout), proc.stdout
    else:
        assert "retraining due: " in proc.stdout, proc.stdout
