"""Like against like: an arm whose settings differ from its baseline's beyond the comparison's own is named, and an
undeclared difference never gets a verdict."""

import csv

from orthonoise.report import fairness
from orthonoise.report.__main__ import main
from orthonoise.report.engine import FAIL, INCONCLUSIVE, PASS
from orthonoise.report.groups import Group

from .fake_runs import TARGETS, write_run

BEATS = "An OrthoNoise config beats baseline by >1% (simultaneous 95%)"


def lr_gap_sweep(root, baseline_lr: float, declared=None, sweep_preset="tiny"):
    """The 4-job 3.2 rehearsal: Muon at `baseline_lr` against OrthoNoise at the preset's lr 0.02, OrthoNoise ~14%
    lower loss."""
    common = dict(phase="3.2", preset="tiny", max_steps=10, final_eval_batches=4, sweep_preset=sweep_preset)
    for seed in (1, 2):
        write_run(root, f"muon/seed={seed}", seed=seed, lr=baseline_lr, declared=declared,
                  val={10: 7.00 + seed / 100}, **common)
        write_run(root, f"ortho/seed={seed}", seed=seed, optimizer="orthonoise", alpha=1e-3,
                  val={10: 6.01 + seed / 100 + (0.004 if seed == 2 else 0)}, **common)


def criteria_rows(root) -> dict:
    with open(root / "criteria.csv") as handle:
        return {row["criterion"]: row for row in csv.DictReader(handle)}


def test_a_200x_learning_rate_gap_cannot_pass_and_is_named(tmp_path):
    lr_gap_sweep(tmp_path, baseline_lr=1e-4)
    assert main([str(tmp_path)]) == 0
    row = criteria_rows(tmp_path)[BEATS]
    assert row["verdict"] == INCONCLUSIVE
    assert "optimizer.lr 0.02 vs 0.0001 (not declared: no verdict)" in row["unlike_settings"]
    report = (tmp_path / "report.md").read_text()
    claims = report.split("## What can be claimed")[1].split("## Verdict")[0]
    assert "Not like against like" in claims and "optimizer.lr 0.02 vs 0.0001" in claims
    verdict = report.split("## Verdict")[1].split("## ")[0]
    assert "optimizer.lr 0.02 vs 0.0001 (not declared: no verdict)" in verdict  # beside the verdict too


def test_the_same_losses_at_equal_learning_rates_pass(tmp_path):
    lr_gap_sweep(tmp_path, baseline_lr=0.02)
    assert main([str(tmp_path)]) == 0
    row = criteria_rows(tmp_path)[BEATS]
    assert row["verdict"] == PASS and row["unlike_settings"] == ""
    report = (tmp_path / "report.md").read_text()
    assert "Not like against like" not in report and "not declared: no verdict" not in report


def test_a_difference_the_plan_declares_may_pass_and_is_still_named(tmp_path):
    lr_gap_sweep(tmp_path, baseline_lr=1e-4, declared=["optimizer.lr"])
    assert main([str(tmp_path)]) == 0
    row = criteria_rows(tmp_path)[BEATS]
    assert row["verdict"] == PASS
    assert "optimizer.lr 0.02 vs 0.0001 (declared by the plan)" in row["unlike_settings"]
    assert "as the plan declares" in (tmp_path / "report.md").read_text()


def group(**config) -> Group:
    flat = {key.replace("__", "."): value for key, value in config.items()}
    return Group(key=str(flat), config=flat, choices={})


MUON = dict(optimizer___target_=TARGETS["muon"], optimizer__lr=0.02, optimizer__momentum=0.95, adamw__lr=3e-3,
            noise__schedule="constant", hardware__batch_size=16)
ORTHO = dict(MUON, optimizer___target_=TARGETS["orthonoise"], optimizer__alpha=1e-3, optimizer__perturb="momentum",
             optimizer__rank_threshold=None, optimizer__noise_into_buffer=False, optimizer__ns_steps_noise=None,
             optimizer__sampler="cholesky", noise__schedule="cosine")


def test_the_noise_keys_are_the_comparisons_own():
    assert fairness.differences(group(**ORTHO), group(**MUON)) == []


def test_every_other_differing_key_is_named():
    arm = group(**dict(ORTHO, optimizer__lr=0.01, optimizer__momentum=0.9, adamw__lr=1e-4, hardware__batch_size=8))
    named = [(d.key, d.arm, d.baseline) for d in fairness.differences(arm, group(**MUON))]
    assert named == [("adamw.lr", 1e-4, 3e-3), ("hardware.batch_size", 8, 16), ("optimizer.lr", 0.01, 0.02),
                     ("optimizer.momentum", 0.9, 0.95)]


def test_across_optimizer_families_the_optimizer_node_is_the_comparisons_own():
    adamw = group(**dict(MUON, optimizer___target_=TARGETS["adamw"], optimizer__lr=3e-3, optimizer__eps=1e-8,
                         optimizer__momentum=None))
    assert fairness.differences(adamw, group(**MUON)) == []
    slower = group(**dict(MUON, optimizer___target_=TARGETS["adamw"], hardware__batch_size=4))
    assert [d.key for d in fairness.differences(slower, group(**MUON))] == ["hardware.batch_size"]


def test_an_undeclared_difference_leaves_pass_and_fail_inconclusive():
    arm, base = group(**dict(ORTHO, optimizer__lr=0.04)), group(**MUON)
    for verdict in (PASS, FAIL, INCONCLUSIVE):
        assert fairness.like_for_like(verdict, arm, base)[0] == INCONCLUSIVE
    assert fairness.like_for_like(PASS, group(**ORTHO), base) == (PASS, "")
