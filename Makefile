# The two commands a newcomer needs:  make run  (the local platform)   make test  (everything CI checks)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
PIPENV_VERSION := 2026.10.3
export PIPENV_VENV_IN_PROJECT := 1
export PIPENV_IGNORE_VIRTUALENVS := 1
export PIPENV_VERBOSITY := -1
export PIPENV_NOSPIN := 1
# The Pipfile's source is ${PIP_INDEX_URL}; use the caller's, else pip's configured index, else pip's default.
PIP_INDEX_URL ?= $(shell $(PYTHON) -m pip config get global.index-url 2>/dev/null || \
	$(PYTHON) -c 'from pip._internal.models.index import PyPI; print(PyPI.simple_url)')
export PIP_INDEX_URL

VENV := .venv
PY := $(VENV)/bin/python

.PHONY: help install run demo test lint typecheck unit integration e2e build bench load clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# Installs pipenv and the locked dev dependencies on first use, and again whenever Pipfile.lock changes.
$(VENV)/.synced: Pipfile.lock
	$(PYTHON) -m pip install --quiet --disable-pip-version-check "pipenv==$(PIPENV_VERSION)"
	$(PYTHON) -m pipenv sync --dev
	touch $@

install: $(VENV)/.synced  ## install the locked dependencies into .venv

run: install  ## serve the local platform on the emulators until Ctrl-C
	$(PY) -m jupiter_data run

demo: install  ## start a private stack, drive sample traffic through it, check the outcome
	$(PY) -m jupiter_data demo

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: install
	$(PY) -m mypy

test: lint typecheck  ## ruff, mypy, then unit, integration and e2e tests
	$(PY) -m pytest tests

unit: install  ## unit tests only (no emulators or network)
	$(PY) -m pytest tests/unit

integration: install
	$(PY) -m pytest tests/integration

e2e: install
	$(PY) -m pytest tests/e2e

build: install  ## one reproducible archive per function under dist/
	$(PY) -m jupiter_data build

bench: install  ## run every benchmark, write bench/RESULTS.md (figures beside same-run baselines)
	@benches="pubsub_emulator stack_startup cold_start bridge loader amplitude_transform fetch_api"; \
	export BENCH_RESULTS=.local/bench-results.jsonl; \
	mkdir -p .local && rm -f "$$BENCH_RESULTS"; \
	failed=""; \
	for bench in $$benches; do \
		$(PY) bench/report.py run bench/$$bench.py || failed="$$failed $$bench"; \
	done; \
	$(PY) bench/report.py write --results "$$BENCH_RESULTS" --out bench/RESULTS.md \
		--expected $$benches --command "make bench" || failed="$${failed:- (see bench/RESULTS.md)}"; \
	if [ -n "$$failed" ]; then echo "make bench: FAILED:$$failed"; exit 1; fi

load: install  ## 60 s of steady SNS traffic through a private stack, then reconcile every message
	$(PY) bench/load.py

clean:  ## remove the virtualenv, local state and archives
	rm -rf $(VENV) .local dist .mypy_cache .ruff_cache .pytest_cache
