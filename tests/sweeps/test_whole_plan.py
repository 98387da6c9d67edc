"""The whole plan rehearsed end to end (orthonoise/sweep/rehearsal.py into a temporary output root), then checked from
what it left on disk: every phase's report, the winners carried into the later phases' composed configs, no tracked
file touched, the reports labelled REHEARSAL, the twice-preempted job completed and bit-identical to an uninterrupted
run, the positive control called better and the A/A control not different.

13 CPU-minutes (about 10 minutes on 2 free cores): marked `rehearsal`, left out of `make test`; .ci/run runs it
(`make rehearsal-test`).
"""
import json
import subprocess
import sys

import pytest

from orthonoise import REPO_ROOT
from orthonoise.sweep import rehearsal
from orthonoise.sweep.rehearsal import CONTROLS, PLAN, PREEMPTED, call_of, compared_groups, run_dirs, sweep_dir
from orthonoise.sweep.winners import Arm, read_winners

pytestmark = pytest.mark.rehearsal


def tracked_changes() -> str:
    """Tracked files' changes against HEAD (their names and their content), untracked files left out."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return git("status", "--porcelain", "--untracked-files=no") + git("diff", "HEAD")


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory):
    out = tmp_path_factory.mktemp("rehearsal")
    before = tracked_changes()
    result = subprocess.run([sys.executable, "-m", "orthonoise.sweep.rehearsal", "--out", str(out)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=3600)
    return out, result, before


def test_the_rehearsal_runs_every_step_and_says_so(rehearsed):
    out, result, _ = rehearsed
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    records = json.loads((out / "rehearsal" / "rehearsal.json").read_text())
    assert [r["name"] for r in records][: len(PLAN)] == [p.title for p in PLAN]
    assert all(r["ok"] and r["jobs"] > 0 for r in records), records


def test_every_phase_and_control_has_its_report_labelled(rehearsed):
    out, _, _ = rehearsed
    for phase in PLAN:
        report = sweep_dir(out, phase.report_sweeps[0]) / "report.md"
        assert report.exists(), f"phase {phase.title}: no {report}"
        assert "REHEARSAL" in report.read_text(), f"phase {phase.title}: {report} does not say REHEARSAL"
    for control in CONTROLS:
        assert (sweep_dir(out, control.sweep, tiny=False) / "report.md").exists()


def arms_run(directory) -> list[Arm]:
    return [Arm.from_run_dir(run) for run in run_dirs(directory)]


def ran(arm: Arm, arms: list[Arm]) -> bool:
    """Some run of `arms` used the arm's config choices and values (values the run did not set do not count)."""
    return any(a.choices == arm.choices and all(a.values.get(k) == v for k, v in arm.values.items()) for a in arms)


def test_the_winners_flow_into_the_later_phases_configs(rehearsed):
    out, _, _ = rehearsed
    _, winners, _, _ = read_winners(rehearsal.winners_file(out, "3.2"))
    confirmation = arms_run(sweep_dir(out, "phase32_confirm"))
    assert all(ran(arm, confirmation) for arm in winners), (winners, confirmation)
    _, confirmed, confirmed_baseline, _ = read_winners(rehearsal.winners_file(out, "3.2 confirmation"))
    # 3.2's best Muon lr does not reach the confirmation here: the tiny preset's lr is applied after every arm
    # (docs/sweeps.md, "One gap"). What must hold is that the baseline is credited with the lr its runs used.
    assert ran(confirmed_baseline, confirmation), (confirmed_baseline, confirmation)
    for sweep in ("phase33_finetune", "phase33_scratch", "phase4_350m", "phase4_1b"):
        carried = arms_run(sweep_dir(out, sweep))
        assert ran(confirmed[0], carried) and ran(confirmed_baseline, carried), (sweep, confirmed, confirmed_baseline)


def test_no_tracked_file_changed(rehearsed):
    _, _, before = rehearsed
    assert tracked_changes() == before


def test_the_twice_preempted_job_completed_bit_identical(rehearsed):
    out, _, _ = rehearsed
    sweep, picks = PREEMPTED
    (job,) = [d for d in run_dirs(sweep_dir(out, sweep, tiny=False)) if all(p in d.name for p in picks)]
    assert (job / "train.log").read_text().count("resumed from") == 2
    (reference,) = run_dirs(out / "rehearsal" / "preemption-reference")
    assert "resumed from" not in (reference / "train.log").read_text()
    assert json.loads((job / "summary.json").read_text())["status"] == "completed"
    assert rehearsal.bit_identical(job, reference) == []


def test_the_positive_control_is_called_better_and_the_aa_control_not_different(rehearsed):
    out, _, _ = rehearsed
    calls = {c.sweep: [call_of(low, high) for _, low, high in compared_groups(sweep_dir(out, c.sweep, tiny=False))
                       .values()] for c in CONTROLS}
    assert calls == {"control_positive": ["better"], "control_aa": ["not different"]}
