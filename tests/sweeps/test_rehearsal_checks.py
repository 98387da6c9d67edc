"""The checks the whole-plan rehearsal makes (orthonoise/sweep/rehearsal.py), on small hand-made inputs: what a
report's interval is called, and when two runs count as bit-identical."""
import json
import math

import pytest
import torch

from orthonoise.run.checkpoint import save_checkpoint
from orthonoise.sweep.rehearsal import bit_identical, call_of


@pytest.mark.parametrize("low,high,call", [(-4.2, -2.0, "better"), (0.3, 2.5, "worse"), (-1.0, 1.0, "not different"),
                                           (-2.0, 0.0, "not different"), (math.nan, math.nan, "no interval")])
def test_a_reports_interval_is_called_as_the_report_words_it(low, high, call):
    assert call_of(low, high) == call


def fake_run(path, final_val_loss, params):
    path.mkdir()
    summary = {"status": "completed", "steps": 4, "final_val_loss": final_val_loss}
    (path / "summary.json").write_text(json.dumps(summary))
    save_checkpoint(path, {"step": 4, "model": params}, 4)
    return path


def test_bit_identical_means_the_same_final_loss_and_every_parameter_equal(tmp_path):
    params = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}
    a = fake_run(tmp_path / "a", 5.25, params)
    assert bit_identical(a, fake_run(tmp_path / "b", 5.25, {k: v.clone() for k, v in params.items()})) == []
    nudged = {**params, "b": torch.tensor([0.0, 0.0, 1e-7])}
    assert bit_identical(a, fake_run(tmp_path / "c", 5.25, nudged)) == ["parameter b differs"]
    assert bit_identical(a, fake_run(tmp_path / "d", 5.2500001, params)) == ["final_val_loss: 5.25 vs 5.2500001"]
