"""The preflight: job list, run dirs, step times from measurements (and which), GPU-hours, dollars, disk, the budget
cap, and what a design can detect."""
import json
import random

import pytest
from omegaconf import OmegaConf
from report.fake_runs import write_run

from orthonoise.report import power
from orthonoise.sweep import design as sweep_design
from orthonoise.sweep.plan import format_plan, main, plan, step_time_table

BENCH = "bench/results/train_step_h100.md"


def fake_run(run_dir, model, optimizer, hardware, steps, wall_time_s, status="completed", final_val_loss=None,
             **config):
    (run_dir / ".hydra").mkdir(parents=True)
    cfg = {"model": {"preset": model, "pretrained": True}, "hardware": {"name": hardware},
           "trainer": {"max_steps": steps}, "seed": 1, **config}
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    OmegaConf.save({"hydra": {"runtime": {"choices": {"optimizer": optimizer}}}}, run_dir / ".hydra" / "hydra.yaml")
    (run_dir / "summary.json").write_text(json.dumps({"status": status, "steps": steps, "wall_time_s": wall_time_s,
                                                      "final_val_loss": final_val_loss}))


def test_phase31_is_priced_at_the_measured_step_times(tmp_path):
    """12 runs × 500 steps at bench/results' H100 times per optimizer, $2.80/h; the original scripts' 9.5 s only
    compared."""
    jobs = plan("phase31", [], history=tmp_path)
    assert len(jobs) == 12 and all(j.state == "new" and j.step_time_source == BENCH for j in jobs)
    per_step = {"muon": 0.094, "orthonoise": 0.177, "isotropic": 0.104}
    assert {j.optimizer: j.step_time_s for j in jobs} == per_step
    seconds = 3 * 500 * (per_step["muon"] + 2 * per_step["orthonoise"] + per_step["isotropic"])
    assert sum(j.gpu_hours for j in jobs) == pytest.approx(seconds / 3600)
    assert sum(j.usd for j in jobs) == pytest.approx(seconds / 3600 * 2.80)
    table = format_plan("phase31", jobs)
    assert "outputs/sweeps/phase31/arm=baseline,seed=1" in table
    assert f"phase31: 12 jobs, 0.23 GPU-hours, ${seconds / 3600 * 2.8:.2f}" in table
    assert "at the original scripts' step times: $44.33" in table  # 12 × 500 × 9.5 s × $2.80/h


def test_disk_is_checkpoint_size_times_kept_checkpoints_times_jobs(tmp_path):
    jobs = plan("phase31", ["trainer.keep_checkpoints=3"], history=tmp_path)
    size = step_time_table()["checkpoint_gb"]["granite-350m"]
    assert size == pytest.approx(3.0, abs=0.1)  # weights + Muon momentum + AdamW moments of 340M params
    assert sum(j.disk_gb for j in jobs) == pytest.approx(12 * 3 * size)
    assert f"checkpoints {12 * 3 * size:.0f} GB" in format_plan("phase31", jobs)


def test_a_4xh100_node_bills_four_gpus(tmp_path):
    jobs = plan("phase33_scratch", [], history=tmp_path)
    assert all(j.gpus == 4 for j in jobs)
    baseline = next(j for j in jobs if j.optimizer == "muon")
    assert baseline.usd == pytest.approx(1000 * 0.513 / 3600 * 4 * 2.80)  # the eager 1B row: DDP runs eager


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
    assert by_dir[muon[2].run_dir].usd == pytest.approx(500 * 0.2 / 3600 * 3.6)  # median of 0.2, 0.4, 0.2, 0.2


def test_cli_totals_and_detectable_effects(tmp_path, capsys):
    assert main(["phase32_schedule", "phase32_adaptive", "--history", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "phase32_schedule: 3 jobs" in out and "total: 9 jobs" in out
    assert ("phase32_adaptive (2 configs; no baseline in this plan, priced as 3 seeds): a config beats baseline by "
            ">1% [3 configs vs one baseline") in out
    assert "detects a true difference ≥" in out and "detecting 1% needs ≥" in out


def test_budget_cap_refuses_with_one_error_line(tmp_path, capsys):
    assert main(["--summary", "--budget-usd", "0.1", "phase31", "--history", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "budget_usd=0.1" in errors[0] and "$0.64" in errors[0]
    assert main(["--summary", "--budget-usd", "1", "phase31", "--history", str(tmp_path)]) == 0


def test_invalid_jobs_are_flagged_before_anything_is_launched(tmp_path, capsys):
    jobs = plan("phase32_adaptive", ["optimizer.rank_threshold=1.5"], history=tmp_path)
    assert all(j.invalid and j.invalid.startswith("optimizer.rank_threshold=1.5 is out of range") for j in jobs)
    assert main(["phase32_adaptive", "optimizer.rank_threshold=1.5", "--history", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "INVALID job 0: optimizer.rank_threshold=1.5" in out and "error: 3 job(s) have invalid settings" in out


def test_hardware_of_a_sweep(capsys):
    assert main(["--hardware", "phase4_1b"]) == 0 and capsys.readouterr().out.strip() == "h100x4"


# ---- what a design can detect (orthonoise/sweep/design.py; the numbers are orthonoise/report/power.py's) ----

def design_line(out: str, sweep: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"{sweep} ("))


def test_each_sweeps_line_is_the_power_formula_for_its_family(tmp_path, capsys):
    """phase32_alpha's 10 configs × 3 seeds vs phase32_baseline's 6-seed arms: the phase's primary claim (beats by
    >1%, 10 simultaneous comparisons) at the default σ and ρ, said to be the defaults."""
    assert main(["phase32_alpha", "phase32_baseline", "--summary", "--history", str(tmp_path)]) == 0
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
    assert main(["phase31", "--summary", "--history", str(tmp_path)]) == 0
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
    assert main(["phase31", "--summary", "--history", str(tmp_path / "none"), "--from", str(tmp_path / "earlier")]) == 0
    line = design_line(capsys.readouterr().out, "phase31")
    assert f"σ {sigma:.2f}%, ρ {rho:.2f}: measured in {tmp_path / 'earlier'}, 3 error df" in line
    assert f"±{power.mde_pct(sigma, rho, 3, power.EQUIVALENCE):.2f}%" in line
    (tmp_path / "empty").mkdir()
    assert main(["phase31", "--summary", "--history", str(tmp_path / "none"), "--from", str(tmp_path / "empty")]) == 0
    assert f"nothing measurable in {tmp_path / 'empty'}; defaults" in design_line(capsys.readouterr().out, "phase31")
