"""Every sweep file composes, expands to what its header says, meets the seeds the statistical standard
(docs/sweeps.md, "Designs that can decide") asks for, and runs no (config, seed) twice. The plan is read from the
files themselves (the sweep files and the Makefile's phase lists), never from a copy kept here."""
import os
import re
import subprocess
import tempfile
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
import yaml

from orthonoise.sweep import design as sweep_design
from orthonoise.sweep import rehearsal
from orthonoise.sweep.plan import ROOT, expand, plan
from orthonoise.sweep.regime import sweep_hardware
from orthonoise.validate import validate_settings

from .arms import generated_arms

TINY = list(rehearsal.TINY)  # the tiny preset's overrides, as `make ... PRESET=tiny` passes them
NO_HISTORY = Path("/nonexistent")
# the arms phases 3.2-confirm, 3.3 and 4 take from winners, generated as `make phase32-confirm` generates them
ARMS = generated_arms(Path(tempfile.mkdtemp(prefix="orthonoise-arms-")))


def phases() -> dict[str, list[str]]:
    """The Makefile's phase lists: PHASE32 := phase32_baseline phase32_alpha ..."""
    text = (ROOT / "Makefile").read_text()
    return {name: sweeps.split() for name, sweeps in re.findall(r"^(PHASE\w*) := (.*)$", text, re.M)}


SWEEPS = sorted(s for sweeps in phases().values() for s in sweeps)


def arms_of(sweep: str) -> list[str]:
    """The generated-arms override for a sweep whose arms come from winners (it names a *_best arm)."""
    return ARMS if "_best" in (ROOT / "sweeps" / f"{sweep}.yaml").read_text() else []


def world_size(hardware: str) -> int:
    """conf/hardware/<name>.yaml's world_size, following its defaults (h100x4 builds on h100)."""
    raw = yaml.safe_load((ROOT / "conf" / "hardware" / f"{hardware}.yaml").read_text())
    parents = [e for e in raw.get("defaults", []) if isinstance(e, str) and e != "_self_"]
    return raw.get("world_size") or world_size(parents[0])


@cache
def jobs_of(sweep: str):
    return plan(sweep, arms_of(sweep), history=NO_HISTORY)


def header(sweep: str) -> str:
    """The file's comment lines as one paragraph."""
    lines = (ROOT / "sweeps" / f"{sweep}.yaml").read_text().splitlines()
    return " ".join(line.lstrip("# ") for line in lines if line.startswith("#"))


def seeds_by_arm(jobs) -> dict[str, set]:
    arms: dict[str, set] = {}
    for job in jobs:
        arms.setdefault(job.arm, set()).add(job.seed)
    return arms


