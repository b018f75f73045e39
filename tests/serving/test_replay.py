"""Replay before canary (kfx/serving/replay.py): `kfx rollout start` scores the logged requests with the
candidate offline before any user sees it. Tiny real SavedModels published through the registry (a few
seconds, no taxi training), a payload log written by the payload sink's own pairing and writer under an
earlier rollout's dir, late labels in the CSV format; the rollout runs through the real command line in
this process."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kfx import cli
from kfx.serving.registry import local_version
from kfx.serving.replay import CHUNK, NOTHING, PASSED, REJECTED, replay
from kfx.serving.kubernetes import run_kubernetes_rollout
from kfx.serving.rollout import RolloutPolicy
from kfx.serving.servers import SERVING_SRC
from kfx_formats import payload_log, registry

MODEL = "tiny"
N = 1000
# v1 the champion; v2 better (also reads z, which the label depends on); v3 inverted; v4 inverted on
# slice seg=b only; v5 needs a feature w that clients do not send; v6 is no SavedModel TensorFlow can load.
KINDS = ("champion", "better", "inverted", "slice-b", "needs-w", "unloadable")


def _save(kind: str, out: str) -> None:
    import tensorflow as tf
    if kind == "unloadable":
        os.makedirs(out)
        with open(os.path.join(out, "saved_model.pb"), "wb") as f:
            f.write(b"not a SavedModel")
        return

    spec = {"x": tf.io.FixedLenFeature([1], tf.float32), "z": tf.io.FixedLenFeature([1], tf.float32, [0.0]),
            "seg": tf.io.FixedLenFeature([1], tf.string, [""])}
    if kind == "needs-w":
        spec["w"] = tf.io.FixedLenFeature([1], tf.float32)

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            f = tf.io.parse_example(examples, spec)
            logit = 3.0 * (f["x"] + (0.5 * f["z"] if kind == "better" else 0.0))
            if kind == "inverted":
                logit = -logit
            if kind == "slice-b":
                logit = tf.where(tf.equal(f["seg"], "b"), -logit, logit)
            return {"probabilities": tf.sigmoid(logit)}

    m = Tiny()
    tf.saved_model.save(m, out, signatures={"serving_default": m.serve})


SINK = """import json, sys
from kfx_serving.sink import Pairer, Writer
pairer = Pairer(Writer(sys.argv[1]))
for attrs, data in json.load(sys.stdin):
    pairer.accept(attrs, data)
print(pairer.writer.written)
"""


def _logged_output(p: float) -> dict:
    return {"label": "1" if p > 0.5 else "0", "probabilities": {"0": 1 - p, "1": p}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{model_dir, labels (CSV path), log (the payload-log dir), n_b}: six versions, production = v1, N logged
    requests answered by v1 (one instance each), late labels for all of them."""
    root = tmp_path_factory.mktemp("replay")
    card = {"model_name": MODEL, "problem_type": "binary", "label_vocabulary": ["0", "1"],
            "metrics": {"slice_features": ["seg"]}}
    for kind in KINDS:
        sm = str(root / "build" / kind)
        _save(kind, sm)
        registry.publish({"saved_model": sm}, {}, str(root / "registry"), MODEL, versioned_files=lambda n, k=kind: {
            "model_card.json": json.dumps({**card, "version": n, "kind": k}).encode()})
    model_dir = str(root / "registry" / MODEL)
    registry.set_alias(model_dir, "production", 1, by="test")
    rng = np.random.default_rng(7)
    x, z = rng.normal(size=N), rng.normal(size=N)
    seg = np.where(rng.random(N) < 0.15, "b", "a")
    y = (x + 0.5 * z + 0.3 * rng.normal(size=N) > 0).astype(int)
    # v1's answers logged by the real payload sink's pairing and writer (kfx_serving.sink), where an earlier
    # rollout's sink writes them; events as KServe's logger sends them (HTTP aside: tests/serving/test_rollout.py)
    log_dir = os.path.join(model_dir, "rollouts", "20261201T000000-canary-v0-v1", "payloads")
    events = []
    for i in range(N):
        attrs = {"id": f"r{i}", "source": "test", "time": f"2026-12-01T00:{i // 60:02d}:{i % 60:02d}.000Z",
                 "inferenceservicename": MODEL, "modelversion": "v1"}
        p = float(1 / (1 + np.exp(-3 * x[i])))
        events += [({**attrs, "type": payload_log.REQUEST_TYPE},
                    {"instances": [{"x": float(x[i]), "z": float(z[i]), "seg": str(seg[i])}]}),
                   ({**attrs, "type": payload_log.RESPONSE_TYPE}, {"predictions": [_logged_output(p)]})]
    sink = subprocess.run([sys.executable, "-c", SINK, log_dir], input=json.dumps(events), text=True,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(SERVING_SRC)}, timeout=60)
    assert sink.returncode == 0 and sink.stdout.strip() == str(N), sink.stderr[-2000:]
    labels = root / "labels.csv"
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(payload_log.LABEL_COLUMNS)
        w.writerows((f"r{i}", 0, int(y[i])) for i in range(N))
    return {"model_dir": model_dir, "labels": str(labels), "log": log_dir, "n_b": int((seg == "b").sum())}


