"""A rehearsal reads as one: title, first paragraph, verdict heading, criteria.csv and plot subtitles say
REHEARSAL and what it was; each phase's Δ plots draw that phase's criterion; the early-loss columns name the step
they read."""

import csv

import pytest

from orthonoise.report import plots
from orthonoise.report.__main__ import main
from orthonoise.report.analysis import analyse
from orthonoise.report.collect import load_run

from .fake_runs import linear_curve, write_run

LABEL = "REHEARSAL, tiny preset: tiny model, 10 steps, 2,048 eval tokens"


def sweep(root, *, phase="3.1", rehearsal=True, overrides=()):
    """Muon against OrthoNoise, 3 seeds: the tiny preset's 10 steps (evals at 10), or the plan's model and steps."""
    setting = (dict(preset="tiny", sweep_preset="tiny", max_steps=10, final_eval_batches=4) if rehearsal
               else dict(preset="granite-350m"))
    for seed in (1, 2, 3):
        for name, final, extra in (("muon", 2.0, {}), ("ortho", 1.99, dict(optimizer="orthonoise", alpha=1e-3))):
            val = {10: final + seed / 1000} if rehearsal else linear_curve(final + seed / 1000)
            write_run(root, f"{name}/seed={seed}", seed=seed, phase=phase, val=val, eff_rank={max(val): 9.0},
                      overrides=overrides, **setting, **extra)


def read_csv(path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_a_tiny_preset_report_says_rehearsal_everywhere(tmp_path):
    sweep(tmp_path)
    assert main([str(tmp_path)]) == 0
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert lines[0].startswith("# REHEARSAL sweep report")
    assert lines[2].startswith(f"**{LABEL}**")  # the first paragraph
    assert f"## Verdict ({LABEL}; final, phase 3.1)" in lines
    rows = read_csv(tmp_path / "criteria.csv")
    assert rows and all(row["rehearsal"] == LABEL for row in rows)


def test_a_run_of_the_plan_is_not_labelled(tmp_path):
    sweep(tmp_path, rehearsal=False)
    assert main([str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "REHEARSAL" not in report and "## Verdict (final, phase 3.1)" in report
    assert all(row["rehearsal"] == "" for row in read_csv(tmp_path / "criteria.csv"))


def test_steps_set_on_the_command_line_are_a_rehearsal(tmp_path):
    sweep(tmp_path, rehearsal=False, overrides=["trainer.max_steps=200"])
    analysis = analyse(tmp_path)
    assert analysis.rehearsal.label == ("REHEARSAL, trainer.max_steps=200 on the command line: granite-350m model, "
                                        "200 steps, the whole validation split")


def test_the_tiny_model_in_a_phase_is_a_rehearsal_without_the_preset(tmp_path):
    write_run(tmp_path, "r", seed=1, phase="3.1", preset="tiny", val={10: 2.0})
    assert analyse(tmp_path).rehearsal.why == ("tiny model",)
    write_run(tmp_path / "adhoc", "r", seed=1, preset="tiny", val={10: 2.0})  # no phase: an ad-hoc run
    assert analyse(tmp_path / "adhoc").rehearsal is None


@pytest.fixture
def figures(monkeypatch):
    """Every figure the plots module saves, kept open for inspection."""
    saved = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig) or path)
    return saved


def horizontal_lines(ax) -> set[float]:
    return {round(float(line.get_ydata()[0]), 6) for line in ax.get_lines()
            if len(set(map(float, line.get_ydata()))) == 1 and len(line.get_xdata()) == 2}


@pytest.mark.parametrize("phase, drawn, absent", [("3.1", {-5.0, 5.0}, {-1.0}), ("3.2", {-1.0}, {-5.0, 5.0})])
def test_each_phase_draws_its_own_criterion(tmp_path, figures, phase, drawn, absent):
    sweep(tmp_path, phase=phase)
    written = plots.write_plots(analyse(tmp_path), tmp_path, phase)
    assert set(written) >= {"Final loss vs baseline (Δ%, simultaneous intervals)", "Δ over steps (paired by seed)"}
    for fig in figures:
        assert LABEL in fig._suptitle.get_text()  # every plot's subtitle
    delta_plots = [fig for fig in figures if fig._suptitle.get_text().startswith(("Final val loss", "Δ val loss"))]
    assert len(delta_plots) == 2
    for fig in delta_plots:
        lines = horizontal_lines(fig.axes[0])
        assert drawn <= lines and not absent & lines
    if phase == "3.1":
        legend = [t.get_text() for t in delta_plots[0].axes[0].get_legend().get_texts()]
        assert any("equivalence band ±5%" in text for text in legend)


def test_early_loss_columns_name_the_step_they_read(tmp_path):
    sweep(tmp_path)  # 10 steps: the last eval at or before step 100 is step 10
    assert main([str(tmp_path)]) == 0
    header = (tmp_path / "groups.md").read_text().splitlines()[0]
    assert "loss @10 (step)" in header and "Δ @10" in header and "@100" not in header
    columns = read_csv(tmp_path / "groups.csv")[0].keys()
    assert {"loss_step10_mean", "loss_step10_at_steps", "delta_step10_pct"} <= set(columns)
    assert "loss @10 (step)" in (tmp_path / "report.md").read_text()


def test_the_plans_runs_read_step_100(tmp_path):
    sweep(tmp_path / "plan", rehearsal=False)
    assert main([str(tmp_path / "plan")]) == 0
    assert "loss @100 (step)" in (tmp_path / "plan" / "groups.md").read_text().splitlines()[0]


def test_the_reader_sees_the_preset_choice_and_overrides(tmp_path):
    run = load_run(write_run(tmp_path, "r", seed=2, sweep_preset="tiny", overrides=["+preset=tiny"], val={10: 2.0}))
    assert run.choices["preset"] == "tiny" and run.overrides == ["+preset=tiny", "seed=2"]
