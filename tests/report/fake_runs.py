"""Write synthetic run directories through the run-directory contract (orthonoise/run/rundir.py) that the trainer
writes through, with the config keys `python train.py optimizer=... noise=... --cfg job` composes."""

from __future__ import annotations

from pathlib import Path

import yaml

from orthonoise.run.rundir import HYDRA_DIR, SUMMARY_FILE, Status, append_metrics, write_json_atomic

TARGETS = {
    "muon": "orthonoise.optim.Muon",
    "orthonoise": "orthonoise.optim.OrthoNoise",
    "isotropic": "orthonoise.optim.IsotropicNoise",
    "nolah": "orthonoise.optim.NOLAH",
    "adamw": "torch.optim.AdamW",
}


# summary.json's `provenance` as orthonoise/run/identity.py writes it: every fixture run ran this code unless a test
# says otherwise (provenance=None: a run from before provenance was recorded)
PROVENANCE = {"git_commit": "0123456789abcdef0123456789abcdef01234567", "git_dirty": False, "git_diff_sha256": None,
              "torch": "2.13.0", "transformers": "5.0.0", "mamba_ssm": None, "python": "3.12.3", "host": "node1",
              "device_name": "NVIDIA H100 80GB HBM3"}
END_FACTOR = 0.1  # conf/noise/*.yaml: an annealed alpha ends at alpha * end_factor


def linear_curve(final: float, max_steps: int = 200, every: int = 50, early: float = 0.10) -> dict[int, float]:
    """Val loss at each eval step, falling linearly from final*(1+early) at step 0 to `final`."""
    return {s: final * (1 + early * (1 - s / max_steps)) for s in range(every, max_steps + 1, every)}


def make_config(*, seed: int, optimizer: str = "muon", alpha=None, schedule: str = "constant",
                rank_threshold=None, preset: str = "granite-350m", pretrained: bool = False,
                max_steps: int = 200, phase=None, lr: float = 0.02, declared: list | None = None,
                sweep_preset: str | None = None, final_eval_batches: int = 0) -> tuple[dict, dict]:
    """A run's composed config and choices: the plan's model by default; `declared` is the sweep file's
    plan.declared_differences, `sweep_preset` a `+preset=` choice (tiny: a rehearsal)."""
    optim = {"_target_": TARGETS[optimizer], "_partial_": True, "lr": lr}
    if optimizer != "adamw":  # conf/optimizer/muon.yaml and the optimizers built on it
        optim.update(momentum=0.95)
    if optimizer in ("orthonoise", "isotropic"):
        # conf/optimizer/{orthonoise,isotropic}.yaml; Hydra saves config.yaml with interpolations unresolved
        optim.update(alpha=alpha, schedule="${noise.schedule}", end_factor="${noise.end_factor}",
                     schedule_steps="${noise.steps}", rank_threshold=rank_threshold, noise_into_buffer=False)
    config = {
        "model": {"preset": preset, "pretrained": pretrained, "config": {"hidden_size": 64}},
        "data": {"name": "local", "seq_len": 128, "cache_dir": ".cache/data"},
        "optimizer": optim,
        "noise": {"schedule": schedule, "end_factor": END_FACTOR, "steps": "${trainer.max_steps}"},  # conf/noise/*.yaml
        "hardware": {"name": "cpu", "world_size": 1, "batch_size": 4},
        "logger": {"mode": "disabled", "group": phase},
        "seed": seed,
        "phase": phase,
        "tags": [],
        "trainer": {"max_steps": max_steps, "eval_every": 50, "progress_bar": False,
                    "final_eval_batches": final_eval_batches},
    }
    if declared is not None:
        config["plan"] = {"declared_differences": list(declared)}
    choices = {"model": preset, "data": "local", "optimizer": optimizer, "noise": schedule,
               "hardware": "cpu", "logger": "disabled", "hydra/launcher": "basic"}
    if sweep_preset is not None:
        choices["preset"] = sweep_preset
    return config, choices


def write_run(root: Path, name: str, *, seed: int = 1, val: dict[int, float] | None = None,
              eff_rank: dict[int, float] | None = None, logged: dict[str, dict[int, float]] | None = None,
              status: Status | str | None = Status.COMPLETED,
              error: str | None = None, diverged: str | None = None, gpu_hours: float = 0.0,
              tokens_per_s: float = 1000.0, wall_time_s: float = 60.0, hydra_yaml: bool = True, metrics: bool = True,
              final_alpha: float | None = None, provenance: dict | None = PROVENANCE, config_changes: list = (),
              overrides: list = (), **config_kwargs) -> Path:
    """One run dir. `val` maps eval step -> val loss, `logged` any other metric key -> {eval step: value};
    status None writes no summary.json. A completed noise run records the alpha it ended at as the trainer does
    (the schedule spans the run: alpha * end_factor unless constant); `final_alpha` says another. `provenance` and
    `config_changes` are the summary's (None: no provenance, as in a run from before it was recorded); `overrides`
    the command line's, before the seed."""
    run = Path(root) / name
    hydra_dir = run / HYDRA_DIR
    hydra_dir.mkdir(parents=True)
    config, choices = make_config(seed=seed, **config_kwargs)
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump(config))
    if hydra_yaml:
        (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"seed={seed}"]))
    val = val or {}
    if metrics and val:
        for step in range(10, max(val) + 1, 10):
            line = {"step": step, "train_loss": 3.0, "lr": 0.02, "tokens": step * 2048, "step_time_s": 0.1}
            if step in val:
                line.update(val_loss=val[step], val_ppl=2.718 ** val[step])
                if eff_rank and step in eff_rank:
                    line.update(eff_rank=eff_rank[step], eff_rank_frac=eff_rank[step] / 64)
                line.update({key: by_step[step] for key, by_step in (logged or {}).items() if step in by_step})
            append_metrics(run, line)
    if status is not None:
        status = Status(status)
        losses = list(val.values())
        summary = {
            # a completed run trained every step; any other stopped at its last eval
            "status": status.value, "max_steps": config["trainer"]["max_steps"],
            "steps": config["trainer"]["max_steps"] if status == Status.COMPLETED else max(val) if val else 0,
            "final_val_loss": losses[-1] if losses and status == Status.COMPLETED else None,
            "best_val_loss": min(losses) if losses else None,
            "best_step": min(val, key=val.get) if val else None, "wall_time_s": wall_time_s,
            "tokens": 1000, "tokens_per_s": tokens_per_s, "n_params": 1000, "device": "cpu",
            "world_size": 1, "gpu_hours": gpu_hours, "error": error, "diverged": diverged,
            "updated_at": "2025-01-01T00:00:00", "config_fingerprint": "0123456789abcdef",
            "config_changes": list(config_changes),
        }
        if provenance is not None:
            summary["provenance"] = provenance
        final_alpha = final_alpha if final_alpha is not None else _ended_at(config, status)
        if final_alpha is not None:
            summary["final_alpha"] = final_alpha
        write_json_atomic(run / SUMMARY_FILE, summary)
    return run


def _ended_at(config: dict, status: Status) -> float | None:
    alpha = config["optimizer"].get("alpha")
    if alpha is None or status != Status.COMPLETED:
        return None
    return alpha if config["noise"]["schedule"] == "constant" else alpha * config["noise"]["end_factor"]