def test_every_grid_sweep_file_is_in_one_phase_of_the_makefile_or_a_control():
    controls = re.search(r"^CONTROLS := (.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    files = {p.stem for p in (ROOT / "sweeps").glob("*.yaml")} - {"optuna"}
    assert sorted(files) == sorted(SWEEPS + controls) and len(SWEEPS + controls) == len(set(SWEEPS + controls))


def test_the_makefiles_tiny_overrides_are_the_rehearsals():
    """`make phase* PRESET=tiny` and `make rehearsal` run the same tiny preset: one list, checked here."""
    makefile = re.search(r"^TINY := (.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    assert makefile == TINY

def test_the_sweep_block_is_written_once():
    """Run directories and the launch throttle live in sweeps/shared/; the sweep files include them."""
    for path in [*(ROOT / "sweeps").glob("*.yaml")]:
        body = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("#"))
        assert "outputs/sweeps" not in body and "max_batch_size" not in body, path.name
        assert ("- shared/grid" if path.stem != "optuna" else "- shared/run_dirs") in body, path.name


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweep_expands_to_what_its_header_says(sweep):
    jobs = expand(sweep, arms_of(sweep))
    stated = re.search(r"= (\d+)(?:–(\d+))? runs", header(sweep))
    assert stated, f"{sweep}: the header states its number of runs"
    assert int(stated.group(1)) <= len(jobs) <= int(stated.group(2) or stated.group(1))
    assert len({Path(cfg.hydra.sweep.dir) / cfg.hydra.sweep.subdir for _, cfg in jobs}) == len(jobs)
    phase = {"phase31": "3.1", "phase32": "3.2", "phase33": "3.3", "phase4": "4"}[re.match(r"phase\d+", sweep)[0]]
    for _, cfg in jobs:
        assert str(cfg.phase) == phase
        assert cfg.hydra.sweep.dir == f"outputs/sweeps/{sweep}"  # deterministic: a relaunch finds the same dirs
        # the hardware the file states (its own or its regime's), read from the YAML as the preflight's first line does
        hardware = sweep_hardware(sweep)
        assert (cfg.hardware.name, cfg.hardware.world_size) == (hardware, world_size(hardware))
        assert cfg.data.name == "fineweb-edu" and cfg.adamw.lr == 1e-4
        validate_settings(cfg)  # every job passes the checks train.py makes before any compute


def test_the_seeds_the_statistical_standard_asks_for():
    """docs/sweeps.md: 3.1: 3 per arm; 3.2: ≥ 3 per OrthoNoise config, 6 for the baseline; the confirmation: 5
    fresh seeds; 3.3: ≥ 5 per fine-tuning arm, ≥ 3 per from-scratch arm; phase 4: ≥ 3 per arm."""
    minimum = {"phase31": 3, "phase32_alpha": 3, "phase32_schedule": 3, "phase32_adaptive": 3,
               "phase32_baseline": 6, "phase32_confirm": 5, "phase33_finetune": 5, "phase33_scratch": 3,
               "phase4_350m": 3, "phase4_1b": 3}
    assert set(minimum) == set(SWEEPS)
    for sweep, n in minimum.items():
        assert min(len(s) for s in seeds_by_arm(jobs_of(sweep)).values()) >= n, sweep
    screened = {job.seed for sweep in phases()["PHASE32"] for job in jobs_of(sweep)}
    assert not screened & {job.seed for job in jobs_of("phase32_confirm")}, "the confirmation's seeds are fresh"


def test_no_config_and_seed_runs_twice_across_the_phase32_sweep_files():
    runs = Counter((job.arm, job.seed) for sweep in phases()["PHASE32"] for job in jobs_of(sweep))
    assert runs and max(runs.values()) == 1, [run for run, n in runs.items() if n > 1]


def test_the_duplicate_check_sees_a_repeated_config():
    """phase32_schedule at noise=linear is phase32_alpha's alpha=1e-2 linear config: the digest must say so."""
    alpha = {(j.arm, j.seed) for j in jobs_of("phase32_alpha") if "optimizer.alpha=0.01" in j.overrides
             and "noise=linear" in j.overrides}
    again = {(j.arm, j.seed) for j in plan("phase32_schedule", ["noise=linear"], history=NO_HISTORY)}
    assert again and again <= alpha


def test_phase31_runs_repeated_in_phase32_are_the_same_configs_and_seeds():
    """3.1's baseline, α=1e-3 constant and α=1e-2 linear arms are 3.2 configs on the same seeds: 9 runs the plan
    reuses instead of running them twice (same digest, `phase` and `plan` aside)."""
    first = {(j.arm, j.seed) for j in jobs_of("phase31")}
    repeated = {(j.arm, j.seed) for sweep in phases()["PHASE32"] for j in jobs_of(sweep)} & first
    assert len(repeated) == 9


@pytest.mark.parametrize("phase", sorted(phases()))
def test_headers_state_what_the_design_formula_gives(phase):
    """Each header's detectable effect (or equivalence bound) and seeds needed are the preflight's, at the default
    σ and ρ (the numbers of orthonoise/report/power.py)."""
    by_sweep = {sweep: jobs_of(sweep) for sweep in phases()[phase]}
    numbers = r"[≥±] ?(\d+\.\d+)%", r"needs (?:≥ |more than )?(\d+) seeds"
    for sweep, line in zip(by_sweep, sweep_design.design_lines(by_sweep, NO_HISTORY).splitlines()):
        assert "defaults" in line, line
        stated = header(sweep).split("Can detect:")[1]
        assert [re.findall(pattern, stated)[:1] for pattern in numbers] == \
               [re.findall(pattern, line)[:1] for pattern in numbers], (sweep, line)


def optimizer_of(cfg):
    name = cfg.optimizer._target_.rsplit(".", 1)[-1]
    return name, cfg.optimizer.get("alpha"), cfg.noise.schedule if name != "Muon" else None


def test_phase31_arms():
    arms = {optimizer_of(cfg) for _, cfg in expand("phase31", [])}
    assert arms == {("Muon", None, None), ("OrthoNoise", 1e-3, "constant"), ("IsotropicNoise", 1e-3, "constant"),
                    ("OrthoNoise", 1e-2, "linear")}


def test_phase32_covers_the_plans_grid_once():
    configs = {(cfg.optimizer.alpha, cfg.noise.schedule, cfg.optimizer.rank_threshold)
               for sweep in ("phase32_alpha", "phase32_schedule", "phase32_adaptive") for _, cfg in expand(sweep, [])}
    alpha_grid = {(a, s, None) for a in (1e-4, 1e-3, 5e-3, 1e-2, 5e-2) for s in ("constant", "linear")}
    schedules = {(1e-2, s, None) for s in ("constant", "linear", "exponential")}
    adaptive = {(1e-3, "constant", t) for t in (0.3, 0.7)}
    assert configs == alpha_grid | schedules | adaptive


@pytest.mark.parametrize("preset,regime_lr,adamw_lr", [([], 1e-4, 1e-4), (TINY, 0.02, 3e-3)])
def test_phase32_baseline_tunes_the_muon_learning_rate_around_whatever_sets_it(preset, regime_lr, adamw_lr):
    """The grid is 0.5×, 1×, 2× the lr every other arm runs at, under the real regime and the tiny preset alike,
    and the sweep declares the lr difference (plan.declared_differences, read by the report)."""
    jobs = expand("phase32_baseline", preset)
    assert {optimizer_of(cfg)[0] for _, cfg in jobs} == {"Muon"}
    assert sorted({round(cfg.optimizer.lr / regime_lr, 9) for _, cfg in jobs}) == [0.5, 1.0, 2.0]
    assert all(cfg.adamw.lr == adamw_lr for _, cfg in jobs)  # only the Muon learning rate is tuned
    assert all(list(cfg.plan.declared_differences) == ["optimizer.lr"] for _, cfg in jobs)
    others = {cfg.optimizer.lr for sweep in ("phase31", "phase32_alpha") for _, cfg in expand(sweep, preset)}
    assert others == {regime_lr}


def test_phase33_and_4_compare_the_baseline_with_the_carried_config():
    for sweep in phases()["PHASE33"] + phases()["PHASE4"]:
        names = Counter(optimizer_of(cfg)[0] for _, cfg in expand(sweep, arms_of(sweep)))
        assert set(names) == {"Muon", "OrthoNoise"} and names["Muon"] == names["OrthoNoise"], sweep


def test_tiny_preset_keeps_the_structure_on_this_cpu():
    real = expand("phase33_scratch", ARMS)
    tiny = expand("phase33_scratch", TINY + ARMS)
    assert [cfg.hydra.sweep.subdir for _, cfg in tiny] == [cfg.hydra.sweep.subdir for _, cfg in real]
    for _, cfg in tiny:
        assert cfg.hydra.sweep.dir == "outputs/sweeps/phase33_scratch-tiny"
        assert (cfg.model.preset, cfg.hardware.name, cfg.hardware.world_size) == ("tiny", "cpu", 1)
        assert not cfg.model.pretrained and cfg.trainer.max_steps <= 20


def test_overriding_a_group_without_the_preset_changes_the_run_dirs():
    """model=tiny alone must not land in (and later be skipped as) the real sweep's run directories."""
    subdirs = [cfg.hydra.sweep.subdir for _, cfg in expand("phase31", ["model=tiny"])]
    assert all("model=tiny" in s for s in subdirs)


def run_make(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """make as a user types it, also when the tests themselves run under `make test` (CI): a sub-make would
    inherit MAKEFLAGS/MAKELEVEL and print "Entering directory" lines."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def make_dry_run(*args: str) -> str:
    result = run_make("-n", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_phase_targets_preflight_then_launch_on_the_clusters_launcher():
    lines = make_dry_run("phase31", "phase32").splitlines()
    announce, preflight = lines[0].split(" && ")
    assert announce.split() == [".venv/bin/python", "-m", "orthonoise.sweep.regime", "phase31", "hydra/launcher=local"]
    assert preflight.split() == [".venv/bin/python", "-m", "orthonoise.sweep.plan", "--summary", "--link-reused",
                                 "--budget-usd", "168", "phase31", "hydra/launcher=local"]
    assert "train.py -m -cd sweeps -cn phase31 hydra/launcher=local " in lines[1]
    assert "--budget-usd 168 phase32_baseline phase32_alpha phase32_schedule phase32_adaptive hydra/launcher=local" \
        in lines[2]
    slurm = make_dry_run("phase31", "CLUSTER=slurm").splitlines()
    assert "-cn phase31 hydra/launcher=slurm " in slurm[1]


@pytest.mark.parametrize("preset,suffix", [("", ""), ("tiny", "-tiny")])
def test_later_phases_read_the_same_presets_winners_into_a_generated_dir(preset, suffix):
    """The confirmation's arms come from that preset's 3.2 dirs, 3.3's and 4's from its confirmation, and the
    generated configs go under outputs/arms<suffix>: a tiny rehearsal never reaches the real plan's arms."""
    confirm = make_dry_run("phase32-confirm", f"PRESET={preset}").splitlines()
    assert f"--stage screening --out outputs/arms{suffix}/confirmation" in confirm[0]
    assert all(f"outputs/sweeps/{s}{suffix}" in confirm[0] for s in phases()["PHASE32"])
    assert all(f"hydra.searchpath=[file://{ROOT}/outputs/arms{suffix}/confirmation]" in line for line in confirm[1:])
    for target in ("phase33", "phase4"):
        lines = make_dry_run(target, f"PRESET={preset}").splitlines()
        assert f"--stage confirmation --out outputs/arms{suffix}/carried" in lines[0]
        assert f"outputs/sweeps/phase32_confirm{suffix}" in lines[0]
        assert all(f"outputs/arms{suffix}/carried]" in line for line in lines[1:])


def test_a_launch_over_budget_is_refused_before_anything_is_submitted(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_make("phase31", "CLUSTER=slurm", "BUDGET_USD=0.05", f"ARGS=hydra.sweep.dir={sweep_dir}", timeout=300)
    assert result.returncode != 0
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "budget_usd=0.05" in errors[0], result.stdout
    assert not sweep_dir.exists()  # train.py never ran


def test_a_local_launch_this_machine_has_no_gpu_for_is_refused_before_any_job_starts(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    sweep_dir = tmp_path / "sweep"
    result = run_make("phase31", f"ARGS=hydra.sweep.dir={sweep_dir}", timeout=300)
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(errors) == 1, result.stdout
    assert "hardware=h100 needs 1 CUDA GPU(s) per job but this machine has 0" in errors[0]
    assert not sweep_dir.exists()  # no job started, no failed run directory left behind


@pytest.mark.parametrize("cluster", ["local", "slurm"])
@pytest.mark.parametrize("sweep", ["phase31", "phase4_1b"])
def test_one_launcher_per_cluster_asks_for_the_hardwares_processes(cluster, sweep):
    (_, cfg), *_ = expand(sweep, [f"hydra/launcher={cluster}", "hydra.launcher.timeout_min=30", *arms_of(sweep)])
    gpus = world_size(sweep_hardware(sweep))
    assert (cfg.hydra.launcher.tasks_per_node, cfg.hydra.launcher.gpus_per_node) == (gpus, gpus)
    assert cfg.hydra.launcher.timeout_min == 30
    # local launchers have no array_parallelism: one job at a time, or they would share the GPUs
    throttle = 1 if cluster == "local" else cfg.hydra.launcher.array_parallelism
    assert cfg.hydra.sweeper.max_batch_size == throttle
    if cluster == "slurm":
        assert cfg.hydra.launcher.signal_delay_s > 0 and cfg.hydra.launcher.max_num_timeout > 0


def test_slurm_partition_and_account_are_overridable():
    (_, cfg), *_ = expand("phase33_scratch", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                              "hydra.launcher.account=lab", *ARMS])
    assert (cfg.hydra.launcher.partition, cfg.hydra.launcher.account) == ("gpu", "lab")


def test_optuna_sweep_composes():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra: pip install -e '.[optuna]'")
    from hydra.types import RunMode

    from orthonoise.sweep.plan import load_hydra

    cfg = load_hydra().config_loader.load_configuration("optuna", [], run_mode=RunMode.MULTIRUN)
    assert cfg.hydra.sweeper.direction == "minimize" and list(cfg.objective.seeds) == [1, 2]
    assert set(cfg.hydra.sweeper.params) == {"optimizer.alpha", "noise", "optimizer.rank_threshold"}
    assert cfg.hydra.sweep.dir == "outputs/sweeps/optuna"
