"""Per-run curve measures and the per-group row built from them."""

import pytest

from orthonoise.report import measures
from orthonoise.report.analysis import analyse
from orthonoise.report.collect import load_run

from .fake_runs import write_run


def test_loss_at_step_100_takes_the_last_eval_not_after_it(tmp_path):
    run = load_run(write_run(tmp_path, "a", val={40: 3.0, 80: 2.5, 120: 2.2}))
    assert measures.loss_at_step(run) == (80, 2.5)
    late = load_run(write_run(tmp_path, "b", val={150: 2.2, 200: 2.0}))
    assert measures.loss_at_step(late) is None


def test_steps_to_within_one_percent_of_best(tmp_path):
    run = load_run(write_run(tmp_path, "a", val={50: 2.5, 100: 2.02, 150: 2.005, 200: 2.0}))
    assert measures.steps_to_within_best(run) == 100  # 2.02 <= 2.0 * 1.01
    # interpolated between the evals around the crossing: 2.005 at 150, 2.0 at 200 -> 2.003 at 170
    assert measures.steps_to_reach(run, 2.003) == pytest.approx(170)
    assert measures.steps_to_reach(run, 1.9) is None


def test_group_row_statistics_and_costs(tmp_path):
    for seed, final in ((1, 2.0), (2, 2.2)):
        write_run(tmp_path, f"m{seed}", seed=seed, val={100: final + 0.5, 200: final}, eff_rank={200: 10 + seed},
                  gpu_hours=0.25, tokens_per_s=1000 * seed)
    write_run(tmp_path, "m3", seed=3, status="failed", error="OOM", val={100: 9.9}, gpu_hours=0.5)
    a = analyse(tmp_path)
    groups, row = a.groups, a.rows[0]
    assert len(groups[0].runs) == 3 and len(groups[0].completed) == 2  # the failed job is kept, not counted
    assert row.final.mean == pytest.approx(2.1) and row.final.std == pytest.approx(0.1414214)
    assert row.early.mean == pytest.approx(2.6) and row.early_steps == [100]
    assert row.eff_rank.mean == pytest.approx(11.5) and row.tokens_per_s.mean == pytest.approx(1500)
    assert row.gpu_hours == pytest.approx(1.0)  # failed jobs cost GPU time too


def test_gpu_seconds_to_target_use_the_cost_per_step(tmp_path):
    # 100 steps: 0.5 s per step on a CPU, 3.6 GPU-s per step on a GPU
    run = load_run(write_run(tmp_path, "a", val={50: 2.5, 100: 2.0}, wall_time_s=50.0, max_steps=100))
    assert measures.steps_to_reach(run, 2.25) == pytest.approx(75)
    assert measures.device_seconds_to_reach(run, 2.25) == pytest.approx(37.5)
    gpu = load_run(write_run(tmp_path, "b", val={50: 2.5, 100: 2.0}, gpu_hours=0.1, max_steps=100))
    assert measures.device_seconds_to_reach(gpu, 2.25) == pytest.approx(75 * 3.6)
