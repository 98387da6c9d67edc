"""`python -m orthonoise.status`: every run under outputs/ with state, step, val loss and age."""

import json
import os
import time

from orthonoise.status import main, status_rows

from report.fake_runs import linear_curve, write_run


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