def _v(tiny, n):
    return local_version(f"{tiny['model_dir']}/v{n}")


def _start(tiny, capsys, *args):
    """`kfx rollout start` in this process; servers attached to closed ports, so a rollout that gets past
    replay ends at its first canary step for want of traffic (rolled-back, never promoted)."""
    rc = cli.main(["rollout", "start", tiny["model_dir"], "--hold", "1", "--steps", "50", "--ready-timeout", "5",
                   "--attach", "current=http://127.0.0.1:9", "candidate=http://127.0.0.1:9", *args])
    out = capsys.readouterr()
    return rc, json.loads(out.out), out.err


def _events(state):
    return [json.loads(line)["event"] for line in open(os.path.join(state["dir"], "events.jsonl"))]


def test_worse_challenger_is_stopped_by_replay(tiny, capsys):
    rc, out, err = _start(tiny, capsys, "--candidate", "v3", "--labels", tiny["labels"])
    assert rc == 1 and out["status"] == REJECTED
    reasons = out["result"]["reasons"]                              # overall and both slices
    assert [r.split(":")[0] for r in reasons] == ["overall", "on slice seg=a", "on slice seg=b"]
    assert reasons[0].startswith("overall: candidate auc ") and "by more than 5% on 1000 labelled" in reasons[0]
    assert all("(95% interval " in r for r in reasons)
    assert [line.split(f"{REJECTED}: ", 1)[1] for line in err.splitlines() if REJECTED + ": " in line] == reasons
    state = json.load(open(os.path.join(out["dir"], "state.json")))
    rep = state["replay"]
    assert rep["requests"] == N and rep["labelled"] == N and rep["champion_answers"] == {"logged": N, "scored": 0}
    assert rep["overall"]["candidate"]["value"] < 0.2 < 0.8 < rep["overall"]["champion"]["value"]
    assert [r["slice"] for r in rep["slices"]] == ["seg=a", "seg=b"] and all(r["worse"] for r in rep["slices"])
    assert _events(state)[-1] == "replay" and not {"servers-ready", "front-up", "step"} & set(_events(state))
    assert not os.path.exists(os.path.join(out["dir"], "nginx"))
    aliases = registry.aliases(tiny["model_dir"])
    assert aliases["production"]["version"] == 1 and "staging" not in aliases
    assert cli.main(["rollout", "status", tiny["model_dir"]]) == 0          # what `kfx rollout status` shows
    latest = json.loads(capsys.readouterr().out)["latest"]
    assert latest["status"] == REJECTED and latest["replay"]["reasons"] == reasons


def test_better_challenger_is_let_through(tiny, capsys):
    rc, out, _ = _start(tiny, capsys, "--candidate", "v2", "--labels", tiny["labels"], "--payload-log", tiny["log"],
                        "--replay-requests", "400")
    state = json.load(open(os.path.join(out["dir"], "state.json")))
    rep = state["replay"]
    assert rep["decision"] == PASSED and rep["reasons"] == [] and rep["requests"] == 400
    assert rep["overall"]["candidate"]["value"] > rep["overall"]["champion"]["value"] and not rep["overall"]["worse"]
    assert rep["shift"]["compared"] == 400 and 0 < rep["shift"]["changed_decisions"] < 0.5
    # past replay the canary ran: the front came up and took its first step (then rolled back: no traffic)
    events = _events(state)
    assert events.index("replay") < events.index("servers-ready") < events.index("front-up") < events.index("step")
    assert rc == 1 and out["status"] == "rolled-back"
    assert registry.aliases(tiny["model_dir"])["production"]["version"] == 1


