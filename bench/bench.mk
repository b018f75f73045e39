# Benchmarks (issue 14, target 7). Included from the Makefile: `include bench/bench.mk`.
#   make bench        every benchmark; rewrites the generated blocks and plots of docs/benchmarks.md
#                     (and, bench/gates.py, the statistical gates' block of docs/reliability.md)
#   make bench-smoke  tiny inputs, writes nothing: checks every benchmark runs (also in tests/)
BENCH_PYTHON ?= .venv/bin/python
BENCH_ARGS ?=

.PHONY: bench bench-smoke bench-gates
bench:
	$(BENCH_PYTHON) bench/all.py $(BENCH_ARGS)

bench-smoke:
	$(BENCH_PYTHON) bench/all.py --smoke $(BENCH_ARGS)

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
