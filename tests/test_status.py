"""`python -m orthonoise.status`: every run under outputs/ with state, step, val loss and age."""

import json
import os
import time

from orthonoise.status import main, status_rows
from tests.report.fake_runs import linear_curve, write_run


def _make_outputs(root):
    write_run(root, "multirun/2025-01-01/seed=1", seed=1, val=linear_curve(2.0))
    live = write_run(root, "multirun/2025-01-01/seed=2", seed=2, status="running", val={50: 2.5})
    dead = write_run(root, "runs/2025-01-02", status="running", val={50: 2.7})
    old = time.time() - 3 * 3600
    os.utime(dead / "metrics.jsonl", (old, old))
    write_run(root, "runs/2025-01-03", status="failed", error="ValueError: bad config\ntraceback...", val={})
    return live


def test_status_rows(tmp_path):
    _make_outputs(tmp_path)
    rows = {row[-1]: row for row in status_rows(tmp_path, time.time())}
    assert rows["multirun/2025-01-01/seed=1"][:3] == ["completed", "200/200", "2.0000"]
    assert rows["multirun/2025-01-01/seed=2"][:3] == ["running", "50/200", "2.5000"]
    stale = rows["runs/2025-01-02"]
    assert stale[0] == "running (stale)" and stale[3] == "3h"
    failed = rows["runs/2025-01-03"]
    assert failed[0] == "failed" and failed[2] == "–" and failed[5] == "ValueError: bad config"
    assert list(rows)[0] == "runs/2025-01-02"  # oldest activity first


def test_status_cli(tmp_path, capsys):
    live = _make_outputs(tmp_path)
    (live / "summary.json").write_text(json.dumps({"status": "running", "steps": 60, "max_steps": 200}))
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["state", "step", "val", "loss", "age", "optimizer", "error", "run"]
    assert "60/200" in out and "1 completed, 1 failed, 1 running, 1 running (stale)" in out
    assert main([str(tmp_path), "--stale-after", "600"]) == 0
    assert "2 running" in capsys.readouterr().out
    assert main([str(tmp_path / "nope")]) == 1


# One malformed run directory each: (name, how it is broken, why status/report must say it is unreadable).
MALFORMED = [
    ("list_summary", lambda r: (r / "summary.json").write_text("[1, 2]"), "summary.json holds a JSON list"),
    ("string_summary", lambda r: (r / "summary.json").write_text('"done"'), "summary.json holds a JSON str"),
    ("garbage_summary", lambda r: (r / "summary.json").write_bytes(b"\x00\x01{{"), "summary.json cannot be read"),
    ("non_utf8_summary", lambda r: (r / "summary.json").write_bytes(b'{"status": "\xff"}'),
     "summary.json cannot be read: UnicodeDecodeError"),
    ("steps_three", lambda r: _edit_summary(r, steps="three"), "summary.json: steps='three' is not an integer"),
    ("loss_text", lambda r: _edit_summary(r, final_val_loss="low"),
     "summary.json: final_val_loss='low' is not a number"),
    ("status_number", lambda r: _edit_summary(r, status=3), "summary.json: status=3 is not a string"),
    ("list_config", lambda r: (r / ".hydra" / "config.yaml").write_text("- a\n- b\n"),
     ".hydra/config.yaml holds a list, not a dict"),
    ("bad_yaml", lambda r: (r / ".hydra" / "config.yaml").write_text("a: [\n"), ".hydra/config.yaml cannot be read"),
    ("list_overrides", lambda r: (r / ".hydra" / "overrides.yaml").write_text("a: 1\n"),
     ".hydra/overrides.yaml holds a dict, not a list"),
    # not a regular file, or too large: read, they would hang status and report (a FIFO) or fill the memory
    ("fifo_summary", lambda r: _replace(r / "summary.json", os.mkfifo),
     "summary.json cannot be read: UnreadableFile: it is a FIFO (named pipe), not a regular file"),
    ("fifo_metrics", lambda r: _replace(r / "metrics.jsonl", os.mkfifo),
     "metrics.jsonl cannot be read: UnreadableFile: it is a FIFO (named pipe), not a regular file"),
    ("fifo_config", lambda r: _replace(r / ".hydra" / "config.yaml", os.mkfifo),
     ".hydra/config.yaml cannot be read: UnreadableFile: it is a FIFO (named pipe)"),
    ("zero_summary", lambda r: _replace(r / "summary.json", lambda p: p.symlink_to("/dev/zero")),
     "summary.json cannot be read: UnreadableFile: it is a character device, not a regular file"),
    ("zero_metrics", lambda r: _replace(r / "metrics.jsonl", lambda p: p.symlink_to("/dev/zero")),
     "metrics.jsonl cannot be read: UnreadableFile: it is a character device, not a regular file"),
    ("huge_summary", lambda r: (r / "summary.json").write_text(" " * (2 << 20) + "{}"),
     "summary.json cannot be read: UnreadableFile: it holds 2097154 bytes, more than"),
    # a completed record that is no completed seed
    ("nan_final_loss", lambda r: _edit_summary(r, final_val_loss=float("nan")),
     "summary.json says completed but final_val_loss=nan is not a finite number: not a completed seed"),
    ("short_completed", lambda r: _edit_summary(r, steps=5),
     "summary.json says completed but steps=5 of max_steps=200: not a completed seed"),
]


