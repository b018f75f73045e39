# Benchmarks (issue 14, target 7). Included from the Makefile: `include bench/bench.mk`.
#   make bench        every benchmark; rewrites the generated blocks and plots of docs/benchmarks.md
#                     (and, bench/gates.py, the statistical gates' block of docs/reliability.md)
#   make bench-smoke  every method of every benchmark on tiny inputs, writes nothing, each checked
#                     by its test (tests/test_bench_*smoke.py, the bench-marked ones included; ~45 min)
BENCH_PYTHON ?= .venv/bin/python
BENCH_ARGS ?=

.PHONY: bench bench-smoke bench-gates
bench:
	$(BENCH_PYTHON) bench/all.py $(BENCH_ARGS)

bench-smoke:
	$(BENCH_PYTHON) -m pytest -q -rfEs tests/test_bench_smoke.py tests/test_bench_scale_smoke.py \
	  $(wildcard tests/test_bench_columns_smoke.py tests/test_bench_tfx_smoke.py tests/test_bench_families_smoke.py) \
	  $(PYTEST_ARGS)

# Tables in the wild (issue 20): generated and real public tables through the whole `kfx run`;
# rewrites its block of docs/reliability.md. WILD_ARGS e.g. --generated 40 --real ''.
WILD_ARGS ?=
.PHONY: bench-wild
bench-wild:
	$(BENCH_PYTHON) bench/wild.py $(WILD_ARGS)

# The statistical gates alone (~6 min): false alarms and detection per sample size, docs/reliability.md
bench-gates:
	$(BENCH_PYTHON) bench/gates.py $(BENCH_ARGS)

# kfx ui with 100 / 1,000 / 5,000 run records (~5 min): Runs page time and server memory,
# the blocks of docs/ui.md and docs/benchmarks.md. UI_ARGS e.g. --sizes 100,1000 --no-doc.
UI_ARGS ?=
.PHONY: bench-ui
bench-ui:
	$(BENCH_PYTHON) bench/ui.py $(UI_ARGS)
