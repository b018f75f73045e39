#!/usr/bin/env bash
# Build the kfx serving image (images/serve/Dockerfile) from a staged context, the way
# images/build.py builds the stage images: only the files that go into the image reach the engine.
#   bash images/serve/build.sh            -> $KFX_IMAGE_REGISTRY/kfx-serve:$TAG and :$VERSION-$HASH
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REG="${KFX_IMAGE_REGISTRY:-kfx}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -1)"
TAG="${KFX_IMAGE_TAG:-$VERSION}"
BASE="${BASE_IMAGE:-kfx/python-base:3.11-bookworm}"
CA="${KFX_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
CTX="$ROOT/build/images/ctx/serve"
rm -rf "$CTX" && mkdir -p "$CTX" "$ROOT/build/images/logs"
cp "$ROOT/images/serve/Dockerfile" "$CTX/Dockerfile"
cp "$ROOT/requirements/serving.lock" "$CTX/requirements.lock"
mkdir -p "$CTX/kfx_serving" && cp "$ROOT"/serving/kfx_serving/*.py "$CTX/kfx_serving/"
mkdir -p "$CTX/kfx_formats" && cp "$ROOT"/formats/*.py "$CTX/kfx_formats/"   # import name kfx_formats (pyproject)
HASH="$( (cd "$CTX" && find . -type f -print0 | sort -z | xargs -0 sha256sum; echo "$BASE") | sha256sum | cut -c1-12)"
if [[ -f "$CA" ]]; then cp "$CA" "$CTX/host-ca.crt"; else : > "$CTX/host-ca.crt"; fi
find "$CTX" -type f -exec chmod 0644 {} +
if docker image inspect "$REG/kfx-serve:$VERSION-$HASH" >/dev/null 2>&1; then
  docker tag "$REG/kfx-serve:$VERSION-$HASH" "$REG/kfx-serve:$TAG"
  echo "images: kfx-serve up to date ($REG/kfx-serve:$VERSION-$HASH)" >&2; exit 0
fi
start=$(date +%s)
DOCKER_BUILDKIT=0 docker build --network host --build-arg "BASE_IMAGE=$BASE" --build-arg "VERSION=$VERSION" \
  --build-arg "CONTENT_HASH=$HASH" -t "$REG/kfx-serve:$TAG" -t "$REG/kfx-serve:$VERSION-$HASH" "$CTX" \
  > "$ROOT/build/images/logs/serve.log" 2>&1 || { tail -40 "$ROOT/build/images/logs/serve.log"; exit 1; }
echo "images: built kfx-serve in $(( $(date +%s) - start ))s -> $REG/kfx-serve:$TAG" >&2
