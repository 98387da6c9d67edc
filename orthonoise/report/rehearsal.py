"""Whether the runs are a rehearsal of the plan rather than its result, and what was rehearsed.

A run is a rehearsal when it used the tiny preset (sweeps/preset/tiny.yaml: the `preset` choice in its Hydra
record, or `+preset=tiny` among its overrides), trained the tiny model in a phase of the plan (the plan's phases
train Granite models), or had its step count set on the command line (`trainer.max_steps=N` among its overrides:
not the steps the sweep file plans). The report then says REHEARSAL, with the model, the steps and the tokens of
the final eval, in its title, first paragraph, verdict heading, criteria.csv and plot subtitles.
"""
from __future__ import annotations

from dataclasses import dataclass

from .collect import Run

PRESET_GROUP = "preset"  # the sweeps/preset/ config group
TINY = "tiny"            # the tiny preset, and the tiny model (conf/model/tiny.yaml)
MAX_STEPS_KEY = "trainer.max_steps"


def _override(run: Run, key: str) -> str | None:
    """The value the run's command line gave `key` (`key=v`, `+key=v` or `++key=v`), None when it gave none."""
    for item in run.overrides:
        name, sep, value = str(item).partition("=")
        if sep and name.lstrip("+") == key:
            return value
    return None


def reasons(run: Run) -> list[str]:
    """Why `run` is a rehearsal run; empty for a run of the plan."""
    why = []
    if run.choices.get(PRESET_GROUP) == TINY or _override(run, PRESET_GROUP) == TINY:
        why.append("tiny preset")
    elif run.phase is not None and run.flat_config.get("model.preset") == TINY:
        why.append("tiny model")
    steps = _override(run, MAX_STEPS_KEY)
    if steps is not None:
        why.append(f"{MAX_STEPS_KEY}={steps} on the command line")
    return why


def eval_tokens(run: Run) -> str:
    """The validation tokens of the run's final eval (trainer.eval_windows): final_eval_batches global batches of
    seq_len tokens, or the whole validation split."""
    config = run.flat_config
    batches = config.get("trainer.final_eval_batches")
    if batches == 0:
        return "the whole validation split"
    sizes = [config.get(k) for k in ("hardware.batch_size", "hardware.world_size", "data.seq_len")]
    if not isinstance(batches, int) or not all(isinstance(v, int) for v in sizes):
        return "unknown eval tokens"
    return f"{batches * sizes[0] * sizes[1] * sizes[2]:,} eval tokens"


@dataclass(frozen=True)
class Rehearsal:
    why: tuple[str, ...]      # e.g. ("tiny preset",)
    what: tuple[str, ...]     # e.g. ("tiny model", "10 steps", "2,048 eval tokens")
    runs: int                 # rehearsal runs
    of: int                   # runs read

    @property
    def label(self) -> str:
        """'REHEARSAL, tiny preset: tiny model, 10 steps, 2,048 eval tokens'"""
        share = "" if self.runs == self.of else f" ({self.runs} of {self.of} runs)"
        return f"REHEARSAL, {' and '.join(self.why)}: {', '.join(self.what)}{share}"


def _values(runs: list[Run], of_run) -> str:
    return "/".join(sorted({str(of_run(r)) for r in runs}, key=lambda v: (len(v), v)))


def rehearsal_of(runs: list[Run]) -> Rehearsal | None:
    """The rehearsal the runs are, None when every run is a run of the plan."""
    rehearsed = [(r, why) for r in runs if (why := reasons(r))]
    if not rehearsed:
        return None
    chosen = [r for r, _ in rehearsed]
    why = tuple(dict.fromkeys(w for _, whys in rehearsed for w in whys))
    what = (_values(chosen, lambda r: r.flat_config.get("model.preset", "?")) + " model",
            _values(chosen, lambda r: r.flat_config.get(MAX_STEPS_KEY, "?")) + " steps",
            _values(chosen, eval_tokens))
    return Rehearsal(why, what, len(chosen), len(runs))
