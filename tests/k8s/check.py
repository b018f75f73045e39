#!/usr/bin/env python3
"""Static Kubernetes checks for kfx (no cluster can run here). Run by `make k8s-check`
with the tools venv (.tools/venv: kubernetes-validate, checkov, kubeflow-training):

  1 chart      helm lint --strict and helm template (real helm v4), values.schema.json
               rejects bad values
  2 manifests  manifests/ is in sync with the chart; kubectl kustomize builds the
               standalone overlay (with the compiled IR)
  3 k8s        every rendered object validates against the Kubernetes 1.33 schemas
               (kubernetes-validate --strict: unknown fields fail)
  4 tfjob      TFJobs from components/distributed_train/tfjob.py validate against the
               Training Operator SDK models (unknown fields/types fail) and their pod
               templates against the Kubernetes Pod schema
  5 argocd     gitops/ Applications/AppProject validate against the Argo CD CRD schema
               (npm @kubernetes-models/argo-cd)
  6 checkov    checkov over the rendered chart and the built manifests: 0 failed checks,
               skips only with an inline justification

usage: check.py [--ir PIPELINE.yaml] [--only STEP ...] [--out build/k8s]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("KFX_TOOLS_DIR", ROOT / ".tools"))
HELM, KUBECTL = str(TOOLS / "bin" / "helm"), str(TOOLS / "bin" / "kubectl")
CHART = ROOT / "helm" / "kfx"
K8S_VERSION = "1.33.0"
CRD_KINDS = {("kubeflow.org/v1", "TFJob"), ("argoproj.io/v1alpha1", "Application"),
             ("argoproj.io/v1alpha1", "AppProject"),
             # its CRD schema cannot be fetched here: rendered and scanned, not schema-validated
             ("flink.apache.org/v1beta1", "FlinkDeployment")}
STEPS = ("chart", "manifests", "k8s", "tfjob", "argocd", "checkov")
# Stands for the operator's kube-apiserver endpoint address (values networkPolicies.apiServerCIDRs,
# docs/deploy.md step 5); the chart has no default, so the main render names one.
API_SERVER_CIDR = "172.16.0.2/32"


class CheckFailed(Exception):
    pass


def run(cmd, **kw) -> str:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise CheckFailed(f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    return p.stdout


def docs_of(text: str) -> list:
    return [d for d in yaml.safe_load_all(text) if d]


# ------------------------------------------------------------------ 1 chart
def api_server_blocks(text: str) -> list:
    """The ipBlock CIDRs of every rendered NetworkPolicy egress rule."""
    return sorted(b["ipBlock"]["cidr"] for d in docs_of(text) if d["kind"] == "NetworkPolicy"
                  for rule in d["spec"].get("egress") or [] for b in rule.get("to") or [] if "ipBlock" in b)


def check_chart(ir: Path, out: Path, summary: dict) -> None:
    api = ["--set", f"networkPolicies.apiServerCIDRs={{{API_SERVER_CIDR}}}"]
    run([HELM, "lint", "--strict", CHART, "--namespace", "kfx", "--set-file", f"pipeline.ir={ir}", *api])
    run([HELM, "lint", "--strict", CHART, "--namespace", "kfx"])            # without an IR, defaults
    rendered = run([HELM, "template", "kfx", CHART, "--namespace", "kfx", "--set-file", f"pipeline.ir={ir}",
                    "--set", "pipeline.required=true", *api])
    (out / "chart.yaml").write_text(rendered)
    if api_server_blocks(rendered) != [API_SERVER_CIDR]:
        raise CheckFailed(f"API-server egress: expected only {API_SERVER_CIDR}, got {api_server_blocks(rendered)}")
    default = run([HELM, "template", "kfx", CHART, "--namespace", "kfx"])
    if api_server_blocks(default):
        raise CheckFailed(f"the default values open egress to {api_server_blocks(default)}")
    register = [d for d in docs_of(rendered) if d["kind"] == "Job" and d["metadata"]["name"] == "kfx-register-pipeline"]
    if not register or not register[0]["spec"]["template"]["spec"]["containers"][0]["image"].endswith(
            "/kfx-cli:" + yaml.safe_load((CHART / "values.yaml").read_text())["image"]["tag"]):
        raise CheckFailed("the registration Job must run the kfx-cli image (python -m kfx.submit)")
    variants = {
        "external-s3": ["--set", "minio.enabled=false", "--set", "s3.externalEndpoint=s3.example.internal:9000",
                        "--set", "s3.secure=true"],
        "no-netpol-no-quota": ["--set", "networkPolicies.enabled=false", "--set", "acceleratorQuota.enabled=false",
                               "--set", "kfp.manageLauncherConfig=false"],
        "private-registry": ["--set", "image.registry=registry.example.internal/ml", "--set", "image.tag=1.2.3",
                             "--set", "image.pullSecrets[0].name=regcred"],
        "flink": ["--set", "flink.enabled=true"],   # the distributed Beam runner (compile profile flink)
    }
    for name, extra in variants.items():
        (out / f"chart-{name}.yaml").write_text(
            run([HELM, "template", "kfx", CHART, "--namespace", "kfx", "--set-file", f"pipeline.ir={ir}", *extra]))
    rejected = {
        "credential in values": ["--set", "s3.secretKey=abc"],
        "bad image tag": ["--set", "image.tag=has space"],
        "5-field cron": ["--set", "pipeline.recurringRun.cron=0 3 * * *"],
        "unknown node pool field": ["--set", "nodePools.gpu.count=2"],
        "gpu pool labels (placement is compiled into the IR)": ["--set", "nodePools.gpu.labels.a=b"],
        "API server egress to 0.0.0.0/0": ["--set", "networkPolicies.apiServerCIDRs={0.0.0.0/0}"],
        "API server egress to ::/0": ["--set", "networkPolicies.apiServerCIDRs={::/0}"],
        "API server egress to a /4": ["--set", "networkPolicies.apiServerCIDRs={16.0.0.0/4}"],
    }
    for what, extra in rejected.items():
        p = subprocess.run([HELM, "template", "kfx", str(CHART), *extra], capture_output=True, text=True)
        if p.returncode == 0 or "values don't meet the specifications of the schema" not in p.stderr:
            raise CheckFailed(f"values.schema.json accepted {what}: {p.stderr[-500:]}")
    p = subprocess.run([HELM, "template", "kfx", str(CHART), "--set", "pipeline.required=true"],
                       capture_output=True, text=True)
    if p.returncode == 0 or "no compiled IR" not in p.stderr:
        raise CheckFailed("pipeline.required=true without an IR should fail the render")
    # the registration Job's parameters must be inputs of the compiled pipeline
    spec = docs_of(ir.read_text())[0]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if spec.get("pipelineInfo", {}).get("name") == values["pipeline"]["name"]:
        inputs = set(((spec["root"].get("inputDefinitions") or {}).get("parameters") or {}))
        unknown = set(values["pipeline"]["parameters"]) - inputs
        if unknown:
            raise CheckFailed(f"chart pipeline.parameters not in the pipeline's inputs: {sorted(unknown)}")
    summary["chart"] = {"objects": len(docs_of(rendered)), "variants": len(variants),
                        "schema_rejections": len(rejected) + 1}


# ------------------------------------------------------------------ 2 manifests
def check_manifests(ir: Path, out: Path, summary: dict) -> None:
    shutil.copyfile(ir, ROOT / "manifests" / "register" / "pipeline.yaml")
    built = run([KUBECTL, "kustomize", ROOT / "manifests" / "overlays" / "standalone"])
    (out / "manifests.yaml").write_text(built)
    kinds = sorted({d["kind"] for d in docs_of(built)})
    flink = run([KUBECTL, "kustomize", ROOT / "manifests" / "flink"])
    (out / "manifests-flink.yaml").write_text(flink)
    summary["manifests"] = {"objects": len(docs_of(built)), "kinds": kinds,
                            "flink_kinds": sorted({d["kind"] for d in docs_of(flink)})}
    run([sys.executable, ROOT / "manifests" / "generate.py", HELM, "--check"])


# ------------------------------------------------------------------ 3 k8s
def check_k8s(out: Path, summary: dict) -> None:
    import kubernetes_validate
    counted = {}
    for name in sorted(out.glob("chart*.yaml")) + sorted(out.glob("manifests*.yaml")):
        n = 0
        for d in docs_of(name.read_text()):
            if (d.get("apiVersion"), d.get("kind")) in CRD_KINDS:
                continue
            try:
                kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            except Exception as exc:  # noqa: BLE001 - ValidationError / SchemaNotFound
                raise CheckFailed(f"{name.name}: {d['kind']}/{d['metadata']['name']}: {exc}") from exc
            n += 1
        counted[name.name] = n
    summary["k8s"] = {"version": K8S_VERSION, "strict": True, "validated": counted,
                      "total": sum(counted.values())}


# ------------------------------------------------------------------ 4 tfjob
def _load_tfjob_module():
    spec = importlib.util.spec_from_file_location(
        "kfx_tfjob", ROOT / "components" / "distributed_train" / "tfjob.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def strict_model_check(value, type_name: str, where: str, models) -> None:
    """Validate a JSON value against an OpenAPI-generated model type (unknown keys fail)."""
    if value is None:
        return
    m = re.fullmatch(r"list\[(.+)\]", type_name)
    if m:
        if not isinstance(value, list):
            raise CheckFailed(f"{where}: expected a list")
        for i, v in enumerate(value):
            strict_model_check(v, m.group(1), f"{where}[{i}]", models)
        return
    m = re.fullmatch(r"dict\(str, (.+)\)", type_name)
    if m:
        if not isinstance(value, dict):
            raise CheckFailed(f"{where}: expected an object")
        for k, v in value.items():
            strict_model_check(v, m.group(1), f"{where}.{k}", models)
        return
    simple = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object,
              "datetime": str, "date": str}
    if type_name in simple:
        if not isinstance(value, simple[type_name]) or (type_name == "int" and isinstance(value, bool)):
            raise CheckFailed(f"{where}: expected {type_name}, got {value!r}")
        return
    cls = getattr(models, type_name, None)
    if cls is None:
        raise CheckFailed(f"{where}: unknown model {type_name}")
    if not isinstance(value, dict):
        raise CheckFailed(f"{where}: expected a {type_name} object")
    json_to_attr = {j: a for a, j in cls.attribute_map.items()}
    for k, v in value.items():
        if k not in json_to_attr:
            raise CheckFailed(f"{where}: unknown field {k!r} in {type_name}")
        strict_model_check(v, cls.openapi_types[json_to_attr[k]], f"{where}.{k}", models)


def validate_tfjob(job: dict) -> None:
    import kubeflow.training.models as models
    import kubernetes_validate
    strict_model_check(job, "KubeflowOrgV1TFJob", "TFJob", models)
    if (job.get("apiVersion"), job.get("kind")) != ("kubeflow.org/v1", "TFJob"):
        raise CheckFailed("not a kubeflow.org/v1 TFJob")
    spec = job["spec"]
    if spec.get("successPolicy", "") not in ("", "AllWorkers"):
        raise CheckFailed(f"successPolicy {spec['successPolicy']!r}")
    if spec["runPolicy"].get("cleanPodPolicy", "None") not in ("All", "Running", "None"):
        raise CheckFailed("cleanPodPolicy")
    for rtype, rs in spec["tfReplicaSpecs"].items():
        if rtype not in ("Chief", "Master", "PS", "Worker", "Evaluator"):
            raise CheckFailed(f"replica type {rtype!r}")
        if rs.get("restartPolicy") not in ("Always", "OnFailure", "Never", "ExitCode"):
            raise CheckFailed(f"restartPolicy {rs.get('restartPolicy')!r}")
        if not isinstance(rs.get("replicas"), int) or rs["replicas"] < 1:
            raise CheckFailed("replicas")
        tpl = rs["template"]
        if not any(c["name"] == "tensorflow" for c in tpl["spec"]["containers"]):
            raise CheckFailed("the Training Operator needs a container named 'tensorflow'")
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": dict(tpl.get("metadata") or {}, name=f"{job['metadata']['name']}-{rtype.lower()}-0",
                                namespace=job["metadata"]["namespace"]),
               "spec": tpl["spec"]}
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def check_tfjob(out: Path, summary: dict) -> None:
    tj = _load_tfjob_module()
    gpu = dict(resources={"requests": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
                          "limits": {"cpu": "4", "memory": "12Gi", "nvidia.com/gpu": "1"}},
               node_selector={"kfx.dev/node-pool": "gpu"},
               tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    tpu = dict(resources={"requests": {"google.com/tpu": "1"}, "limits": {"google.com/tpu": "1"}},
               node_selector={"kfx.dev/node-pool": "tpu",
                              "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
                              "cloud.google.com/gke-tpu-topology": "1x1"},
               tolerations=[{"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"}])
    secret_env = [{"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {
        "name": "kfx-s3-credentials", "key": "AWS_ACCESS_KEY_ID"}}}]
    jobs = [
        tj.build_tfjob("kfx-train-cpu", "kubeflow", "kfx/kfx-distributed-train:0.1.0",
                       ["python", "-m", "kfx_components.distributed_train.worker"], ["--epochs", "8"], workers=2),
        tj.build_tfjob("kfx-train-gpu", "kubeflow", "kfx/kfx-distributed-train:0.1.0", ["python", "-m", "w"],
                       workers=4, env={"KFX_S3_SECURE": "0"}, env_value_from=secret_env,
                       service_account="kfx-pipeline-runner", active_deadline_seconds=28800,
                       owner_pod={"name": "kfx-tabular-xyz-1234", "uid": "5f0c-uid"}, **gpu),
        tj.build_tfjob("kfx-train-tpu", "kubeflow", "kfx/kfx-distributed-train:0.1.0", ["python", "-m", "w"],
                       workers=2, env_from_config_maps=["kfx-s3-config"], **tpu),
    ]
    for j in jobs:
        validate_tfjob(j)
    # a broken object must be caught
    bad = json.loads(json.dumps(jobs[0]))
    bad["spec"]["tfReplicaSpecs"]["Worker"]["replica"] = 2
    try:
        validate_tfjob(bad)
    except CheckFailed:
        pass
    else:
        raise CheckFailed("the TFJob check accepted an unknown field")
    (out / "tfjob.yaml").write_text("---\n".join(yaml.safe_dump(j, sort_keys=False) for j in jobs))
    summary["tfjob"] = {"validated": len(jobs), "against": "kubeflow-training 1.9.4 models + Pod schema "
                        + K8S_VERSION}


# ------------------------------------------------------------------ 5 argocd
ARGO_JS = r"""
import { Application } from "@kubernetes-models/argo-cd/argoproj.io/v1alpha1/Application";
import { AppProject } from "@kubernetes-models/argo-cd/argoproj.io/v1alpha1/AppProject";
import fs from "node:fs";
const docs = JSON.parse(fs.readFileSync(0, "utf8"));
const kinds = { Application, AppProject };
let bad = 0;
for (const d of docs) {
  const K = kinds[d.kind];
  if (!K || d.apiVersion !== "argoproj.io/v1alpha1") { console.log(`SKIP ${d.kind}`); bad++; continue; }
  try { new K(d).validate(); console.log(`OK ${d.kind}/${d.metadata.name}`); }
  catch (e) { console.log(`FAIL ${d.kind}/${d.metadata.name}: ${e.message}`); bad++; }
}
process.exit(bad ? 1 : 0);
"""


def argocd_validate(docs: list) -> str:
    node_dir = TOOLS / "node"
    script = node_dir / "validate-argocd.mjs"
    script.write_text(ARGO_JS)
    p = subprocess.run(["node", str(script)], input=json.dumps(docs), capture_output=True, text=True,
                       cwd=node_dir)
    if p.returncode != 0:
        raise CheckFailed(f"Argo CD schema validation failed:\n{p.stdout}{p.stderr[-2000:]}")
    return p.stdout


def check_argocd(out: Path, summary: dict) -> None:
    docs = []
    for f in sorted((ROOT / "gitops").rglob("*.yaml")):
        docs += docs_of(f.read_text())
    argocd_validate(docs)
    # a wrong type must be caught
    bad = json.loads(json.dumps(next(d for d in docs if d["kind"] == "Application")))
    bad["spec"].setdefault("syncPolicy", {})["automated"] = {"prune": "yes"}
    try:
        argocd_validate([bad])
    except CheckFailed:
        pass
    else:
        raise CheckFailed("the Argo CD check accepted a string for a boolean")
    apps = [d for d in docs if d["kind"] == "Application"]
    for a in apps:
        if "argocd.argoproj.io/sync-wave" not in (a["metadata"].get("annotations") or {}):
            raise CheckFailed(f"Application {a['metadata']['name']} has no sync wave")
        for src in a["spec"].get("sources") or [a["spec"]["source"]]:
            if "helm" in src and src.get("path"):
                if not (ROOT / src["path"] / "Chart.yaml").exists():
                    raise CheckFailed(f"Application {a['metadata']['name']}: no chart at {src['path']}")
    summary["argocd"] = {"validated": len(docs), "applications": len(apps)}


# ------------------------------------------------------------------ 6 checkov
def check_checkov(out: Path, summary: dict) -> None:
    scan = out / "scan"
    shutil.rmtree(scan, ignore_errors=True)
    scan.mkdir(parents=True)
    n = 0
    for src in ("chart.yaml", "chart-flink.yaml", "manifests.yaml", "manifests-flink.yaml", "tfjob.yaml"):
        if not (out / src).exists():
            continue
        for d in docs_of((out / src).read_text()):
            if d["kind"] == "ConfigMap" and "pipeline.yaml" in (d.get("data") or {}):
                # checkov's YAML loader mis-parses a multi-document IR inside a block scalar;
                # the IR is data, not configuration, so the scan sees a stub in its place.
                d = json.loads(json.dumps(d))
                d["data"]["pipeline.yaml"] = "compiled KFP IR (elided for the scan)"
            n += 1
            (scan / f"{src[:-5]}-{n:03d}-{d['kind'].lower()}-{d['metadata']['name']}.yaml").write_text(
                yaml.safe_dump(d, sort_keys=False))
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_NO_OUTPUT_COLORS="1", LOG_LEVEL="WARNING")
    p = subprocess.run([str(TOOLS / "venv" / "bin" / "checkov"), "-d", str(scan), "--framework", "kubernetes",
                        "--skip-download", "--compact", "-o", "json"],
                       capture_output=True, text=True, env=env)
    try:
        report = json.loads(p.stdout)
    except ValueError as exc:
        raise CheckFailed(f"checkov produced no JSON (exit {p.returncode}): {p.stderr[-2000:]}") from exc
    reports = report if isinstance(report, list) else [report]
    res = {"passed": 0, "failed": 0, "skipped": 0, "resources": 0, "parsing_errors": 0}
    failed, skipped = [], []
    for r in reports:
        s = r.get("summary", r)
        for k in ("passed", "failed", "skipped", "parsing_errors"):
            res[k] += s.get(k, 0)
        res["resources"] += s.get("resource_count", 0)
        results = r.get("results", {})
        failed += [f"{c['check_id']} {c['check_name']} @ {c['resource']} ({Path(c['file_path']).name})"
                   for c in results.get("failed_checks", [])]
        skipped += [f"{c['check_id']} @ {c['resource']}: {(c.get('check_result') or {}).get('suppress_comment', '')}"
                    for c in results.get("skipped_checks", [])]
    if res["resources"] < n - 1:
        raise CheckFailed(f"checkov parsed {res['resources']} of {n} objects")
    summary["checkov"] = dict(res, objects_written=n, skipped_detail=sorted(set(skipped)))
    if failed or res["parsing_errors"]:
        raise CheckFailed("checkov failed checks:\n  " + "\n  ".join(failed))
    unjustified = [s for s in skipped if s.rstrip().endswith(":")]
    if unjustified:
        raise CheckFailed("checkov skips without a justification:\n  " + "\n  ".join(unjustified))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ir", default=str(ROOT / "build" / "k8s" / "pipeline.yaml"))
    ap.add_argument("--out", default=str(ROOT / "build" / "k8s"))
    ap.add_argument("--only", nargs="*", choices=STEPS)
    a = ap.parse_args(argv)
    out, ir = Path(a.out), Path(a.ir)
    out.mkdir(parents=True, exist_ok=True)
    if not ir.exists():
        print(f"no compiled IR at {ir}: run `make k8s-ir` first", file=sys.stderr)
        return 2
    summary = {"ir": str(ir)}
    steps = a.only or STEPS
    fns = {"chart": lambda: check_chart(ir, out, summary), "manifests": lambda: check_manifests(ir, out, summary),
           "k8s": lambda: check_k8s(out, summary), "tfjob": lambda: check_tfjob(out, summary),
           "argocd": lambda: check_argocd(out, summary), "checkov": lambda: check_checkov(out, summary)}
    rc = 0
    for step in STEPS:
        if step not in steps:
            continue
        t0 = time.monotonic()
        try:
            fns[step]()
            status = "ok"
        except CheckFailed as exc:
            status, rc = f"FAILED\n{exc}", 1
        print(f"[{step}] {status} ({time.monotonic() - t0:.1f}s) {json.dumps(summary.get(step, {}))}", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"k8s-check: {'passed' if rc == 0 else 'FAILED'}; summary in {out / 'summary.json'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
