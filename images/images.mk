# kfx stage images. Included from the top Makefile (`include images/images.mk`);
# usable alone too: `make -f images/images.mk images`.
#
#   make images          engine up, parent image if needed, build every stage image and kfx-cli, tag them
#   make images-gpu      the same on a CUDA TF runtime (tf-runtime-gpu.lock), tagged <version>-gpu;
#                        NOT built or tested on the build machine (no GPU, several GB of CUDA wheels)
#   make images-sizes    measure sizes and distinct-layer bytes, write them into docs/images.md
#   make images-test     tests/images (docker-marked) against the built images
#   make images-names    print the stage image names the compiled IR refers to, and kfx-cli
#   make images-lock     recompile requirements/images/*.lock against requirements/stack.lock
#   make images-clean    remove the stage, runtime images and build/images (keeps the parent)
#
# Variables (environment or command line):
#   KFX_IMAGE_REGISTRY  registry/prefix of every image name          (default kfx)
#   KFX_IMAGE_TAG       tag of the stage images                      (default: the kfx package version)
#   BASE_IMAGE          parent of every image; python:3.11-slim where a registry can be reached,
#                       here the Debian-built kfx/python-base:3.11-bookworm (scripts/base-image.sh)
#   PYTHON              a Python 3.11 to drive the build (stdlib only) (default .venv/bin/python)
#   KFX_IMAGE_JOBS      parallel stage image builds                  (default 2)
#   KFX_IMAGE_NO_CACHE  1: build with --no-cache (measure a cold build without deleting images)
#
# Images: $(KFX_IMAGE_REGISTRY)/kfx-<stage>:$(KFX_IMAGE_TAG) and :<version>-<content hash>;
# $(KFX_IMAGE_REGISTRY)/kfx-cli (the chart's registration Job: python -m kfx.submit) likewise;
# intermediates $(KFX_IMAGE_REGISTRY)/tf-runtime and $(KFX_IMAGE_REGISTRY)/push-runtime
# (and $(KFX_IMAGE_REGISTRY)/tf-runtime-gpu with images-gpu).

KFX_IMAGES_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
KFX_ROOT := $(abspath $(KFX_IMAGES_DIR)/..)

PYTHON ?= $(KFX_ROOT)/.venv/bin/python
BASE_IMAGE ?= kfx/python-base:3.11-bookworm
KFX_IMAGE_REGISTRY ?= kfx
KFX_IMAGE_JOBS ?= 2
export BASE_IMAGE KFX_IMAGE_REGISTRY KFX_IMAGE_JOBS
# KFX_IMAGE_TAG is passed on only when set: empty means "the package version".
ifneq ($(strip $(KFX_IMAGE_TAG)),)
export KFX_IMAGE_TAG
endif

KFX_IMAGES_PY := $(PYTHON) $(KFX_ROOT)/images/build.py
KFX_IMAGE_LOCKS := $(KFX_ROOT)/requirements/images

.PHONY: images images-gpu images-engine images-base images-sizes images-test images-names images-lock images-clean

images-engine:
	bash $(KFX_ROOT)/scripts/docker-engine.sh </dev/null

# The Debian-built parent only when BASE_IMAGE is it; any other parent is pulled by the engine.
images-base: images-engine
	@case "$(BASE_IMAGE)" in \
	  kfx/python-base:*) bash $(KFX_ROOT)/scripts/base-image.sh "$(BASE_IMAGE)" </dev/null ;; \
	  *) echo "images: parent $(BASE_IMAGE) (pulled by the engine if absent)" ;; \
	esac

images: images-base
	$(KFX_IMAGES_PY) build

# GPU set: TF stages on tf-runtime-gpu (tensorflow[and-cuda]); KFX_IMAGE_TAG defaults to <version>-gpu.
# Compile the pipeline with the same KFX_IMAGE_TAG and set image.tag in the chart to it.
images-gpu: images-base
	$(KFX_IMAGES_PY) build --gpu

images-sizes: images-engine
	$(KFX_IMAGES_PY) sizes --doc $(KFX_ROOT)/docs/images.md

images-names:
	@$(KFX_IMAGES_PY) names --all

images-test: images-engine
	cd $(KFX_ROOT) && $(PYTHON) -m pytest -q -m docker tests/images

images-lock:
	cd $(KFX_IMAGE_LOCKS) && uv pip compile -q --python-version 3.11 push.in -c ../stack.lock -o push.lock
	cd $(KFX_IMAGE_LOCKS) && uv pip compile -q --python-version 3.11 tf-runtime.in -c ../stack.lock \
	  --excludes tf-runtime.excludes -o tf-runtime.lock
	cd $(KFX_IMAGE_LOCKS) && uv pip compile -q --python-version 3.11 tf-runtime-gpu.in -c ../stack.lock \
	  --excludes tf-runtime.excludes -o tf-runtime-gpu.lock

images-clean:
	-docker image ls --format '{{.Repository}}:{{.Tag}}' \
	  | grep -E '^$(KFX_IMAGE_REGISTRY)/(kfx-[a-z-]+|tf-runtime|tf-runtime-gpu|push-runtime):' | xargs -r docker rmi
	rm -rf $(KFX_ROOT)/build/images
