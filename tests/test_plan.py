"""The preflight: job list, run dirs, step times from measurements (and which), GPU-hours, dollars, disk, the budget
cap, and what a design can detect."""
import json
import random

import pytest
from omegaconf import OmegaConf

from orthonoise.report import power
from orthonoise.sweep import design as sweep_design
from orthonoise.sweep import rehearsal
from orthonoise.sweep.cost import overheads, step_time_table
from orthonoise.sweep.plan import expand, format_plan, main, plan
from orthonoise.sweep.regime import main as regime_main
from orthonoise.sweep.regime import sweep_hardware
from tests.report.fake_runs import write_run

BENCH = "bench/results/train_step_h100.md"
RANK_350M_S = 4.8  # bench/RESULTS.md: one effective-rank pass over the 350M model's hidden matrices on an H100
EVALS_PER_500 = 500 // 50 + 1  # the fine-tuning regime evaluates every 50 steps and at step 0
TINY = list(rehearsal.TINY)  # the tiny preset's overrides, as `make ... PRESET=tiny` passes them
SLURM = "hydra/launcher=slurm"  # the cluster decides about devices: what else is checked is what a test tests


def fake_run(run_dir, model, optimizer, hardware, steps, wall_time_s, status="completed", final_val_loss=3.0,
             hardware_extra=None, **config):
    (run_dir / ".hydra").mkdir(parents=True)
    cfg = {"model": {"preset": model, "pretrained": True}, "hardware": {"name": hardware, **(hardware_extra or {})},
           "trainer": {"max_steps": steps}, "seed": 1, **config}
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    OmegaConf.save({"hydra": {"runtime": {"choices": {"optimizer": optimizer}}}}, run_dir / ".hydra" / "hydra.yaml")
    (run_dir / "summary.json").write_text(json.dumps({"status": status, "steps": steps, "wall_time_s": wall_time_s,
                                                      "final_val_loss": final_val_loss}))


def test_phase31_is_priced_at_the_measured_step_times_and_eval_costs(tmp_path):
    """12 runs × 500 steps at bench/results' H100 times per optimizer, plus an effective-rank pass at each of the
    11 evals, $2.80/h; what nobody measured (start-up, the evals' forward passes) is named, not counted as 0; the
    original scripts' 9.5 s only compared."""
    jobs = plan("phase31", [], history=tmp_path)
    assert len(jobs) == 12 and all(j.state == "new" and j.step_time_source == BENCH for j in jobs)
    per_step = {"muon": 0.094, "orthonoise": 0.177, "isotropic": 0.104}
    assert {j.optimizer: j.step_time_s for j in jobs} == per_step
    seconds = 3 * 500 * (per_step["muon"] + 2 * per_step["orthonoise"] + per_step["isotropic"])
    seconds += 12 * EVALS_PER_500 * RANK_350M_S
    assert sum(j.gpu_hours for j in jobs) == pytest.approx(seconds / 3600)
    assert sum(j.usd for j in jobs) == pytest.approx(seconds / 3600 * 2.80)
    table = format_plan("phase31", jobs)
    assert "outputs/sweeps/phase31/arm=baseline,seed=1" in table
    assert f"phase31: 12 jobs, {seconds / 3600:.2f} GPU-hours, ${seconds / 3600 * 2.8:.2f}" in table
    assert "unmeasured, not in the estimate: eval, final_eval, startup" in table
    assert "at the original scripts' step times: $44.33" in table  # 12 × 500 × 9.5 s × $2.80/h


