"""Winners as data: the file that carries phase 3.2's winners from its report to the confirmation, and the
confirmation's winners to phases 3.3 and 4. No step edits a tracked file.

- The phase 3.2 report (`make report SWEEP="<the 3.2 sweep dirs>"`) writes winners.json beside its report.md,
  stage "screening"; the confirmation's report (`make report SWEEP=outputs/sweeps/phase32_confirm`) writes one with
  stage "confirmation" (write_from_report()).
- `make phase32-confirm` runs `python -m orthonoise.sweep.winners arms --stage screening --out <dir> <3.2 dirs>`:
  it reads the newest screening winners.json among the same preset's 3.2 sweep dirs and writes the confirmation's
  arm configs into <dir> (outputs/arms[-tiny]/confirmation: arm/*.yaml, confirm/arms.yaml), which the sweep then
  composes through `hydra.searchpath`. `make phase33`/`phase4` do the same with the confirmation's file into
  outputs/arms[-tiny]/carried. Without the file the step stops with one `error:` line naming what makes it.

The rule (docs/report.md, "Winners"; the report prints it beside the winners):
- baseline: the baseline-kind group (Muon) with the lowest mean final validation loss over its completed seeds
  (the best of the learning-rate grid; the point estimate, as the equal-budget rule asks);
- winners: method-kind groups (OrthoNoise) shown better than their baseline (simultaneous 95% upper bound of Δ
  below 0), best point estimate Δ first, at most MAX_WINNERS; exact ties in Δ go to the lower upper bound, then the
  label. When none is shown better, the best point estimate is carried alone with the status "not shown better,
  carried for confirmation" (screening) or "not confirmed, carried as the best estimate" (confirmation): the
  confirmation exists to test it on fresh seeds, and every later report judges it on its own runs. Groups with
  fewer than 2 completed seeds a side have no comparison and cannot win; with no comparison at all no file is
  written and the later phase refuses.

The format, version 2 (JSON):

    {"format": 2, "stage": "screening", "source": ["outputs/sweeps/phase32_alpha", ...], "rule": "...",
     "winners": [{"label": "alpha=0.005 noise=linear", "choices": {"optimizer": "orthonoise", "noise": "linear"},
                  "values": {"optimizer.alpha": 0.005}, "status": "shown better", "evidence": "Δ -2.1% [...]"}],
     "baseline": {"label": "optimizer.lr=0.0002", "choices": {"optimizer": "muon"},
                  "values": {"optimizer.lr": 0.0002}, "status": "best mean of 3 arms", "evidence": "..."}}
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from orthonoise.run.rundir import HYDRA_DIR, read_hydra_record

FORMAT = 2
FILE = "winners.json"
SCREENING, CONFIRMATION = "screening", "confirmation"
STAGES = (SCREENING, CONFIRMATION)
MAX_WINNERS = 2
# the config keys that tell 3.2's arms apart (the rest comes from the regime and the model)
ARM_KEYS = ("optimizer.lr", "optimizer.alpha", "optimizer.rank_threshold")
ARM_GROUPS = ("optimizer", "noise")
BASELINE_OPTIMIZER = "muon"
CONTROL_OPTIMIZER = "isotropic"
SHOWN, CONFIRMED = "shown better", "confirmed better"
CARRIED = {SCREENING: "not shown better, carried for confirmation",
           CONFIRMATION: "not confirmed, carried as the best estimate"}
RULE = ("Baseline: the Muon group with the lowest mean final val loss (the best of its learning-rate grid). "
        "Winners: OrthoNoise groups shown better than their baseline (simultaneous 95% upper bound of Δ < 0), best Δ "
        f"first, at most {MAX_WINNERS}; ties go to the lower upper bound, then the label. When none is shown better, "
        "the best point estimate is carried alone, marked as not shown better; a group needs 2 completed seeds a "
        "side to be compared at all.")


class WinnersError(ValueError):
    """A winners file that is missing or cannot be turned into arms."""


@dataclass
class Arm:
    label: str
    choices: dict[str, str]                    # config group -> option, e.g. {"optimizer": "orthonoise"}
    values: dict[str, object] = field(default_factory=dict)  # dotted key -> value, e.g. {"optimizer.alpha": 5e-3}
    status: str = ""                           # why it was picked (SHOWN, CARRIED[...], ...)
    evidence: str = ""                         # the numbers behind the pick

    @classmethod
    def from_run_dir(cls, run_dir: Path, label: str | None = None) -> Arm:
        """The arm a finished run belongs to, from its .hydra/ record."""
        record = read_hydra_record(run_dir)
        if not record.config:
            why = "; ".join(record.problems) or "missing"
            raise ValueError(f"{run_dir}: no usable {HYDRA_DIR}/config.yaml ({why})")
        return cls.from_record(record.config, record.choices, label or Path(run_dir).name)

    @classmethod
    def from_record(cls, config: dict, choices: dict, label: str) -> Arm:
        """The arm of a run with this composed config and these config-group choices (its .hydra/ record, as the
        report's runs already hold it)."""
        config = OmegaConf.create(config)
        picked = {g: choices[g] for g in ARM_GROUPS if g in choices}
        if picked.get("optimizer") == BASELINE_OPTIMIZER:
            picked = {"optimizer": BASELINE_OPTIMIZER}  # Muon has no noise: its schedule is no part of the arm
        values = {}
        for key in ARM_KEYS:
            value = OmegaConf.select(config, key, default="<absent>")
            if value != "<absent>":
                values[key] = value
        return cls(label, picked, values)

    def to_yaml(self, header: str) -> str:
        """The arm as an arm/*.yaml config (package _global_, group overrides, then values)."""
        lines = ["# @package _global_", *(f"# {line}" for line in header.splitlines()), "defaults:"]
        lines += [f"  - override /{group}: {option}" for group, option in self.choices.items()]
        body = OmegaConf.create()
        for key, value in self.values.items():
            OmegaConf.update(body, key, value, force_add=True)
        values = OmegaConf.to_yaml(body) if self.values else ""
        return "\n".join(lines) + "\n" + ("\n" + values if values else "")


# ---- the file ----

def write_winners(path: Path, stage: str, winners: list[Arm], baseline: Arm, source: list[str]) -> None:
    check(stage, winners, baseline)
    document = {"format": FORMAT, "stage": stage, "source": [str(s) for s in source], "rule": RULE,
                "winners": [asdict(w) for w in winners], "baseline": asdict(baseline)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


def read_winners(path: Path) -> tuple[str, list[Arm], Arm, list[str]]:
    """(stage, winners best first, baseline, source); WinnersError names what is wrong."""
    try:
        document = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise WinnersError(f"winners file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise WinnersError(f"winners file {path} is not JSON: {err}") from None
    version = document.get("format") if isinstance(document, dict) else None
    if version != FORMAT:
        raise WinnersError(f"winners file {path}: format={version!r} is not supported: must be {FORMAT}")
    try:
        winners = [Arm(**w) for w in document["winners"]]
        baseline = Arm(**document["baseline"])
        stage = document["stage"]
    except (KeyError, TypeError) as err:
        raise WinnersError(f"winners file {path}: {err}: needs stage, winners and baseline; each arm label, "
                           f"choices and values") from None
    check(stage, winners, baseline)
    return stage, winners, baseline, list(document.get("source", []))


def check(stage: str, winners: list[Arm], baseline: Arm) -> None:
    if stage not in STAGES:
        raise WinnersError(f"winners: stage={stage!r} is not supported: must be one of {', '.join(STAGES)}")
    if not 1 <= len(winners) <= MAX_WINNERS:
        raise WinnersError(f"winners: {len(winners)} given: must be 1 to {MAX_WINNERS} configurations")
    for arm in winners:
        if arm.choices.get("optimizer") in (None, BASELINE_OPTIMIZER):
            raise WinnersError(f"winners: {arm.label!r} has optimizer={arm.choices.get('optimizer')!r}: "
                               f"must be a noise-injecting optimizer")
    if baseline.choices.get("optimizer") != BASELINE_OPTIMIZER:
        raise WinnersError(f"baseline: optimizer={baseline.choices.get('optimizer')!r}: must be {BASELINE_OPTIMIZER}")


def newest_winners(sweep_dirs: list[Path], stage: str) -> Path | None:
    """The newest winners file of `stage` among the sweep dirs (the report writes it into the first dir it read)."""
    found = []
    for path in (Path(d) / FILE for d in sweep_dirs):
        if path.is_file():
            try:
                if json.loads(path.read_text()).get("stage") == stage:
                    found.append(path)
            except (json.JSONDecodeError, AttributeError):
                found.append(path)  # read_winners() will name what is wrong with it
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


# ---- the arm configs a later phase composes (through hydra.searchpath) ----

def stage_arms(stage: str, winners: list[Arm], baseline: Arm) -> dict[str, Arm]:
    """arm file name -> arm: the winner(s), the isotropic control at the winner's settings, the baseline."""
    names = ["orthonoise_best", "orthonoise_runner_up"][: len(winners) if stage == SCREENING else 1]
    arms = dict(zip(names, winners))
    control = winners[0]
    arms["isotropic_best"] = Arm(f"isotropic control at {control.label}",
                                 {**control.choices, "optimizer": CONTROL_OPTIMIZER}, dict(control.values))
    arms["baseline_best"] = baseline
    return arms


def write_arms(path: Path, out_dir: Path, stage: str) -> dict[str, Arm]:
    """The arm configs (out_dir/arm/*.yaml, out_dir/confirm/arms.yaml) from a winners file of `stage`."""
    found, winners, baseline, source = read_winners(path)
    if found != stage:
        raise WinnersError(f"winners file {path}: stage={found!r}: this phase needs the {stage} winners")
    arms = stage_arms(stage, winners, baseline)
    (out_dir / "arm").mkdir(parents=True, exist_ok=True)
    (out_dir / "confirm").mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / "arm").glob("*.yaml"):
        stale.unlink()  # an earlier file had a runner-up this one has not
    for name, arm in arms.items():
        header = (f"{name}: {arm.label} ({arm.status or 'as given'}). Generated from {path} ({stage}; "
                  f"{', '.join(source) or 'source not recorded'}) by `python -m orthonoise.sweep.winners arms`.")
        (out_dir / "arm" / f"{name}.yaml").write_text(arm.to_yaml(header))
    (out_dir / "confirm" / "arms.yaml").write_text(
        f"# @package _global_\n# The arms of sweeps/phase32_confirm.yaml, generated from {path}.\n"
        f"hydra:\n  sweeper:\n    params:\n      arm: {','.join(arms)}\n")
    return arms


# ---- picking them in a report (orthonoise/report/__main__.py calls write_from_report) ----

def stage_of(runs) -> str:
    """A phase 3.2 report reads the confirmation when its runs say so (sweeps/phase32_confirm.yaml's plan.stage)."""
    stages = {((run.config.get("plan") or {}).get("stage")) for run in runs}
    return CONFIRMATION if CONFIRMATION in stages else SCREENING


def _arm_of(group, status: str, evidence: str) -> Arm:
    run = next(iter(group.completed), None) or group.runs[0]
    arm = Arm.from_record(run.config, run.choices, group.label)
    arm.status, arm.evidence = status, evidence
    return arm


def _mean(values: dict) -> float:
    return sum(values.values()) / len(values)


def pick_baseline(groups) -> Arm | None:
    """The baseline-kind group with the lowest mean final val loss over ≥ 2 completed seeds."""
    from orthonoise.optim.registry import Role
    from orthonoise.report.groupstats import final_losses

    scored = [(_mean(losses), g.label, g) for g in groups
              if g.has_role(Role.BASELINE) and len(losses := final_losses(g)) >= 2]
    if not scored:
        return None
    mean, _, best = min(scored, key=lambda item: item[:2])
    return _arm_of(best, f"best mean of {len(scored)} baseline arm(s)", f"mean final val loss {mean:.4f}")


def pick_winners(groups, families, stage: str) -> list[Arm]:
    """Method-kind groups by the rule above: shown better first (best Δ), else the best point estimate, carried. A
    group that differs from its baseline in a setting the plan does not declare is never "shown better"."""
    from orthonoise.optim.registry import Role
    from orthonoise.report.fairness import like_against_like

    compared = []
    for g in groups:
        comp = families.get(id(g.baseline), None) if g.baseline is not None and not g.is_baseline else None
        comp = comp.comparisons.get(g.label) if comp else None
        if g.has_role(Role.METHOD) and comp is not None and comp.delta_pct == comp.delta_pct:
            compared.append((comp.delta_pct, comp.high_pct, g.label, g, comp))
    compared.sort(key=lambda item: item[:3])
    shown = [item for item in compared
             if item[1] < 0 and like_against_like(item[3], item[3].baseline)]
    status = SHOWN if stage == SCREENING else CONFIRMED
    picked = shown[:MAX_WINNERS] if shown else compared[:1]
    return [_arm_of(g, status if shown else CARRIED[stage],
                    f"Δ {delta:+.2f}% vs {g.baseline.label}, simultaneous 95% upper bound {high:+.2f}%")
            for delta, high, _, g, _ in picked]


def write_from_report(analysis, sweep_dirs: list[Path], out_dir: Path, phase: str | None) -> list[str]:
    """Phase 3.2 only: write out_dir/winners.json by the rule; the report's "Winners" section (markdown lines)."""
    if phase != "3.2":
        return []
    stage = stage_of(analysis.runs)
    winners, baseline = pick_winners(analysis.groups, analysis.families, stage), pick_baseline(analysis.groups)
    lines = ["", f"## Winners ({stage})", "", f"Rule: {RULE}", ""]
    if not winners or baseline is None:
        lines.append("No winners file written: no OrthoNoise group has a comparison with a baseline of 2 completed "
                     "seeds a side, so the next phase has nothing to run.")
        return lines
    path = out_dir / FILE
    write_winners(path, stage, winners, baseline, [str(d) for d in sweep_dirs])
    lines += [f"- {arm.label}: {arm.status} ({arm.evidence})" for arm in winners]
    lines += [f"- baseline {baseline.label}: {baseline.status} ({baseline.evidence})", "",
              f"Written to `{path}`; the next phase reads it from there."]
    return lines


# ---- the command the Makefile runs before a phase that needs winners ----

def report_command(sweep_dirs: list[Path]) -> str:
    return 'make report SWEEP="' + " ".join(str(d) for d in sweep_dirs) + '"'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orthonoise.sweep.winners", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["arms"], help="write the arm configs a later phase composes")
    parser.add_argument("sweep_dirs", nargs="+", type=Path, help="the sweep dirs whose report wrote the winners")
    parser.add_argument("--stage", choices=STAGES, required=True, help="whose winners: screening (3.2) or "
                                                                        "confirmation (phase32_confirm)")
    parser.add_argument("--out", type=Path, required=True, help="the generated config dir (hydra.searchpath)")
    parser.add_argument("--file", type=Path, help="a winners file instead of the newest in the sweep dirs")
    parser.add_argument("--made-by", default="the phase's launch", help="the command that runs those sweeps")
    args = parser.parse_args(argv)
    path = args.file or newest_winners(args.sweep_dirs, args.stage)
    try:
        if path is None:
            raise WinnersError(f"no {args.stage} winners: none of {', '.join(map(str, args.sweep_dirs))} holds "
                               f"{FILE}; run `{args.made_by}`, then `{report_command(args.sweep_dirs)}` (it writes "
                               f"{FILE})")
        arms = write_arms(path, args.out, args.stage)
    except WinnersError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"arms from {path} ({args.stage}) -> {args.out}: "
          + "; ".join(f"{name} = {arm.label} [{arm.status or 'as given'}]" for name, arm in arms.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
