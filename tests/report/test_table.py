"""The report's tables are declared once as (column, value) lists: a column's name and its value cannot drift apart,
and a new metric is one line."""

import csv

import numpy as np

from orthonoise.report import table
from orthonoise.report.__main__ import main
from orthonoise.report.analysis import analyse
from orthonoise.report.table import GROUP_CSV, GROUP_MD, RUNS, Column, group_table, run_items

from .fake_runs import linear_curve, write_run


def make_sweep(root):
    for seed in (1, 2, 3):
        write_run(root, f"muon/seed={seed}", seed=seed, val=linear_curve(2.0 + seed / 100), gpu_hours=0.5,
                  logged={"noise_frac": {200: 0.0}})
        write_run(root, f"ortho/seed={seed}", seed=seed, optimizer="orthonoise", alpha=1e-3, gpu_hours=0.25,
                  val=linear_curve(1.9 + seed / 100), logged={"noise_frac": {200: 0.2 + seed / 10}})


def test_every_column_holds_its_own_value(tmp_path):
    make_sweep(tmp_path)
    assert main([str(tmp_path)]) == 0
    with open(tmp_path / "groups.csv") as handle:
        rows = {row["group"]: row for row in csv.DictReader(handle)}
    ortho = rows["optimizer=orthonoise"]
    assert np.isclose(float(ortho["final_val_loss_mean"]), 1.92)
    assert ortho["n_seeds"] == "3" and ortho["seeds"] == "1 2 3" and float(ortho["gpu_hours_total"]) == 0.75
    assert ortho["baseline"] == "optimizer=muon" and rows["optimizer=muon"]["baseline"] == "(baseline)"
    with open(tmp_path / "runs.csv") as handle:
        runs = list(csv.DictReader(handle))
    assert [r["final_val_loss"] for r in runs if r["run"] == "ortho/seed=2"] == ["1.92"]


def test_a_new_metric_is_one_column_line(tmp_path):
    make_sweep(tmp_path)
    rows = analyse(tmp_path).rows
    last = Column("noise_frac_last_mean",
                  lambda r: np.mean([run.evals("noise_frac")[-1][1] for run in r.group.completed]))
    header, values = group_table([*GROUP_CSV, last], rows)
    assert header[-1] == "noise_frac_last_mean" and header[:-1] == group_table(GROUP_CSV, rows)[0]
    by_group = {row[0]: row[-1] for row in values}
    assert np.isclose(by_group["optimizer=orthonoise"], 0.4) and by_group["optimizer=muon"] == 0.0


def test_every_declared_table_has_unique_column_names(tmp_path):
    make_sweep(tmp_path)
    analysis = analyse(tmp_path)
    for columns, items in ((GROUP_CSV, analysis.rows), (GROUP_MD, analysis.rows),
                           (RUNS, run_items(analysis.groups, tmp_path))):
        header, values = table.table(columns, items, early="100")
        assert len(set(header)) == len(header) and all(len(row) == len(header) for row in values)
