# nimbus-websocket developer entry points.  `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

VENV      := .venv
PY        := $(VENV)/bin/python
DIST_DIR  := build/pyodide-dist
# Pyodide tests run on Node and Debian Chromium (Playwright, no browser
# download); all other tests in the same invocation run on the host as usual.
PYODIDE_OPTS := --dist-dir=$(DIST_DIR) --runtime=node,chrome --runner=playwright
# Two workers (this machine's 2 cores), whole files per worker: module fixtures
# (one server or page per file) stay shared. `make pytest PYTEST_ARGS=-n0` runs serially.
PYTEST_XDIST ?= -n 2 --dist loadfile
PYTEST_ARGS  ?=

.PHONY: help setup test lint typecheck pytest pyodide-smoke demo stress bench clean

help:
	@echo "make setup   - system packages, .venv, npm ci, wheel, $(DIST_DIR) (idempotent)"
	@echo "make test    - setup, ruff, mypy --strict (all packages), pytest (host + Pyodide node/chrome)"
	@echo "make demo    - setup, then serve the demo (scripts/demo.sh; ARGS=... for nimbus-ws serve)"
	@echo "make stress  - pytest -m stress"
	@echo "make bench   - every benchmark (bench/run.py) -> docs/benchmarks.md/json"
	@echo "make pyodide-smoke - boot Pyodide from $(DIST_DIR) in Node and import the wheel"

setup:
	@bash scripts/setup.sh

lint:
	$(VENV)/bin/ruff check .

# mypy --strict on the three packages as installed (core, web_runtime, node_runtime).
typecheck:
	@bash scripts/typecheck.sh

pytest:
	$(VENV)/bin/pytest tests $(PYODIDE_OPTS) $(PYTEST_XDIST) $(PYTEST_ARGS)

test: setup
	@$(MAKE) --no-print-directory lint typecheck pytest

pyodide-smoke: setup
	node scripts/node_smoke.mjs $(DIST_DIR)

# Builds build/site (page + xterm.js + facade + Pyodide) and serves it with the
# reference server: http://127.0.0.1:8765/ (PTY backend). ARGS go to `nimbus-ws serve`.
demo: setup
	NIMBUS_SKIP_SETUP=1 bash scripts/demo.sh $(ARGS)

# Long runs marked @pytest.mark.stress (excluded by default addopts): chaos with
# 1000 cuts, 100k+ fuzz cases, 200 streaming / 1000 idle connections.  Figures
# land in build/reliability-figures.jsonl (see docs/reliability.md).
stress: setup
	@bash scripts/stress.sh $(PYODIDE_OPTS) $(PYTEST_ARGS)

# Every benchmark (bench/run.py): writes docs/benchmarks.md + docs/benchmarks.json
# (~6 min on 2 cores). BENCH_ARGS=--quick for a smoke run (build/bench-quick.*).
BENCH_ARGS ?=
bench: setup
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf build