def test_rank_threshold_runs_pay_their_rank_passes(tmp_path):
    """phase32_adaptive refreshes the effective rank every rank_every (10) steps on top of the evals' passes."""
    adaptive = plan("phase32_adaptive", [], history=tmp_path)[0]
    plain = plan("phase32_alpha", ["optimizer.alpha=1e-3", "noise=constant", "seed=1"], history=tmp_path)[0]
    assert adaptive.seconds - plain.seconds == pytest.approx(500 // 10 * RANK_350M_S)


def test_a_job_nobody_measured_is_unpriced_never_free(tmp_path, capsys):
    """NOLAH on 4×H100 has no measured step time: the plan shows '?', and the launch preflight (and any budget)
    refuses instead of pricing it at $0."""
    args = ["phase4_1b", "optimizer=nolah", "arm=baseline", SLURM]
    jobs = plan(args[0], args[1:], history=tmp_path)
    assert jobs and all(not j.priced and j.gpu_hours == 0 for j in jobs)
    assert "3 jobs UNPRICED (no measured step time)" in format_plan("phase4_1b", jobs)
    assert main([*args, "--budget-usd", "1000", "--history", str(tmp_path)]) == 1
    errors = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error:")]
    assert errors == ["error: cannot price 3 jobs: no measured step time for (granite-1b, nolah, h100x4); add it to "
                      "bench/results/step_times.yaml; nothing was launched"]


def test_a_cpu_rehearsal_gets_a_wall_time_from_the_tiny_presets_measured_speed(tmp_path):
    jobs = plan("phase31", [*TINY, "hydra/launcher=local_parallel", "hydra.sweeper.max_batch_size=2",
                            f"hydra.sweep.dir={tmp_path}/sweep"], history=tmp_path)
    table = step_time_table()
    startup = overheads(table, "tiny", "cpu")["startup_s"]
    rows = {r["optimizer"]: r["step_s"] for r in table["measured"] if (r["model"], r["hardware"]) == ("tiny", "cpu")}
    expected = sum(10 * rows[j.optimizer] + startup for j in jobs)
    assert sum(j.seconds for j in jobs) == pytest.approx(expected) and sum(j.usd for j in jobs) == 0
    assert f"wall ≈ {expected / 3600 / 2:.2f} h at 2 job(s) at a time" in format_plan("phase31", jobs)


def test_disk_is_checkpoint_size_times_kept_checkpoints_times_jobs(tmp_path):
    jobs = plan("phase31", ["trainer.keep_checkpoints=3"], history=tmp_path)
    size = step_time_table()["checkpoint_gb"]["granite-350m"]
    assert size == pytest.approx(3.0, abs=0.1)  # weights + Muon momentum + AdamW moments of 340M params
    assert sum(j.disk_gb for j in jobs) == pytest.approx(12 * 3 * size)
    assert f"checkpoints {12 * 3 * size:.0f} GB" in format_plan("phase31", jobs)


def test_a_4xh100_node_bills_four_gpus(tmp_path):
    jobs = plan("phase33_scratch", ["arm=baseline"], history=tmp_path)
    assert all(j.gpus == 4 for j in jobs)
    baseline = next(j for j in jobs if j.optimizer == "muon")
    assert baseline.usd == pytest.approx(1000 * 0.513 / 3600 * 4 * 2.80)  # the eager 1B row: DDP runs eager
    assert sorted(baseline.unmeasured) == ["eval", "final_eval", "rank", "startup"]  # nothing measured: 1B, 4×H100


def test_runs_here_win_over_the_bench_table_for_the_same_model_optimizer_and_hardware(tmp_path):
    fake_run(tmp_path / "old" / "a", "granite-350m", "muon", "h100", steps=500, wall_time_s=100)  # 0.2 s/step
    fake_run(tmp_path / "old" / "b", "granite-350m", "muon", "h100", steps=100, wall_time_s=40)   # 0.4 s/step
    fake_run(tmp_path / "old" / "c", "granite-1b", "muon", "h100", steps=100, wall_time_s=5000)   # another model
    jobs = plan("phase31", [f"hydra.sweep.dir={tmp_path}/sweep"], history=tmp_path)
    muon = [j for j in jobs if j.optimizer == "muon"]
    assert all(j.step_time_s == pytest.approx(0.3) and j.step_time_source == "2 runs" for j in muon)
    assert all(j.step_time_source == BENCH for j in jobs if j.optimizer != "muon")
    fake_run(muon[0].run_dir, "granite-350m", "muon", "h100", steps=500, wall_time_s=100)
    fake_run(muon[1].run_dir, "granite-350m", "muon", "h100", steps=200, wall_time_s=40, status="interrupted")
    jobs = plan("phase31", [f"hydra.sweep.dir={tmp_path}/sweep"], history=tmp_path, gpu_hour_usd=3.6)
    by_dir = {j.run_dir: j for j in jobs}
    assert (by_dir[muon[0].run_dir].state, by_dir[muon[0].run_dir].steps, by_dir[muon[0].run_dir].usd) == (
        "completed", 0, 0)
    assert (by_dir[muon[1].run_dir].state, by_dir[muon[1].run_dir].steps) == ("interrupted", 300)
    # median of 0.2, 0.4, 0.2, 0.2; runs' wall times hold their evals: only the (unmeasured) start-up is left out
    assert by_dir[muon[2].run_dir].usd == pytest.approx(500 * 0.2 / 3600 * 3.6)
    assert by_dir[muon[2].run_dir].unmeasured == ["startup"]


def test_cli_totals_and_detectable_effects(tmp_path, capsys):
    assert main(["phase32_schedule", "phase32_adaptive", "--history", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "phase32_schedule: 3 jobs" in out and "total: 9 jobs" in out
    assert ("phase32_adaptive (2 configs; no baseline in this plan, priced as 3 seeds): a config beats baseline by "
            ">1% [3 configs vs one baseline") in out
    assert "detects a true difference ≥" in out and "detecting 1% needs ≥" in out


def test_budget_cap_refuses_with_one_error_line(tmp_path, capsys):
    usd = sum(j.usd for j in plan("phase31", [SLURM], history=tmp_path))
    assert main(["--summary", "--budget-usd", "0.1", "phase31", SLURM, "--history", str(tmp_path)]) == 1
    errors = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "budget_usd=0.1" in errors[0] and f"costs ${usd:.2f}" in errors[0]
    assert main(["--summary", "--budget-usd", f"{usd + 0.01:.2f}", "phase31", SLURM, "--history", str(tmp_path)]) == 0


def test_the_budget_is_the_whole_plans_what_runs_already_cost_counts(tmp_path, capsys):
    """A finished 4×H100 run under the history spent 1 h × 4 GPUs × $2.80: a launch that fits the budget alone is
    refused once that is added."""
    fake_run(tmp_path / "sweeps" / "earlier" / "a", "granite-1b", "muon", "h100x4", steps=100, wall_time_s=3600,
             hardware_extra={"world_size": 4, "device": "cuda", "gpu_hour_usd": 2.80})
    usd = sum(j.usd for j in plan("phase31", [SLURM], history=tmp_path / "none"))
    budget = f"{usd + 1:.2f}"
    assert main(["--summary", "--budget-usd", budget, "phase31", SLURM, "--history", str(tmp_path / "none")]) == 0
    assert main(["--summary", "--budget-usd", budget, "phase31", SLURM, "--history", str(tmp_path)]) == 1
    errors = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "already cost $11.20" in errors[0]


def test_a_local_gpu_launch_is_refused_on_a_machine_without_the_gpus(tmp_path, capsys):
    import torch

    if torch.cuda.device_count() >= 4:
        pytest.skip("this machine has 4 GPUs")
    args = ["--summary", "--history", str(tmp_path), "phase4_350m"]
    assert main([*args, "hydra/launcher=local", "arm=baseline"]) == 1
    errors = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "hardware=h100x4 needs 4 CUDA GPU(s) per job" in errors[0]
    assert main([*args, SLURM, "arm=baseline"]) == 0  # on a cluster the cluster decides


def test_phase31_runs_that_32_repeats_are_reused_not_run_twice(tmp_path):
    """A completed 3.1 run with the composed config and seed of a 3.2 job: the job is listed as reused and not
    priced; --link-reused makes its run directory a link, which the launcher then skips as completed."""
    (_, cfg), = [(o, c) for o, c in expand("phase31", [*TINY, f"hydra.sweep.dir={tmp_path}/phase31"])
                 if "arm=baseline" in o and "seed=1" in o]
    earlier = tmp_path / "phase31" / "arm=baseline,seed=1"
    (earlier / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), earlier / ".hydra" / "config.yaml")
    OmegaConf.save({"hydra": {"runtime": {"choices": {"optimizer": "muon"}}}}, earlier / ".hydra" / "hydra.yaml")
    (earlier / "summary.json").write_text(json.dumps({"status": "completed", "steps": 10, "max_steps": 10,
                                                      "final_val_loss": 3.0, "wall_time_s": 5}))
    args = ["phase32_baseline", *TINY, f"hydra.sweep.dir={tmp_path}/phase32_baseline", "seed=1,2"]
    jobs = plan(args[0], args[1:], history=tmp_path)
    reused = [j for j in jobs if j.reused_from]
    assert [(j.overrides, j.reused_from) for j in reused] == [(["optimizer.lr=0.02", "seed=1"], earlier)]
    assert reused[0].seconds == 0 and reused[0].state == "reused"
    assert main(["--summary", "--link-reused", *args, "--history", str(tmp_path)]) == 0
    link = tmp_path / "phase32_baseline" / "optimizer.lr=0.02,seed=1"
    assert link.is_symlink() and link.resolve() == earlier.resolve()
    assert [j.state for j in plan(args[0], args[1:], history=tmp_path) if j.run_dir == link] == ["completed"]


def test_invalid_jobs_are_flagged_before_anything_is_launched(tmp_path, capsys):
    jobs = plan("phase32_adaptive", ["optimizer.rank_threshold=1.5"], history=tmp_path)
    assert all(j.invalid and j.invalid.startswith("optimizer.rank_threshold=1.5 is out of range") for j in jobs)
    assert main(["phase32_adaptive", "optimizer.rank_threshold=1.5", "--history", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "INVALID job 0: optimizer.rank_threshold=1.5" in out and "error: 3 job(s) have invalid settings" in out


def test_hardware_of_a_sweep_is_read_from_its_files_without_composing(capsys):
    assert [sweep_hardware(s) for s in ("phase4_1b", "phase31", "optuna")] == ["h100x4", "h100", "h100"]
    assert regime_main(["phase31", "phase4_1b", "seed=1"]) == 0  # the first line of `make plan-*`
    assert capsys.readouterr().out.startswith("preflight of phase31 phase4_1b (phase31: h100, phase4_1b: h100x4)")
    assert regime_main(["phase31", "hardware=cpu"]) == 0 and "h100" not in capsys.readouterr().out


# ---- what a design can detect (orthonoise/sweep/design.py; the numbers are orthonoise/report/power.py's) ----

def design_line(out: str, sweep: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"{sweep} ("))


def test_each_sweeps_line_is_the_power_formula_for_its_family(tmp_path, capsys):
    """phase32_alpha's 10 configs × 3 seeds vs phase32_baseline's 6-seed arms: the phase's primary claim (beats by
    >1%, 10 simultaneous comparisons) at the default σ and ρ, said to be the defaults."""
    assert main(["phase32_alpha", "phase32_baseline", SLURM, "--summary", "--history", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = design_line(out, "phase32_alpha")
    mde = power.mde_pct(power.DEFAULT_SIGMA_PCT, power.DEFAULT_RHO, 3, power.MANY_TO_ONE, 10, 6)
    need = power.seeds_needed(power.DEFAULT_SIGMA_PCT, power.DEFAULT_RHO, 1.0, power.MANY_TO_ONE, 10, 6)
    assert f"[10 configs vs one baseline, simultaneous]: with 3 seeds (baseline 6) detects a true difference ≥ " \
           f"{mde:.2f}%" in line and f"needs ≥ {need} seeds per arm" in line
    assert "σ 1.00%, ρ 0.50: defaults" in line
    apart = power.mde_pct(power.DEFAULT_SIGMA_PCT, power.DEFAULT_RHO, 6, power.MANY_TO_ONE, 2)
    assert f"≥ {apart:.2f}% apart" in design_line(out, "phase32_baseline")


def test_seed_std_is_measured_from_completed_runs_once_there_are_any(tmp_path, capsys):
    for seed, loss in enumerate([2.00, 2.04], 1):  # one arm, two seeds: std 0.0283 of mean 2.02 = 1.40%
        fake_run(tmp_path / f"a{seed}", "granite-350m", "muon", "h100", 500, 50, final_val_loss=loss, seed=seed)
    fake_run(tmp_path / "a3", "granite-350m", "muon", "h100", 500, 50, status="diverged", final_val_loss=9.0, seed=3)
    measured = sweep_design.measured_seed_std(tmp_path)
    ((setting, (sigma, source)),) = measured.items()
    assert setting == ("granite-350m", True, 500) and sigma == pytest.approx(1.40, abs=0.01)
    assert source.startswith("1 configs, 2 runs")
    assert main(["phase31", SLURM, "--summary", "--history", str(tmp_path)]) == 0
    line = design_line(capsys.readouterr().out, "phase31")
    assert f"σ 1.40%, ρ 0.50: σ from 1 configs, 2 runs under {tmp_path}, ρ default" in line
    assert f"±{power.mde_pct(sigma, power.DEFAULT_RHO, 3, power.EQUIVALENCE):.2f}%" in line


def test_from_an_earlier_sweep_measures_sigma_and_rho_with_the_report_engine(tmp_path, capsys):
    """--from wins over the history; a sweep with nothing measurable falls back, and says so."""
    rng = random.Random(0)
    for seed in range(1, 5):
        block = rng.gauss(0, 0.01)
        for optimizer, shift in (("muon", 0.0), ("orthonoise", -0.01)):
            loss = 2.0 * (1 + block + shift + rng.gauss(0, 0.005))
            write_run(tmp_path / "earlier", f"{optimizer}/seed={seed}", seed=seed, optimizer=optimizer, alpha=1e-3,
                      val={200: loss})
    sigma, rho, _ = power.noise_of(tmp_path / "earlier")
    none = ["phase31", SLURM, "--summary", "--history", str(tmp_path / "none")]
    assert main([*none, "--from", str(tmp_path / "earlier")]) == 0
    line = design_line(capsys.readouterr().out, "phase31")
    assert f"σ {sigma:.2f}%, ρ {rho:.2f}: measured in {tmp_path / 'earlier'}, 3 error df" in line
    assert f"±{power.mde_pct(sigma, rho, 3, power.EQUIVALENCE):.2f}%" in line
    (tmp_path / "empty").mkdir()
    assert main([*none, "--from", str(tmp_path / "empty")]) == 0
    assert f"nothing measurable in {tmp_path / 'empty'}; defaults" in design_line(capsys.readouterr().out, "phase31")
