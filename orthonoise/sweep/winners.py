"""Phase 3.2's winners: the one file that carries them from the 3.2 report to the confirmation sweep.

The report writes it with write_winners() (default path: outputs/sweeps/phase32_alpha/winners.json, beside its
report.md); `make phase32-confirm` runs `python -m orthonoise.sweep.winners [FILE]`, which turns it into the arm configs
sweeps/phase32_confirm.yaml runs (and phases 3.3 and 4 carry): nobody copies a winner into a YAML file by hand.

The format, version 1 (JSON):

    {
      "format": 1,
      "source": ["outputs/sweeps/phase32_alpha", "outputs/sweeps/phase32_baseline", ...],   # what was read
      "winners": [                      # best first: 1 or 2 OrthoNoise configurations
        {"label": "alpha=0.005 linear",
         "choices": {"optimizer": "orthonoise", "noise": "linear"},     # config-group choices
         "values": {"optimizer.alpha": 0.005}}                          # dotted config keys
      ],
      "baseline": {"label": "lr=0.0002", "choices": {"optimizer": "muon"}, "values": {"optimizer.lr": 0.0002}}
    }

Arms it writes into sweeps/arm/: orthonoise_best (winner 1), orthonoise_runner_up (winner 2, when there is one),
isotropic_best (winner 1 with the isotropic control's optimizer: the orthogonality test at the winning settings)
and baseline_best (the Muon learning rate 3.2 found best); sweeps/confirm/arms.yaml lists them for the sweep.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from orthonoise import REPO_ROOT
from orthonoise.run.rundir import HYDRA_DIR

ROOT = REPO_ROOT
SWEEPS = ROOT / "sweeps"
DEFAULT_PATH = Path("outputs/sweeps/phase32_alpha/winners.json")
FORMAT = 1
# the config keys that tell 3.2's arms apart (the rest comes from the regime and the model)
ARM_KEYS = ("optimizer.lr", "optimizer.alpha", "optimizer.rank_threshold")
ARM_GROUPS = ("optimizer", "noise")
BASELINE_OPTIMIZER = "muon"
CONTROL_OPTIMIZER = "isotropic"


class WinnersError(ValueError):
    """A winners file that cannot be turned into arms."""


@dataclass
class Arm:
    label: str
    choices: dict[str, str]                    # config group -> option, e.g. {"optimizer": "orthonoise"}
    values: dict[str, object] = field(default_factory=dict)  # dotted key -> value, e.g. {"optimizer.alpha": 5e-3}

    @classmethod
    def from_run_dir(cls, run_dir: Path, label: str | None = None) -> Arm:
        """The arm a finished run belongs to, from its .hydra/ record (what the report picks winners from)."""
        config = OmegaConf.load(Path(run_dir) / HYDRA_DIR / "config.yaml")
        choices = OmegaConf.load(Path(run_dir) / HYDRA_DIR / "hydra.yaml").hydra.runtime.choices
        picked = {g: choices[g] for g in ARM_GROUPS if g in choices}
        if picked.get("optimizer") == BASELINE_OPTIMIZER:
            picked = {"optimizer": BASELINE_OPTIMIZER}  # Muon has no noise: its schedule is no part of the arm
        values = {}
        for key in ARM_KEYS:
            value = OmegaConf.select(config, key, default="<absent>")
            if value != "<absent>":
                values[key] = value
        return cls(label or Path(run_dir).name, picked, values)

    def to_yaml(self, header: str) -> str:
        """The arm as a sweeps/arm/*.yaml config (package _global_, group overrides, then values)."""
        lines = ["# @package _global_", *(f"# {line}" for line in header.splitlines()), "defaults:"]
        lines += [f"  - override /{group}: {option}" for group, option in self.choices.items()]
        body = OmegaConf.create()
        for key, value in self.values.items():
            OmegaConf.update(body, key, value, force_add=True)
        values = OmegaConf.to_yaml(body) if self.values else ""
        return "\n".join(lines) + "\n" + ("\n" + values if values else "")


def write_winners(path: Path, winners: list[Arm], baseline: Arm, source: list[str]) -> None:
    """What the 3.2 report calls: best first, 1 or 2 winners, and the baseline at its best learning rate."""
    check(winners, baseline)
    document = {"format": FORMAT, "source": [str(s) for s in source],
                "winners": [asdict(w) for w in winners], "baseline": asdict(baseline)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


def read_winners(path: Path) -> tuple[list[Arm], Arm, list[str]]:
    """(winners best first, baseline, source) from a winners file; WinnersError names what is wrong."""
    try:
        document = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise WinnersError(f"winners file {path} does not exist: run the phase 3.2 report first (it writes it), "
                           f"or pass WINNERS=<file>") from None
    except json.JSONDecodeError as err:
        raise WinnersError(f"winners file {path} is not JSON: {err}") from None
    version = document.get("format") if isinstance(document, dict) else None
    if version != FORMAT:
        raise WinnersError(f"winners file {path}: format={version!r} is not supported: must be {FORMAT}")
    try:
        winners = [Arm(**w) for w in document["winners"]]
        baseline = Arm(**document["baseline"])
    except (KeyError, TypeError) as err:
        raise WinnersError(f"winners file {path}: {err}: each arm needs label, choices and values") from None
    check(winners, baseline)
    return winners, baseline, list(document.get("source", []))


def check(winners: list[Arm], baseline: Arm) -> None:
    if not 1 <= len(winners) <= 2:
        raise WinnersError(f"winners: {len(winners)} given: must be 1 or 2 configurations")
    for arm in winners:
        if arm.choices.get("optimizer") in (None, BASELINE_OPTIMIZER):
            raise WinnersError(f"winners: {arm.label!r} has optimizer={arm.choices.get('optimizer')!r}: "
                               f"must be a noise-injecting optimizer")
    if baseline.choices.get("optimizer") != BASELINE_OPTIMIZER:
        raise WinnersError(f"baseline: optimizer={baseline.choices.get('optimizer')!r}: must be {BASELINE_OPTIMIZER}")


def confirmation_arms(winners: list[Arm], baseline: Arm) -> dict[str, Arm]:
    """arm file name -> arm, in the order the confirmation sweep runs them."""
    names = ["orthonoise_best", "orthonoise_runner_up"][: len(winners)]
    arms = dict(zip(names, winners))
    control = winners[0]
    arms["isotropic_best"] = Arm(f"isotropic control at {control.label}",
                                 {**control.choices, "optimizer": CONTROL_OPTIMIZER}, dict(control.values))
    arms["baseline_best"] = baseline
    return arms


def apply(path: Path, sweeps_dir: Path = SWEEPS) -> list[str]:
    """Write the confirmation sweep's arm configs from the winners file; returns the arm names."""
    winners, baseline, source = read_winners(path)
    arms = confirmation_arms(winners, baseline)
    stale = sweeps_dir / "arm" / "orthonoise_runner_up.yaml"
    if "orthonoise_runner_up" not in arms and stale.exists():
        stale.unlink()  # an earlier winners file had two winners; this one has one
    for name, arm in arms.items():
        header = (f"{name}: {arm.label}. Written by `python -m orthonoise.sweep.winners {path}`\n"
                  f"(make phase32-confirm) from phase 3.2's winners ({', '.join(source) or 'source not recorded'}); "
                  "do not edit by hand.")
        (sweeps_dir / "arm" / f"{name}.yaml").write_text(arm.to_yaml(header))
    (sweeps_dir / "confirm" / "arms.yaml").write_text(
        "# @package _global_\n"
        f"# The arms of sweeps/phase32_confirm.yaml, written by `python -m orthonoise.sweep.winners {path}`.\n"
        f"hydra:\n  sweeper:\n    params:\n      arm: {','.join(arms)}\n")
    return list(arms)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orthonoise.sweep.winners", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH, help="the winners file")
    args = parser.parse_args(argv)
    try:
        names = apply(args.path)
    except WinnersError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"confirmation arms from {args.path}: {', '.join(names)} (sweeps/arm/, sweeps/confirm/arms.yaml)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
