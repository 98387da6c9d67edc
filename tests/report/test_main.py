"""End to end: a synthetic phase-3.1 sweep -> report.md, tables, plots, problem jobs listed."""

import csv
import subprocess
import sys
from pathlib import Path

from orthonoise.report import engine
from orthonoise.report.__main__ import main

from .fake_runs import linear_curve, write_run

REPO = Path(__file__).resolve().parents[2]


def make_sweep(root):
    for seed in (1, 2):
        write_run(root, f"muon/seed={seed}", seed=seed, phase="3.1", val=linear_curve(2.0 + seed / 1000),
                  eff_rank={100: 9.0, 200: 10.0})
        write_run(root, f"ortho/seed={seed}", seed=seed, phase="3.1", optimizer="orthonoise", alpha=1e-3,
                  val=linear_curve(1.99 + seed / 1000), eff_rank={100: 11.0, 200: 12.0})
    write_run(root, "ortho/seed=3", seed=3, phase="3.1", optimizer="orthonoise", alpha=1e-3,
              status="failed", error="RuntimeError: CUDA out of memory", val={50: 2.4})
    write_run(root, "ortho/seed=4", seed=4, phase="3.1", optimizer="orthonoise", alpha=1e-3,
              status=None, metrics=False)


def test_report_written_with_tables_plots_and_problem_jobs(tmp_path, capsys):
    make_sweep(tmp_path)
    assert main([str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "## Verdict (INTERIM, phase 3.1)" in report  # phase read from the runs' config; seed 4 not started
    assert report.index("## What can be claimed") < report.index("## Verdict")
    assert "| No crashes | **FAIL** |" in report
    assert "| Effective rank logged | **PASS** |" in report
    assert "ortho/seed=3" in report and "CUDA out of memory" in report
    assert "ortho/seed=4" in report and "missing" in report
    assert "![Validation loss curves](val_loss_curves.png)" in report
    for name in ("groups.md", "runs.md", "val_loss_curves.png", "delta_vs_alpha.png", "delta_over_steps.png",
                 "eff_rank.png"):
        assert (tmp_path / name).is_file(), name
    with open(tmp_path / "groups.csv") as handle:
        groups = {row["group"]: row for row in csv.DictReader(handle)}
    ortho = groups["optimizer=orthonoise"]
    assert (ortho["n_completed"], ortho["n_jobs"], ortho["seeds"]) == ("2", "4", "1 2")
    assert ortho["seed_states"] == "2/4 completed, 1/4 failed, 1/4 missing"
    assert ortho["primary_analysis"] == engine.PAIRED
    assert float(ortho["sim95_high_pct"]) > float(ortho["delta_final_pct_model"])
    assert float(ortho["delta_final_pct"]) < 0 and ortho["baseline"] == "optimizer=muon"
    with open(tmp_path / "runs.csv") as handle:
        states = sorted(row["state"] for row in csv.DictReader(handle))
    assert states == ["completed"] * 4 + ["failed", "missing"]
    assert "FAIL" in capsys.readouterr().out


def test_a_diverged_job_is_listed_with_its_cause(tmp_path):
    make_sweep(tmp_path)
    write_run(tmp_path, "ortho/seed=5", seed=5, phase="3.1", optimizer="orthonoise", alpha=1e-3,
              status="diverged", diverged="non-finite gradient norm at step 120", val={50: 2.4, 100: 2.3})
    assert main([str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "ortho/seed=5" in report and "non-finite gradient norm at step 120" in report


def test_phase_override_and_out_dir(tmp_path):
    make_sweep(tmp_path)
    out = tmp_path / "elsewhere"
    assert main([str(tmp_path), "--phase", "3.2", "--out", str(out)]) == 0
    assert "## Verdict (INTERIM, phase 3.2)" in (out / "report.md").read_text()
    assert not (tmp_path / "report.md").exists()


def test_empty_dir_is_an_error(tmp_path):
    assert main([str(tmp_path)]) == 1


def test_runs_as_a_module(tmp_path):
    make_sweep(tmp_path)
    result = subprocess.run([sys.executable, "-m", "orthonoise.report", str(tmp_path), "--phase", "3.1"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "6 jobs in 2 groups" in result.stdout


def test_several_sweep_dirs_are_one_pool(tmp_path):
    """Phase 3.2's sweeps have no baseline of their own: read together with phase 3.1's, they get one."""
    alpha, sanity = tmp_path / "phase32_alpha", tmp_path / "phase31"
    for seed in (1, 2):
        write_run(alpha, f"alpha=0.005,seed={seed}", seed=seed, phase="3.2", optimizer="orthonoise", alpha=5e-3,
                  val=linear_curve(1.95 + seed / 1000))
        write_run(sanity, f"arm=baseline,seed={seed}", seed=seed, phase="3.1", val=linear_curve(2.0 + seed / 1000))
    assert main([str(alpha)]) == 0
    assert "optimizer=muon" not in (alpha / "groups.csv").read_text()  # alone: no baseline to compare with
    assert main([str(alpha), str(sanity), "--phase", "3.2"]) == 0
    assert "| An OrthoNoise config beats baseline by >1% (simultaneous 95%) | **PASS** |" in \
        (alpha / "report.md").read_text()
    with open(alpha / "groups.csv") as handle:
        groups = {row["group"]: row for row in csv.DictReader(handle)}
    ortho = groups["optimizer=orthonoise"]  # the `phase` key does not split groups
    assert ortho["baseline"] == "optimizer=muon" and float(ortho["sim95_high_pct"]) < -1
    with open(alpha / "runs.csv") as handle:
        paths = sorted(row["run"] for row in csv.DictReader(handle))
    assert paths[0].startswith("phase31/") and paths[-1].startswith("phase32_alpha/")


def _groups_csv(path):
    with open(path / "groups.csv") as handle:
        return {row["group"]: row for row in csv.DictReader(handle)}


def test_a_repeated_seed_is_one_replicate_with_a_warning(tmp_path, capsys):
    """`make report SWEEP="phase32_alpha phase31"` reads 3.1's OrthoNoise arm and 3.2's same config twice:
    seeds 1 2 1 2 are two replicates, not four."""
    alpha, sanity = tmp_path / "phase32_alpha", tmp_path / "phase31"
    for root, phase in ((alpha, "3.2"), (sanity, "3.1")):
        for seed in (1, 2):
            write_run(root, f"ortho,seed={seed}", seed=seed, phase=phase, optimizer="orthonoise", alpha=1e-3,
                      val=linear_curve(1.95 + seed / 100 + (phase == "3.1") / 1000))
    for seed in (1, 2):
        write_run(sanity, f"base,seed={seed}", seed=seed, phase="3.1", val=linear_curve(2.0 + seed / 97))
    assert main([str(alpha), str(sanity), "--phase", "3.2"]) == 0
    ortho = _groups_csv(alpha)["optimizer=orthonoise"]
    assert (ortho["n_completed"], ortho["n_seeds"], ortho["n_jobs"], ortho["seeds"]) == ("2", "2", "4", "1 2")
    report = (alpha / "report.md").read_text()
    assert "optimizer=orthonoise: seed 1 ran 2 times" in report and "counted once" in report
    assert "seed 2 ran 2 times" in capsys.readouterr().err
    with open(alpha / "runs.csv") as handle:
        counted = [row["counted"] for row in csv.DictReader(handle) if row["group"] == "optimizer=orthonoise"]
    assert sorted(counted) == ["no (repeated seed)"] * 2 + ["yes"] * 2


def test_an_interrupted_job_marks_the_verdict_interim(tmp_path, capsys):
    make_sweep(tmp_path)
    write_run(tmp_path, "muon/seed=3", seed=3, phase="3.1", status="interrupted", val={50: 2.4})
    assert main([str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "## Verdict (INTERIM, phase 3.1)" in report and "INTERIM:" in report
    assert "muon/seed=3" in report and "interrupted" in report
    assert "INTERIM" in capsys.readouterr().out
    assert _groups_csv(tmp_path)["optimizer=muon"]["seed_states"] == "2/3 completed, 1/3 interrupted"


def test_planned_jobs_that_never_started_count_as_missing(tmp_path):
    """A sweep stopped halfway: multirun.yaml plans seeds 1-3 of two arms, three jobs ran."""
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n"
        "    params:\n      seed: 1,2\n  overrides:\n    task:\n    - seed=1,2,3\n")
    for seed in (1, 2):
        write_run(tmp_path, f"seed={seed}", seed=seed, phase="3.1", val=linear_curve(2.0 + seed / 1000),
                  eff_rank={200: 10.0})
    assert main([str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "| No crashes | **INCONCLUSIVE** |" in report and "1 missing (never started)" in report
    assert "3 jobs planned, 1 not started" in report and "INTERIM" in report
    assert "planned in multirun.yaml, no run directory" in report and "seed=3" in report


def test_each_run_is_labelled_with_the_alpha_it_ended_at(tmp_path):
    """An annealed run (noise=linear, 1e-2 → 1e-3 over the run) says where its alpha went; a constant
    one and Muon do not."""
    for seed in (1, 2):
        write_run(tmp_path, f"muon/seed={seed}", seed=seed, phase="3.2", val=linear_curve(2.0 + seed / 1000))
        for schedule in ("constant", "linear"):
            write_run(tmp_path, f"{schedule}/seed={seed}", seed=seed, phase="3.2", optimizer="orthonoise",
                      alpha=1e-2, schedule=schedule, val=linear_curve(1.99 + seed / 1000))
    assert main([str(tmp_path)]) == 0
    with open(tmp_path / "runs.csv") as handle:
        rows = {row["run"]: row for row in csv.DictReader(handle)}
    assert [rows[f"{name}/seed=1"]["final_alpha"] for name in ("muon", "constant", "linear")] == ["", "0.01", "0.001"]
    assert rows["linear/seed=1"]["group"] == "optimizer=orthonoise noise=linear alpha=0.01→0.001"
    assert rows["constant/seed=1"]["group"] == "optimizer=orthonoise noise=constant"
    assert "| optimizer=orthonoise noise=linear alpha=0.01→0.001 |" in (tmp_path / "runs.md").read_text()
    assert "alpha=0.01→0.001" in (tmp_path / "report.md").read_text()
