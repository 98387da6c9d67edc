"""Reading run directories: dedup of resumed steps, torn lines, missing and failed jobs."""

import json
import os
import time

from orthonoise.report.collect import find_run_dirs, load_run, load_runs
from orthonoise.run.rundir import HydraRecord, read_hydra_record, read_metrics

from .fake_runs import linear_curve, write_run


def test_resumed_run_keeps_the_last_occurrence_of_each_step(tmp_path):
    lines = [{"step": 10, "val_loss": 3.0}, {"step": 20, "val_loss": 2.9},
             {"step": 20, "val_loss": 2.5}, {"step": 30, "val_loss": 2.4}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + '\n{"step": 40, "val_lo')
    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == [10, 20, 30]  # torn last line skipped
    assert metrics[1]["val_loss"] == 2.5


def test_finds_nested_run_dirs_but_not_inside_a_run(tmp_path):
    write_run(tmp_path, "a/seed=1", val=linear_curve(2.0))
    write_run(tmp_path, "b", val=linear_curve(2.0))
    (tmp_path / "b" / "checkpoints" / ".hydra").mkdir(parents=True)  # inside a run: not a run
    (tmp_path / ".submitit" / "x" / ".hydra").mkdir(parents=True)  # launcher logs: skipped
    assert [p.relative_to(tmp_path).as_posix() for p in find_run_dirs(tmp_path)] == ["a/seed=1", "b"]


def test_run_reads_config_choices_and_summary(tmp_path):
    run = load_run(write_run(tmp_path, "r", seed=3, optimizer="orthonoise", alpha=1e-3, phase=3.2,
                             val=linear_curve(2.0), eff_rank={200: 12.5}))
    assert run.seed == 3 and run.phase == "3.2"
    assert run.optimizer_name == "OrthoNoise" and run.choices["optimizer"] == "orthonoise"
    assert run.state == "completed" and run.steps == 200 and run.max_steps == 200
    assert run.final_val_loss == 2.0 and run.last_eff_rank == 12.5


def test_job_with_only_hydra_dir_is_missing_and_later_stale(tmp_path):
    path = write_run(tmp_path, "r", status=None, metrics=False)
    run = load_run(path)
    assert run.state == "missing" and run.steps is None and run.final_val_loss is None
    now = time.time()
    assert not run.is_stale(now)
    assert run.is_stale(now + 3600)


def test_failed_job_keeps_its_error(tmp_path):
    run = load_run(write_run(tmp_path, "r", status="failed", error="CUDA out of memory", val={50: 2.5}))
    assert run.state == "failed" and run.error == "CUDA out of memory"
    assert run.final_val_loss == 2.5  # falls back to the last logged eval


def test_metrics_without_summary_is_running(tmp_path):
    run = load_run(write_run(tmp_path, "r", status=None, val={50: 2.5}))
    assert run.state == "running" and run.steps == 50


def test_tolerates_missing_hydra_yaml_and_truncated_summary(tmp_path):
    path = write_run(tmp_path, "r", hydra_yaml=False, val=linear_curve(2.0))
    (path / "summary.json").write_text('{"status": "compl')
    run = load_runs(tmp_path)[0]
    assert run.choices == {} and run.summary is None and run.state == "unreadable"  # atomic writes: never half a file
    assert run.error.startswith("summary.json cannot be read: JSONDecodeError")
    os.utime(path / "metrics.jsonl", (0, 0))
    assert load_run(path).last_activity == 0


def write_trial(root, name, seeds_done, seeds=(1, 2), alpha=1e-3):
    """An Optuna trial (sweeps/optuna.yaml): a Hydra job dir whose seed runs live in seed=<s>/ without .hydra/."""
    import shutil

    import yaml

    trial = write_run(root, name, seed=0, status=None, metrics=False, optimizer="orthonoise", alpha=alpha)
    config = yaml.safe_load((trial / ".hydra" / "config.yaml").read_text())
    config["objective"] = {"seeds": list(seeds)}
    (trial / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    for seed in seeds_done:
        scratch = write_run(root / "_scratch", f"{name}-{seed}", seed=seed, val=linear_curve(2.0 + seed / 100))
        shutil.rmtree(scratch / ".hydra")
        shutil.move(str(scratch), str(trial / f"seed={seed}"))
    shutil.rmtree(root / "_scratch", ignore_errors=True)
    return trial


def test_optuna_trials_are_read_as_their_seed_runs(tmp_path):
    write_trial(tmp_path, "optimizer.alpha=0.001", seeds_done=[1, 2])
    write_trial(tmp_path, "optimizer.alpha=0.01", seeds_done=[1], alpha=1e-2)  # seed 2 not started yet
    runs = {f"{r.path.parent.name}/{r.path.name}": r for r in load_runs(tmp_path)}
    assert sorted(runs) == ["optimizer.alpha=0.001/seed=1", "optimizer.alpha=0.001/seed=2",
                            "optimizer.alpha=0.01/seed=1", "optimizer.alpha=0.01/seed=2"]
    done = runs["optimizer.alpha=0.001/seed=2"]
    assert done.state == "completed" and done.seed == 2 and done.final_val_loss == 2.02
    assert done.optimizer_name == "OrthoNoise" and done.flat_config["optimizer.alpha"] == 1e-3
    assert runs["optimizer.alpha=0.01/seed=2"].state == "missing"


def test_any_logged_key_reads_as_an_eval_series(tmp_path):
    """A metric the report does not know yet (a new optimizer's, say) is readable by its key alone."""
    run = load_run(write_run(tmp_path, "r", val={50: 2.5, 100: 2.4}, logged={"noise_frac": {50: 0.5, 100: 0.25}}))
    assert run.evals("noise_frac") == [(50, 0.5), (100, 0.25)] and run.evals("not_logged") == []


def test_one_reader_of_the_hydra_record(tmp_path):
    path = write_run(tmp_path, "r", seed=5, sweep_preset="tiny", overrides=["+preset=tiny"], val={10: 2.0})
    record = read_hydra_record(path)
    assert record.config["seed"] == 5 and record.choices["preset"] == "tiny" and record.problems == []
    assert record.overrides == ["+preset=tiny", "seed=5"]
    (path / ".hydra" / "hydra.yaml").write_text("hydra: [unclosed")
    broken = read_hydra_record(path)
    assert broken.choices == {} and broken.config["seed"] == 5
    assert [p.split(":")[:2] for p in broken.problems] == [[".hydra/hydra.yaml cannot be read", " ParserError"]]
    assert read_hydra_record(tmp_path / "nothing") == HydraRecord()
