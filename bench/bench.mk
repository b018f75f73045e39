# Benchmarks (issue 14, target 7). Included from the Makefile: `include bench/bench.mk`.
#   make bench        every benchmark; rewrites the generated blocks and plots of docs/benchmarks.md
#   make bench-smoke  tiny inputs, writes nothing: checks every benchmark runs (also in tests/)
BENCH_PYTHON ?= .venv/bin/python
BENCH_ARGS ?=

.PHONY: bench bench-smoke
bench:
	$(BENCH_PYTHON) bench/all.py $(BENCH_ARGS)

bench-smoke:
	$(BENCH_PYTHON) bench/all.py --smoke $(BENCH_ARGS)