def test_a_slice_only_regression_is_caught_when_the_slice_has_enough_labels(tiny):
    records = payload_log.read_records(tiny["log"])
    labels = payload_log.read_labels(tiny["labels"])
    res = replay(_v(tiny, 1), _v(tiny, 4), records, labels, tolerance=0.3, min_labels=50)
    assert not res["overall"]["worse"] and res["decision"] == REJECTED
    [reason] = res["reasons"]
    assert reason.startswith("on slice seg=b: candidate auc ") and f"on {tiny['n_b']} labelled" in reason
    few = replay(_v(tiny, 1), _v(tiny, 4), records, labels, tolerance=0.3, min_labels=tiny["n_b"] + 1)
    assert few["decision"] == PASSED and "too few to judge" in few["slices"][1]["note"]


def test_without_labels_errors_stop_and_shift_is_reported(tiny):
    records = payload_log.read_records(tiny["log"])
    broken = replay(_v(tiny, 1), _v(tiny, 5), records, {}, requests=50)
    assert broken["decision"] == REJECTED and broken["errors"] == 50
    [reason] = broken["reasons"]
    assert "could not answer 50 of 50 replayed requests, more than --max-error-rate 0.01" in reason and "'w'" in reason
    # past the limit the rest is not scored: one chunk of CHUNK requests (one instance each) decides it
    many = replay(_v(tiny, 1), _v(tiny, 5), records, {}, requests=N)
    assert many["errors"] == many["scored"] == CHUNK
    assert f"of {N} replayed requests (stopped after {CHUNK}" in many["reasons"][0]
    # a chunk with a failing request is scored request by request: only the failing ones count
    some = [{**r, "instances": [{**r["instances"][0], "w": 1.0}]} if i % 10 else r for i, r in enumerate(records)]
    mixed = replay(_v(tiny, 1), _v(tiny, 5), some, {}, requests=N, max_error_rate=0.2)
    assert mixed["decision"] == PASSED and mixed["errors"] == N // 10 and mixed["scored"] == N
    fine = replay(_v(tiny, 1), _v(tiny, 2), records, {}, requests=50)
    assert fine["decision"] == PASSED and fine["errors"] == 0 and "overall" not in fine
    assert 0 < fine["shift"]["changed_decisions"] < 0.5
    # the champion's answers not logged are scored offline: same decisions as logged
    unlogged = [{**r, "model_version": "v9"} for r in records]
    same = replay(_v(tiny, 1), _v(tiny, 1), unlogged, {}, requests=50)
    assert same["champion_answers"] == {"logged": 0, "scored": 50} and same["shift"]["changed_decisions"] == 0
    assert replay(_v(tiny, 1), _v(tiny, 2), [], {})["decision"] == NOTHING
    [reason] = replay(_v(tiny, 1), _v(tiny, 6), records, {})["reasons"]
    assert reason.startswith("candidate v6 could not be loaded to replay: ")
    # an unloadable champion whose answers were not logged: the candidate is still judged on its errors
    orphan = replay(_v(tiny, 6), _v(tiny, 2), unlogged, dict.fromkeys([("r0", 0)], "1"), requests=50)
    assert orphan["decision"] == PASSED and orphan["errors"] == 0 and "overall" not in orphan
    assert orphan["note"].startswith("champion v6 could not be loaded") and orphan["champion_answers"]["scored"] == 0


def test_skip_replay_goes_straight_to_the_canary(tiny, capsys):
    rc, out, _ = _start(tiny, capsys, "--candidate", "v3", "--labels", tiny["labels"], "--skip-replay")
    state = json.load(open(os.path.join(out["dir"], "state.json")))
    assert state["replay"]["decision"] == "skipped" and "step" in _events(state) and out["status"] == "rolled-back"


def test_bad_slice_feature_is_one_line(tiny, capsys):
    rc = cli.main(["rollout", "start", tiny["model_dir"], "--candidate", "v2", "--labels", tiny["labels"],
                   "--replay-slices", "colour"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and err[-1].endswith("--replay-slices colour: no replayed request has this feature "
                                        "(they have seg, x, z)")


class RecordingApi:
    """MOCK of kubernetes.client.CustomObjectsApi (no API server here): records every call."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda **kw: self.calls.append(name)


def test_kubernetes_rollout_rejected_by_replay_leaves_the_cluster_alone(tiny):
    api = RecordingApi()
    res = run_kubernetes_rollout(tiny["model_dir"], 3, RolloutPolicy(hold_seconds=0), "kfx", "tiny", api=api,
                                 labels=payload_log.read_labels(tiny["labels"]))
    assert res["decision"] == REJECTED and res["reasons"][0].startswith("overall: candidate auc") and api.calls == []
