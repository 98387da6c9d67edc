"""The report lists the code its runs ran and names every comparison whose arms ran different code, and every run
continued with changed settings; a run without a recorded provenance is unknown, not different."""
from orthonoise.report import provenance
from orthonoise.report.__main__ import main
from orthonoise.report.collect import load_runs
from orthonoise.report.groups import assign_baselines, group_runs

from .fake_runs import PROVENANCE, linear_curve, write_run

OTHER_COMMIT = {**PROVENANCE, "git_commit": "fedcba9876543210fedcba9876543210fedcba98"}


def _sweep(root, base=PROVENANCE, ortho=PROVENANCE, iso=None, **ortho_kwargs):
    for seed in (1, 2):
        write_run(root, f"muon/seed={seed}", seed=seed, phase="3.2", val=linear_curve(2.0 + seed / 1000),
                  provenance=base)
        write_run(root, f"ortho/seed={seed}", seed=seed, phase="3.2", optimizer="orthonoise", alpha=1e-3,
                  val=linear_curve(1.99 + seed / 1000), provenance=ortho, **ortho_kwargs)
        if iso is not None:
            write_run(root, f"iso/seed={seed}", seed=seed, phase="3.2", optimizer="isotropic", alpha=1e-3,
                      val=linear_curve(1.995 + seed / 1000), provenance=iso)
    groups = group_runs(load_runs(root))
    assign_baselines(groups)
    return groups


def test_the_same_code_everywhere_gives_no_warning_and_one_version(tmp_path):
    groups = _sweep(tmp_path)
    assert provenance.warnings(groups) == []
    table = "\n".join(provenance.section(groups))
    assert "| 0123456789 | false | – | 2.13.0 | 5.0.0 | – | 4 |" in table and "unknown" not in table
    assert "NVIDIA H100 80GB HBM3 (4)" in table


def test_a_comparison_whose_arms_ran_different_code_is_named(tmp_path):
    groups = _sweep(tmp_path, ortho={**OTHER_COMMIT, "torch": "2.14.0"})
    assert provenance.warnings(groups) == [
        ("optimizer=orthonoise vs optimizer=muon ran different code "
         "(git_commit fedcba9876 vs 0123456789, torch 2.14.0 vs 2.13.0)")]
    assert "| fedcba9876 |" in "\n".join(provenance.section(groups))


def test_an_arm_that_mixes_code_versions_is_named_too(tmp_path):
    groups = _sweep(tmp_path)
    write_run(tmp_path / "more", "ortho/seed=3", seed=3, phase="3.2", optimizer="orthonoise", alpha=1e-3,
              val=linear_curve(1.993), provenance={**PROVENANCE, "git_dirty": True, "git_diff_sha256": "ab12cd34"})
    groups = group_runs(load_runs(tmp_path))
    assign_baselines(groups)
    assert provenance.warnings(groups) == [
        "optimizer=orthonoise vs optimizer=muon ran different code (git_diff_sha256 ab12cd34/– vs –)"]


def test_a_control_and_its_matched_method_on_different_code_are_named(tmp_path):
    groups = _sweep(tmp_path, iso=OTHER_COMMIT)
    lines = provenance.warnings(groups)
    assert "optimizer=isotropic vs optimizer=muon ran different code (git_commit fedcba9876 vs 0123456789)" in lines
    assert ("optimizer=isotropic vs optimizer=orthonoise ran different code (git_commit fedcba9876 vs 0123456789)"
            in lines) and len(lines) == 2


def test_runs_without_provenance_are_unknown_not_different(tmp_path):
    groups = _sweep(tmp_path, base=None)
    assert provenance.warnings(groups) == []
    table = "\n".join(provenance.section(groups))
    assert "| unknown (no provenance in summary.json) | – | – | – | – | – | 2 |" in table
    assert "(1 known version(s))" in table and "unknown (2)" in table


def test_a_run_continued_with_changed_settings_is_named(tmp_path):
    change = {"step": 3, "at": "2026-01-01T00:00:00", "keys": {"optimizer.alpha": [0.001, 0.05]}}
    groups = _sweep(tmp_path, config_changes=[change])
    assert provenance.warnings(groups) == [
        "optimizer=orthonoise seed 1 was continued with changed settings at step 3 (optimizer.alpha 0.001 → 0.05)",
        "optimizer=orthonoise seed 2 was continued with changed settings at step 3 (optimizer.alpha 0.001 → 0.05)"]


def test_the_report_lists_the_code_and_warns_next_to_the_claims(tmp_path):
    _sweep(tmp_path, ortho=OTHER_COMMIT)
    assert main([str(tmp_path), "--phase", "3.2"]) == 0
    report = (tmp_path / "report.md").read_text()
    claims = report[report.index("## What can be claimed"):report.index("## Verdict")]
    assert "Warning: optimizer=orthonoise vs optimizer=muon ran different code (git_commit fedcba9876 vs 0123456789)." \
        in claims
    provenance_section = report[report.index("## Provenance"):report.index("## Groups")]
    assert "| 0123456789 |" in provenance_section and "| fedcba9876 |" in provenance_section
