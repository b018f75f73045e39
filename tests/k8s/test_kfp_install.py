"""The KFP installation kfx pins (manifests/kfp, gitops/apps/kfp*.yaml) and the kfp-launcher
ConfigMap's single owner.

KFP's own manifests ship a `kfp-launcher` ConfigMap; the kfx chart writes the one kfx runs
need. manifests/kfp/pipelines removes KFP's so the chart is the only owner (no Argo CD
selfHeal fight, no Helm ownership conflict). The upstream base is remote, so the patch is
built here with the real kubectl (kustomize) against a local stand-in of that base.
"""
import pathlib
import re
import subprocess

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
KUBECTL = REPO / ".tools" / "bin" / "kubectl"
PIPELINES = REPO / "manifests" / "kfp" / "pipelines" / "kustomization.yaml"
KFP_REMOTE = "https://github.com/kubeflow/pipelines//manifests/kustomize/env/platform-agnostic?ref="


def _docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_kfp_version_is_pinned_once():
    version = yaml.safe_load((REPO / "helm" / "kfx" / "values.yaml").read_text())["kfp"]["version"]
    kust = yaml.safe_load(PIPELINES.read_text())
    assert kust["resources"] == [KFP_REMOTE + version]
    scoped = yaml.safe_load((REPO / "manifests" / "kfp" / "cluster-scoped" / "kustomization.yaml").read_text())
    assert all(r.endswith(f"?ref={version}") for r in scoped["resources"])
    (app,) = _docs(REPO / "gitops" / "apps" / "kfp-cluster-scoped.yaml")
    assert app["spec"]["source"]["targetRevision"] == version
    assert "pipelines" in yaml.safe_load((REPO / "manifests" / "kfp" / "kustomization.yaml").read_text())["resources"]


def test_argocd_kfp_app_renders_the_patched_kustomization():
    (kfp,) = _docs(REPO / "gitops" / "apps" / "kfp.yaml")
    (kfx,) = _docs(REPO / "gitops" / "apps" / "kfx.yaml")
    src = kfp["spec"]["source"]
    assert src["path"] == "manifests/kfp/pipelines"
    assert (src["repoURL"], src["targetRevision"]) == (kfx["spec"]["source"]["repoURL"],
                                                      kfx["spec"]["source"]["targetRevision"])
    assert kfp["spec"]["syncPolicy"]["automated"]["selfHeal"] is True


def test_only_the_chart_writes_kfp_launcher():
    """No other kfx-controlled source defines a kfp-launcher ConfigMap."""
    owners = []
    for path in list((REPO / "manifests").rglob("*.yaml")) + list((REPO / "gitops").rglob("*.yaml")):
        for d in _docs(path):
            if d.get("kind") == "ConfigMap" and d.get("metadata", {}).get("name") == "kfp-launcher":
                owners.append(str(path.relative_to(REPO)))
    # manifests/base/platform.yaml is the chart's own rendering (manifests/generate.py)
    assert owners == ["manifests/base/platform.yaml"], owners
    text = (REPO / "helm" / "kfx" / "templates" / "pipeline-runs.yaml").read_text()
    assert len(re.findall(r"name: kfp-launcher\b", text)) == 1


@pytest.mark.skipif(not KUBECTL.exists(), reason="kubectl not installed: run `make k8s-tools`")
def test_patch_removes_kfps_launcher_config_and_nothing_else(tmp_path):
    base = tmp_path / "upstream"
    base.mkdir()
    # what KFP 2.x's platform-agnostic build emits for these objects (namespace kubeflow)
    (base / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: kubeflow\n"
        "resources: [objects.yaml]\n")
    (base / "objects.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kfp-launcher}\ndata: {defaultPipelineRoot: ''}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: pipeline-install-config}\ndata: {appName: pipeline}\n---\n"
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: kfp-launcher}\n")
    overlay = tmp_path / "pipelines"
    overlay.mkdir()
    text = PIPELINES.read_text()
    assert KFP_REMOTE in text
    (overlay / "kustomization.yaml").write_text(re.sub(re.escape(KFP_REMOTE) + r"\S+", "../upstream", text))
    out = subprocess.run([str(KUBECTL), "kustomize", str(overlay)], check=True, capture_output=True,
                         text=True).stdout
    kept = sorted((d["kind"], d["metadata"]["name"], d["metadata"]["namespace"])
                  for d in yaml.safe_load_all(out) if d)
    assert kept == [("ConfigMap", "pipeline-install-config", "kubeflow"),
                    ("ServiceAccount", "kfp-launcher", "kubeflow")]
    # and a KFP version without the ConfigMap builds unchanged
    (base / "objects.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: pipeline-install-config}\ndata: {appName: pipeline}\n")
    subprocess.run([str(KUBECTL), "kustomize", str(overlay)], check=True, capture_output=True)
