"""Serving on Kubernetes, statically (no API server can run here).

* The chart's serving objects (serving.enabled, each strategy) render with real helm; the
  InferenceServices validate strictly against the KServe SDK's generated models (kserve 0.15.2, the
  CRD's Go types; tests/serving/isvc_validate.py) and their predictor pod fields against the
  Kubernetes models; the VirtualServices against the Istio CRD schemas (npm @kubernetes-models/istio);
  core objects with kubernetes-validate --strict; checkov finds nothing.
* `kfx rollout --target kubernetes` logic runs against a MOCKED Kubernetes API (a fake
  CustomObjectsApi recording patches) and stubbed Prometheus answers: what is asserted is the
  sequence of patches KServe / Istio would receive.
"""
import copy
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from kfx.serving.kubernetes import k8s_blue_green_switch, k8s_canary, k8s_shadow
from kfx.serving.rollout import RolloutPolicy
from tests.serving.conftest import REPO, SERVING_PY

TOOLS = Path(os.environ.get("KFX_TOOLS_DIR", REPO / ".tools"))
HELM = TOOLS / "bin" / "helm"
NODE_DIR = TOOLS / "serving-node"
CAND = "s3://kfx-artifacts/registry/chicago-taxi-big-tipper/v2"


def render(strategy, *extra):
    if not HELM.exists():
        pytest.skip("no helm (make k8s-tools)")
    out = subprocess.run([str(HELM), "template", "kfx", str(REPO / "helm/kfx"), "-n", "kfx",
                          "--set", "serving.enabled=true", "--set", f"serving.strategy={strategy}",
                          "--set", f"serving.candidate.storageUri={CAND}", *extra],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def rendered():
    return {s: render(s) for s in ("canary", "blue-green", "shadow")}


def test_default_values_render_no_serving():
    out = subprocess.run([str(HELM), "template", "kfx", str(REPO / "helm/kfx"), "-n", "kfx"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "InferenceService" not in out.stdout and "kfx-serving" not in out.stdout


def test_strategies_render_the_right_objects(rendered):
    kinds = {s: sorted((d["kind"], d["metadata"]["name"]) for d in docs
                       if d["kind"] in ("InferenceService", "VirtualService")) for s, docs in rendered.items()}
    m = "chicago-taxi-big-tipper"
    assert kinds["canary"] == [("InferenceService", m)]
    isvc = next(d for d in rendered["canary"] if d["kind"] == "InferenceService")
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    env = {e["name"]: e.get("value") for e in isvc["spec"]["predictor"]["containers"][0]["env"]}
    assert env["STORAGE_URI"] == CAND
    assert isvc["spec"]["predictor"]["logger"]["url"].startswith("http://kfx-serving-sink.kfx.svc")
    assert kinds["blue-green"] == [("InferenceService", f"{m}-blue"), ("InferenceService", f"{m}-green"),
                                   ("VirtualService", m)]
    vs = next(d for d in rendered["blue-green"] if d["kind"] == "VirtualService")
    assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [100, 0]
    assert kinds["shadow"] == [("InferenceService", m), ("InferenceService", f"{m}-candidate"), ("VirtualService", m)]
    vs = next(d for d in rendered["shadow"] if d["kind"] == "VirtualService")
    assert vs["spec"]["http"][0]["mirror"]["host"].startswith(f"{m}-candidate-predictor.")
    for docs in rendered.values():
        for d in docs:
            if d["kind"] == "InferenceService":
                c = d["spec"]["predictor"]["containers"][0]
                assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["runAsUser"] == 10001
                assert not any("SECRET" in e["name"] for e in c.get("env", []))   # credentials never inline


def test_schema_rejects_bad_serving_values():
    for bad in (["--set", "serving.strategy=rainbow"], ["--set", "serving.canaryTrafficPercent=150"],
                ["--set", "serving.current.storageUri=http://x/y"], ["--set", "serving.sink.bogus=1"]):
        p = subprocess.run([str(HELM), "template", "kfx", str(REPO / "helm/kfx"), "--set", "serving.enabled=true", *bad],
                           capture_output=True, text=True)
        assert p.returncode != 0 and "schema" in p.stderr, bad


def test_inferenceservices_valid_against_kserve_models(rendered):
    docs = [d for s in rendered.values() for d in s if d["kind"] == "InferenceService"]
    p = subprocess.run([str(SERVING_PY), str(Path(__file__).with_name("isvc_validate.py"))],
                       input=json.dumps(docs), capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("OK InferenceService/") == 5
    broken = copy.deepcopy(docs[0])
    broken["spec"]["predictor"]["canaryTrafficPercentage"] = 5        # a misspelt field must fail
    p = subprocess.run([str(SERVING_PY), str(Path(__file__).with_name("isvc_validate.py"))],
                       input=json.dumps([broken]), capture_output=True, text=True)
    assert p.returncode == 1 and "canaryTrafficPercentage" in p.stdout


ISTIO_JS = r"""
import { VirtualService } from "@kubernetes-models/istio/networking.istio.io/v1beta1/VirtualService";
import fs from "node:fs";
let bad = 0;
for (const d of JSON.parse(fs.readFileSync(0, "utf8"))) {
  try { new VirtualService(d).validate(); console.log(`OK ${d.metadata.name}`); }
  catch (e) { console.log(`FAIL ${d.metadata.name}: ${e.message}`); bad++; }
}
process.exit(bad ? 1 : 0);
"""


def test_virtualservices_valid_against_istio_schema(rendered):
    if not (NODE_DIR / "node_modules/@kubernetes-models/istio").exists():
        pytest.skip("no @kubernetes-models/istio (make serving-k8s-tools)")
    script = NODE_DIR / "validate-istio.mjs"
    script.write_text(ISTIO_JS)
    docs = [d for s in rendered.values() for d in s if d["kind"] == "VirtualService"]
    p = subprocess.run(["node", str(script)], input=json.dumps(docs), capture_output=True, text=True, cwd=NODE_DIR)
    assert p.returncode == 0 and p.stdout.count("OK ") == 2, p.stdout + p.stderr
    bad = copy.deepcopy(docs[0])
    bad["spec"]["http"][0]["route"][0]["weight"] = "all"
    p = subprocess.run(["node", str(script)], input=json.dumps([bad]), capture_output=True, text=True, cwd=NODE_DIR)
    assert p.returncode == 1


def test_core_objects_strict_and_checkov_clean(rendered, tmp_path):
    py = TOOLS / "venv" / "bin" / "python"
    if not py.exists():
        pytest.skip("no .tools/venv (make k8s-tools)")
    core = [d for d in rendered["shadow"] if d["kind"] not in ("InferenceService", "VirtualService")
            and ("serving" in d["metadata"]["name"])]
    assert {d["kind"] for d in core} >= {"Deployment", "Service", "NetworkPolicy", "ServiceAccount"}
    script = ("import json,sys,kubernetes_validate as kv\n"
              "for d in json.load(sys.stdin): kv.validate(d, '1.33.0', strict=True)\nprint('ok')")
    p = subprocess.run([str(py), "-c", script], input=json.dumps(core), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    scan = tmp_path / "scan"
    scan.mkdir()
    for i, d in enumerate(d for d in rendered["shadow"] if "serving" in d["metadata"]["name"]
                          or d["kind"] in ("InferenceService", "VirtualService")):
        (scan / f"{i:02d}-{d['kind']}.yaml").write_text(yaml.safe_dump(d))
    p = subprocess.run([str(TOOLS / "venv/bin/checkov"), "-d", str(scan), "--framework", "kubernetes",
                        "--skip-download", "--compact", "-o", "json"], capture_output=True, text=True,
                       env=dict(os.environ, BC_SKIP_MAPPING="TRUE", LOG_LEVEL="WARNING"))
    report = json.loads(p.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [f"{c['check_id']} {c['resource']}" for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    assert not failed, failed
    assert sum(r.get("summary", {}).get("passed", 0) for r in reports) > 20


# ------------------------------------------------------------------ rollout logic vs a mocked API

class FakeCustomObjects:
    """MOCK of kubernetes.client.CustomObjectsApi: stores objects, applies merge patches, records them."""

    def __init__(self, objects):
        self.objects = copy.deepcopy(objects)
        self.patches = []

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        return copy.deepcopy(self.objects[(plural, name)])

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.patches.append((plural, name, copy.deepcopy(body)))

        def merge(a, b):
            for k, v in b.items():
                if v is None:
                    a.pop(k, None)
                elif isinstance(v, dict) and isinstance(a.get(k), dict):
                    merge(a[k], v)
                else:
                    a[k] = v
        merge(self.objects[(plural, name)], body)
        return self.objects[(plural, name)]


def _isvc(rendered):
    isvc = copy.deepcopy(next(d for d in rendered["canary"] if d["kind"] == "InferenceService"))
    isvc["spec"]["predictor"].pop("canaryTrafficPercent")
    isvc["spec"]["predictor"]["containers"][0]["env"][0]["value"] = "s3://kfx-artifacts/registry/m/v1"
    return isvc


def test_k8s_canary_rolls_back_on_errors(rendered):
    api = FakeCustomObjects({("inferenceservices", "m"): _isvc(rendered)})
    answers = iter([0.0, 120.0, 0.35, 150.0])      # step 1 healthy, step 2: 35% errors
    policy = RolloutPolicy(steps=(10, 50, 100), hold_seconds=0, max_error_rate=0.01, max_p99_ms=1000)
    res = k8s_canary(api, "kfx", "m", CAND, policy, lambda q: next(answers), sleep=lambda s: None)
    assert res["decision"] == "rolled-back" and res["at_percent"] == 50
    pcts = [p[2]["spec"]["predictor"].get("canaryTrafficPercent") for p in api.patches]
    assert pcts == [10, 50, 0]
    env = api.patches[0][2]["spec"]["predictor"]["containers"][0]["env"]
    assert {"name": "STORAGE_URI", "value": CAND} in env
    assert res["previous_storage_uri"] == "s3://kfx-artifacts/registry/m/v1"


def test_k8s_canary_promotes_when_healthy(rendered):
    api = FakeCustomObjects({("inferenceservices", "m"): _isvc(rendered)})
    queries = []
    policy = RolloutPolicy(steps=(10, 50), hold_seconds=0, max_error_rate=0.01, max_p99_ms=1000)
    res = k8s_canary(api, "kfx", "m", CAND, policy, lambda q: queries.append(q) or 0.0, sleep=lambda s: None)
    assert res["decision"] == "promoted"
    assert [p[2]["spec"]["predictor"].get("canaryTrafficPercent", "unset") for p in api.patches] == [10, 50, None]
    assert "canaryTrafficPercent" not in api.objects[("inferenceservices", "m")]["spec"]["predictor"]
    assert any("istio_requests_total" in q and 'response_code=~"5.."' in q for q in queries)


def test_k8s_blue_green_and_shadow_patch_the_route(rendered):
    vs = next(d for d in rendered["blue-green"] if d["kind"] == "VirtualService")
    api = FakeCustomObjects({("virtualservices", vs["metadata"]["name"]): vs})
    hosts = {c: f"chicago-taxi-big-tipper-{c}-predictor.kfx.svc.cluster.local" for c in ("blue", "green")}
    k8s_blue_green_switch(api, "kfx", vs["metadata"]["name"], "green", hosts)
    route = api.objects[("virtualservices", vs["metadata"]["name"])]["spec"]["http"][0]["route"]
    assert [r["weight"] for r in route] == [0, 100]
    k8s_blue_green_switch(api, "kfx", vs["metadata"]["name"], "blue", hosts)   # switch back
    assert [r["weight"] for r in api.objects[("virtualservices", vs["metadata"]["name"])]["spec"]["http"][0]["route"]] == [100, 0]
    sh = next(d for d in rendered["shadow"] if d["kind"] == "VirtualService")
    sh["spec"]["http"][0].pop("mirror")
    api = FakeCustomObjects({("virtualservices", sh["metadata"]["name"]): sh})
    k8s_shadow(api, "kfx", sh["metadata"]["name"], "cand.kfx.svc.cluster.local", 50)
    http = api.objects[("virtualservices", sh["metadata"]["name"])]["spec"]["http"][0]
    assert http["mirror"] == {"host": "cand.kfx.svc.cluster.local"} and http["mirrorPercentage"] == {"value": 50.0}
