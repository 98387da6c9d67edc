"""Plots are written as real PNG files, and skipped when there is nothing to draw."""

from orthonoise.report.analysis import analyse
from orthonoise.report.plots import write_plots

from .fake_runs import linear_curve, write_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_all_plots_written_as_png(tmp_path):
    for seed in (1, 2):
        write_run(tmp_path, f"m{seed}", seed=seed, val=linear_curve(2.0 + seed / 100), eff_rank={100: 9.0, 200: 10.0})
        for alpha in (1e-4, 1e-3):
            write_run(tmp_path, f"o{alpha}-{seed}", seed=seed, optimizer="orthonoise", alpha=alpha,
                      val=linear_curve(1.99 + seed / 100), eff_rank={100: 11.0, 200: 12.0})
    out = tmp_path / "out"
    out.mkdir()
    plots = write_plots(analyse(tmp_path), out)
    assert {p.name for p in plots.values()} == {"val_loss_curves.png", "delta_vs_alpha.png", "delta_over_steps.png",
                                                "eff_rank.png"}
    for path in plots.values():
        assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_plots_without_alpha_or_rank_are_skipped(tmp_path):
    write_run(tmp_path, "a", optimizer="adamw", val=linear_curve(2.0))
    plots = write_plots(analyse(tmp_path), tmp_path)
    assert [p.name for p in plots.values()] == ["val_loss_curves.png"]
