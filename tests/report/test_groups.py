"""Grouping by config minus seed, readable labels, baseline matching."""

from orthonoise.report.collect import load_runs
from orthonoise.report.groups import assign_baselines, group_runs

from .fake_runs import linear_curve, write_run


def _groups(root, selectors=None):
    groups = group_runs(load_runs(root))
    assign_baselines(groups, selectors)
    return {g.label: g for g in groups}


def test_seeds_of_one_config_form_one_group_labelled_by_what_differs(tmp_path):
    for seed in (1, 2):
        write_run(tmp_path, f"m{seed}", seed=seed, val=linear_curve(2.0))
        write_run(tmp_path, f"o{seed}", seed=seed, optimizer="orthonoise", alpha=1e-3, val=linear_curve(2.0))
        write_run(tmp_path, f"p{seed}", seed=seed, optimizer="orthonoise", alpha=5e-3, val=linear_curve(2.0))
    groups = _groups(tmp_path)
    assert set(groups) == {"optimizer=muon", "optimizer=orthonoise alpha=0.001", "optimizer=orthonoise alpha=0.005"}
    assert all(len(g.runs) == 2 for g in groups.values())
    base = groups["optimizer=muon"]
    assert base.is_baseline and groups["optimizer=orthonoise alpha=0.001"].baseline is base


def test_baseline_must_match_model_and_trainer(tmp_path):
    write_run(tmp_path, "m1", preset="granite-1b", pretrained=True, max_steps=500, val=linear_curve(2.0, 500))
    write_run(tmp_path, "m2", preset="granite-1b", pretrained=False, max_steps=1000, val=linear_curve(2.0, 1000))
    write_run(tmp_path, "o1", optimizer="orthonoise", alpha=5e-3, preset="granite-1b", pretrained=True,
              max_steps=500, val=linear_curve(2.0, 500))
    write_run(tmp_path, "o2", optimizer="orthonoise", alpha=5e-3, preset="granite-350m", max_steps=500,
              val=linear_curve(2.0, 500))
    groups = [g for g in _groups(tmp_path).values()]
    fine_tune = next(g for g in groups if g.kind == "orthonoise" and g.config["model.pretrained"])
    other_model = next(g for g in groups if g.kind == "orthonoise" and g.config["model.preset"] == "granite-350m")
    assert fine_tune.baseline.config["model.pretrained"] is True
    assert fine_tune.baseline.config["trainer.max_steps"] == 500
    assert other_model.baseline is None


def test_labels_without_hydra_yaml_use_the_optimizer_class(tmp_path):
    write_run(tmp_path, "m", hydra_yaml=False, val=linear_curve(2.0))
    write_run(tmp_path, "a", optimizer="adamw", hydra_yaml=False, val=linear_curve(2.0))
    assert set(_groups(tmp_path)) == {"optimizer=Muon", "optimizer=AdamW"}


def test_baseline_override(tmp_path):
    write_run(tmp_path, "m", val=linear_curve(2.0))
    write_run(tmp_path, "a", optimizer="adamw", val=linear_curve(2.0))
    groups = _groups(tmp_path, ["optimizer=adamw"])
    assert groups["optimizer=adamw"].is_baseline and groups["optimizer=muon"].baseline is groups["optimizer=adamw"]
    groups = _groups(tmp_path, ["optimizer._target_=AdamW"])
    assert groups["optimizer=adamw"].is_baseline and not groups["optimizer=muon"].is_baseline


def test_phase_does_not_split_a_config_and_a_repeated_seed_is_one_replicate(tmp_path):
    for phase in ("3.1", "3.2"):
        for seed in (1, 2):
            write_run(tmp_path, f"{phase}/o{seed}", seed=seed, phase=phase, optimizer="orthonoise", alpha=1e-3,
                      val=linear_curve(2.0), status="completed" if phase == "3.2" else "diverged")
    (group,) = _groups(tmp_path).values()
    assert len(group.runs) == 4 and sorted(group.replicates) == [1, 2]
    assert all(run.state == "completed" for run in group.replicates.values())  # the finished run stands for it
    assert sorted(group.duplicates) == [1, 2] and group.seed_counts() == "2/2 completed"


def test_an_annealed_alpha_is_labelled_with_its_end_where_alpha_is_a_label_key(tmp_path):
    for seed in (1, 2):
        for alpha in (1e-2, 1e-3):
            write_run(tmp_path, f"a{alpha}/seed={seed}", seed=seed, optimizer="orthonoise", alpha=alpha,
                      schedule="linear", val={100: 2.0})
    write_run(tmp_path, "short/seed=3", seed=3, optimizer="orthonoise", alpha=1e-2, schedule="linear",
              val={100: 2.0}, final_alpha=5.5e-3)  # a schedule longer than the run (noise.steps=1000)
    assert sorted(_groups(tmp_path)) == ["alpha=0.001→0.0001", "alpha=0.01→0.001/0.0055"]
