# kfx: `make run` runs the whole lifecycle on the bundled Chicago taxi data;
# `make test` runs every test. Both set up what they need on a fresh machine.
SHELL := /bin/bash
PYTHON_BOOT ?= python3.11
VENV ?= .venv
PYTHON := $(VENV)/bin/python
KFX := $(VENV)/bin/kfx
ROOT ?= runs/taxi
CONFIG ?= pipelines/configs/chicago_taxi.yaml
PROFILE ?= cpu
PYTEST_ARGS ?=
export UV_NATIVE_TLS := 1

.PHONY: venv run compile test test-fast clean browser

include images/images.mk
include deploy/k8s.mk
include serving/serving.mk
include bench/bench.mk
include bench/tfx.mk

# The image build is driven by the venv's Python; kfx-infra-validate copies the serve image's venv.
images: venv serving-image

# The venv from the pinned lock; rebuilt when the lock or the package metadata changes.
$(VENV)/.installed: requirements/stack.lock pyproject.toml
	test -x $(PYTHON) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PYTHON) -m pip --version >/dev/null 2>&1 || $(PYTHON) -m ensurepip >/dev/null
	$(PYTHON) -m pip install -q --disable-pip-version-check uv==0.13.9
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PYTHON) -r requirements/stack.lock
	$(VENV)/bin/uv pip install -q --python $(PYTHON) --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# The serving venv: infra validation loads the candidate in the serving runtime before push.
run: venv serving-venv
	$(KFX) run --config $(CONFIG) --root $(ROOT)

compile: venv
	$(KFX) compile --config $(CONFIG) --profile $(PROFILE) -o build/pipeline-$(PROFILE).yaml

# Everything the tests use is set up here: the venv (with the S3 server, moto),
# helm/kubectl/checkov, a Docker engine and the stage images, the serving venv, image and
# nginx.
# KFX_NO_SKIP=1: a test that would skip for want of a tool fails instead (tests/conftest.py).
# A real headless browser for the page checks (Debian's chromium; playwright drives it).
browser:
	@test -x /usr/bin/chromium || { apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; }
	@/usr/bin/chromium --version

# The benches' whole-pipeline smokes (marker bench, ~45 min) are left to make bench-smoke; the
# seconds-long checks that every bench still binds to today's pipeline stay here.
test: venv k8s-tools images serving-test-deps browser
	KFX_NO_SKIP=1 $(VENV)/bin/pytest -q -rfEs --durations=40 -m "not bench" $(PYTEST_ARGS)

# Everything but the end-to-end runs.
test-fast: venv
	$(VENV)/bin/pytest -q -m "not e2e" $(PYTEST_ARGS)

clean:
	rm -rf runs build