def _replace(path, make):
    path.unlink()
    make(path)


def _edit_summary(run, **fields):
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, **fields}))


def _malformed_tree(root):
    write_run(root, "good", seed=1, val=linear_curve(2.0))
    for i, (name, breaks, _) in enumerate(MALFORMED):
        breaks(write_run(root, name, seed=i + 2, val=linear_curve(2.0)))
    # tolerated without a fuss: a non-UTF-8 or foreign line in metrics.jsonl is skipped, the rest is read
    tolerated = write_run(root, "odd_metrics", seed=99, val=linear_curve(2.0))
    (tolerated / "metrics.jsonl").write_bytes(b"\xff\xfe garbage\n[1]\n" + (tolerated / "metrics.jsonl").read_bytes())


def test_status_lists_malformed_runs_as_unreadable_with_why(tmp_path, capsys):
    _malformed_tree(tmp_path)
    rows = {row[-1]: row for row in status_rows(tmp_path, time.time())}
    for name, _, why in MALFORMED:
        assert rows[name][0] == "unreadable" and rows[name][5].startswith(why[:60]), rows[name]
    assert rows["good"][:3] == ["completed", "200/200", "2.0000"]
    assert rows["odd_metrics"][:3] == ["completed", "200/200", "2.0000"]
    assert main([str(tmp_path)]) == 0
    assert f"2 completed, {len(MALFORMED)} unreadable" in capsys.readouterr().out


def test_report_carries_on_past_malformed_runs(tmp_path):
    from orthonoise.report.__main__ import main as report_main

    _malformed_tree(tmp_path)
    assert report_main([str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    for name, _, why in MALFORMED:
        assert f"| {name} |" in report and why in report


def test_status_reads_optuna_trials_as_seed_runs_and_counts_planned_jobs(tmp_path, capsys):
    from report.test_collect import write_trial

    sweep = tmp_path / "sweeps" / "optuna"
    write_trial(sweep, "optimizer.alpha=0.001", seeds_done=[1, 2])
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    _target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper\n"
        "    n_trials: 3\n")
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 completed" in out and "missing" not in out.split("\n\n")[-1].split(",")[0]
    assert "sweeps/optuna: 3 trials planned, 2 not started" in out


def test_status_tells_a_killed_run_at_once_by_its_free_lock(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_run_lifecycle import HOLD

    dead = write_run(tmp_path, "dead", status="running", val={50: 2.7})
    live = write_run(tmp_path, "live", seed=2, status="running", val={50: 2.5})
    write_run(tmp_path, "unlocked", seed=3, status="running", val={50: 2.6})
    (dead / "run.lock").write_text('{"pid": 1}')  # left by a process killed with SIGKILL: no one holds it
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(live), "60"], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rows = {row[-1]: row for row in status_rows(tmp_path, time.time())}
    finally:
        holder.kill()
        holder.wait()
    assert rows["dead"][0] == "interrupted (process gone)" and "run.lock is free" in rows["dead"][5]
    assert rows["live"][0] == "running"
    assert rows["unlocked"][0] == "running"  # no lock file (a run from before locks): only the age can tell


def test_status_says_a_completed_run_lost_its_metrics(tmp_path):
    run = write_run(tmp_path, "done", val=linear_curve(2.0))
    (run / "metrics.jsonl").unlink()
    (row,) = status_rows(tmp_path, time.time())
    assert row[0] == "completed" and row[5].startswith("metrics.jsonl is missing: launch the same command again")
