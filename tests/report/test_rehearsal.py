"""Once on a real rehearsal sweep of the embedded default (tiny model, local corpus, CPU)."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from orthonoise.report.__main__ import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / "train.py").exists(), reason="train.py (the trainer) is not in the tree yet")
def test_rehearsal_sweep_gives_a_phase_31_verdict(tmp_path):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "train.py", "-m", "optimizer=muon,orthonoise", "seed=1,2", "phase=3.1",
               "trainer.max_steps=20", "trainer.eval_every=10", "trainer.log_every=5", "trainer.eval_batches=2",
               "trainer.progress_bar=false", "hardware.batch_size=4", "logger=disabled",
               f"hydra.sweep.dir={sweep}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]

    assert main([str(sweep)]) == 0
    with open(sweep / "criteria.csv") as handle:
        rows = list(csv.DictReader(handle))
    verdicts = {row["criterion"]: row["verdict"] for row in rows}
    # the tiny model in a phase, 20 steps from the command line: labelled a rehearsal, with what it was
    assert {row["rehearsal"] for row in rows} == {"REHEARSAL, tiny model and trainer.max_steps=20 on the command "
                                                  "line: tiny model, 20 steps, the whole validation split"}
    assert verdicts["No crashes"] == "PASS"
    assert verdicts["Effective rank logged"] == "PASS"
    # TOST with 2 seeds: decidable when the tiny model's seeds agree, else honestly INCONCLUSIVE
    assert verdicts["Final val loss within 5% of baseline (TOST)"] in ("PASS", "FAIL", "INCONCLUSIVE")
    with open(sweep / "groups.csv") as handle:
        groups = {row["group"]: row for row in csv.DictReader(handle)}
    assert set(groups) == {"optimizer=muon", "optimizer=orthonoise"}
    assert all(row["n_completed"] == "2" for row in groups.values())
    assert groups["optimizer=orthonoise"]["baseline"] == "optimizer=muon"
    assert (sweep / "val_loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
