# kfx serving targets (included from the top Makefile: `include serving/serving.mk`).
#
#   make serving-venv       .venv-serving from requirements/serving.lock (kserve 0.15.2 + TF 2.16.2), with
#                           serving/ on its path and formats/ linked as kfx_formats (kfx serve --executor
#                           process, the tests, the bench)
#   make serving-nginx      Debian's nginx (apt-get install nginx-light) if no nginx is installed
#   make serving-image      the serving image $(KFX_IMAGE_REGISTRY)/kfx-serve (images/serve/build.sh)
#   make serving-k8s-tools  Istio CRD models (npm @kubernetes-models/istio) in .tools/serving-node
#   make serving-test-deps  all four: what tests/serving needs (with k8s-tools for helm/checkov)
#   make serving-test       pytest tests/serving
#   make serving-lock       recompile requirements/serving.lock from requirements/serving.in
#   make serving-bench      bench/serving.py: writes docs/benchmarks.md between the serving markers
SERVING_VENV ?= .venv-serving
SERVING_PYTHON := $(SERVING_VENV)/bin/python
SERVING_BOOT ?= python3.11
SERVING_SITE = $$($(SERVING_PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

.PHONY: serving-venv serving-nginx serving-image serving-k8s-tools serving-test-deps serving-test serving-lock serving-bench

$(SERVING_VENV)/.installed: requirements/serving.lock
	test -x $(SERVING_PYTHON) || $(SERVING_BOOT) -m venv $(SERVING_VENV)
	$(SERVING_PYTHON) -m pip --version >/dev/null 2>&1 || $(SERVING_PYTHON) -m ensurepip >/dev/null
	$(SERVING_PYTHON) -m pip install -q --disable-pip-version-check uv==0.13.9
	$(SERVING_VENV)/bin/uv pip install -q --compile-bytecode --python $(SERVING_PYTHON) -r requirements/serving.lock
	echo "$(abspath serving)" > $(SERVING_SITE)/kfx-serving.pth
	touch $@

# kfx_formats (the formats the runtime shares with the platform) is the folder formats/: a .pth
# entry cannot rename a folder, a link can. Made on every call, so an existing venv gets it too.
serving-venv: $(SERVING_VENV)/.installed
	@ln -sfn "$(abspath formats)" $(SERVING_SITE)/kfx_formats

serving-nginx:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
	  (apt-get install -y -qq nginx-light >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null)) && \
	  { test -f /run/nginx.pid && kill $$(cat /run/nginx.pid) 2>/dev/null || true; }; }
	@/usr/sbin/nginx -v

serving-image: images-base
	bash images/serve/build.sh

serving-k8s-tools:
	@test -d .tools/serving-node/node_modules/@kubernetes-models/istio || { mkdir -p .tools/serving-node && \
	  cd .tools/serving-node && { test -f package.json || echo '{"name":"kfx-serving-tools","private":true}' > package.json; } && \
	  npm install --silent --no-audit --no-fund @kubernetes-models/istio@3.0.1 >/dev/null; }

serving-test-deps: serving-venv serving-nginx serving-image serving-k8s-tools

serving-test: venv serving-test-deps
	KFX_NO_SKIP=1 $(VENV)/bin/pytest -q -rfEs tests/serving

serving-lock:
	$(VENV)/bin/uv pip compile -q --python-version 3.11 requirements/serving.in -o requirements/serving.lock

serving-bench: venv serving-venv serving-nginx
	$(VENV)/bin/python bench/serving.py --doc docs/benchmarks.md
