# kfx against TFX (issue 26, item 2). Include from the Makefile: `include bench/tfx.mk`.
#   make bench-tfx-venv  TFX 1.16.0 in a venv of its own (build/venv-tfx, gitignored), resolved with
#                        the main lock as constraints less the four pins TFX disagrees with
#   make bench-tfx       TFX's taxi pipeline (bench/tfx_taxi/, LocalDagRunner) and `kfx run` on the
#                        same rows, interleaved; rewrites the block of docs/benchmarks.md and
#                        docs/img/tfx_vs_kfx.png. TFX_ARGS e.g. --reps 1 --no-doc.
TFX_VENV ?= build/venv-tfx
TFX_VERSION ?= 1.16.0
TFX_ARGS ?=
# TFX 1.16 wants other versions of these than the main lock pins; everything else holds.
TFX_UNPINNED := tensorflow-hub|scikit-learn|scipy|kubernetes

$(TFX_VENV)/.installed: requirements/stack.lock bench/tfx.mk | venv
	test -x $(TFX_VENV)/bin/python || $(PYTHON_BOOT) -m venv $(TFX_VENV)
	grep -vE '^($(TFX_UNPINNED))==' requirements/stack.lock > $(TFX_VENV)/constraints.txt
	nice -n 19 $(VENV)/bin/uv pip install -q --compile-bytecode --python $(TFX_VENV)/bin/python \
	    -c $(TFX_VENV)/constraints.txt tfx==$(TFX_VERSION)
	touch $@

.PHONY: bench-tfx-venv bench-tfx
bench-tfx-venv: $(TFX_VENV)/.installed

bench-tfx: venv bench-tfx-venv
	nice -n 19 $(BENCH_PYTHON) bench/tfx_compare.py --tfx-python $(TFX_VENV)/bin/python $(TFX_ARGS)
