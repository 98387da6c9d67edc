"""The cost preflight: job list, run dirs, GPU-hours and dollars of a known plan, against the plan's budget
(phase 3.1: 8 runs × $3.50 = $28; phase 3.2: about $105)."""
import pytest
from omegaconf import OmegaConf

from orthonoise.plan import format_plan, main, plan
from orthonoise.rundir import HYDRA_DIR, SUMMARY_FILE, Status, write_json_atomic


def fake_run(run_dir, model, hardware, steps, wall_time_s, status=Status.COMPLETED):
    (run_dir / HYDRA_DIR).mkdir(parents=True)
    OmegaConf.save({"model": {"preset": model}, "hardware": {"name": hardware}}, run_dir / HYDRA_DIR / "config.yaml")
    summary = {"status": Status(status).value, "steps": steps, "wall_time_s": wall_time_s}
    write_json_atomic(run_dir / SUMMARY_FILE, summary)


def test_phase31_costs_what_the_plan_budgets(tmp_path):
    """8 runs × 500 steps × 9.5 s at $2.80/h: $29.56, within 10% of the plan's 8 runs × $3.50 = $28."""
    jobs = plan("phase31", [], history=tmp_path)
    assert len(jobs) == 8 and all(j.state == "new" and j.step_time_source == "config" for j in jobs)
    assert sum(j.gpu_hours for j in jobs) == pytest.approx(8 * 500 * 9.5 / 3600)
    assert sum(j.usd for j in jobs) == pytest.approx(29.56, abs=0.01)
    assert sum(j.usd for j in jobs) == pytest.approx(28, rel=0.1)


def test_phase32_costs_what_the_plan_budgets(tmp_path):
    usd = sum(j.usd for s in ("phase32_alpha", "phase32_schedule", "phase32_adaptive")
              for j in plan(s, [], history=tmp_path))
    assert usd == pytest.approx(105, rel=0.1)


def test_a_4xh100_node_bills_four_gpus(tmp_path):
    jobs = plan("phase33_scratch", [], history=tmp_path)
    assert all(j.gpus == 4 for j in jobs)
    assert jobs[0].usd == pytest.approx(1000 * 12.0 / 3600 * 4 * 2.80)  # $11.20 per node-hour


def test_step_time_from_earlier_runs_and_state_of_this_sweep(tmp_path):
    fake_run(tmp_path / "old" / "a", "granite-350m", "h100", steps=500, wall_time_s=3000)  # 6 s/step
    fake_run(tmp_path / "old" / "b", "granite-350m", "h100", steps=100, wall_time_s=800)   # 8 s/step
    fake_run(tmp_path / "old" / "c", "granite-1b", "h100", steps=100, wall_time_s=5000)    # another model
    jobs = plan("phase31", [f"hydra.sweep.dir={tmp_path}/sweep"], history=tmp_path)
    assert jobs[0].step_time_s == pytest.approx(7.0) and jobs[0].step_time_source == "2 runs"
    fake_run(jobs[0].run_dir, "granite-350m", "h100", steps=500, wall_time_s=3000)
    fake_run(jobs[1].run_dir, "granite-350m", "h100", steps=200, wall_time_s=1200, status=Status.INTERRUPTED)
    jobs = plan("phase31", [f"hydra.sweep.dir={tmp_path}/sweep"], history=tmp_path, gpu_hour_usd=3.6)
    assert (jobs[0].state, jobs[0].steps, jobs[0].usd) == ("completed", 0, 0)
    assert (jobs[1].state, jobs[1].steps) == ("interrupted", 300)
    assert jobs[2].usd == pytest.approx(500 * 6.0 / 3600 * 3.6)  # median of 6, 8 and the two new 6 s/step


def test_table_and_cli(tmp_path, capsys):
    table = format_plan("phase31", plan("phase31", [], history=tmp_path))
    assert "outputs/sweeps/phase31/arm=baseline,seed=1" in table and "29.56" in table
    assert main(["phase32_schedule", "phase32_adaptive", "--history", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "phase32_schedule: 6 jobs" in out and "total: 10 jobs" in out
    # what the seeds can detect, before launch: the 5 OrthoNoise configs of the two sweeps, 2 seeds each
    assert "Power (seed std σ̂ = 1.00% of the loss, seed-block share ρ̂ = 0.50; default" in out
    assert "a config beats baseline by >1% [5 configs vs one baseline, simultaneous]: with 2 seeds" in out


def test_invalid_jobs_are_flagged_before_anything_is_launched(tmp_path, capsys):
    jobs = plan("phase32_alpha", ["optimizer.rank_threshold=1.5"], history=tmp_path)
    assert all(j.invalid and j.invalid.startswith("optimizer.rank_threshold=1.5 is out of range") for j in jobs)
    assert main(["phase32_alpha", "optimizer.rank_threshold=1.5", "--history", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "INVALID job 0: optimizer.rank_threshold=1.5" in out and "error: 20 job(s) have invalid settings" in out
