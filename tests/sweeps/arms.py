"""Generated arm configs for the tests that compose the sweeps whose arms come from winners (phase32_confirm, 3.3,
phase 4), made the way `make phase32-confirm` makes them: a winners file -> a config dir on hydra.searchpath."""
from pathlib import Path

from orthonoise.sweep.winners import SCREENING, Arm, write_arms, write_winners

WINNER = Arm("alpha=0.005 linear", {"optimizer": "orthonoise", "noise": "linear"}, {"optimizer.alpha": 0.005})
RUNNER_UP = Arm("alpha=0.001 rank 0.3", {"optimizer": "orthonoise", "noise": "constant"},
                {"optimizer.alpha": 0.001, "optimizer.rank_threshold": 0.3})
BASELINE = Arm("lr=0.0002", {"optimizer": "muon"}, {"optimizer.lr": 0.0002})


def generated_arms(directory: Path, winners=(WINNER,), stage: str = SCREENING) -> list[str]:
    """Write a winners file and its arm configs under `directory`; the override that composes them."""
    write_winners(directory / "winners.json", stage, list(winners), BASELINE, ["test"])
    write_arms(directory / "winners.json", directory / "arms", stage)
    return [f"hydra.searchpath=[file://{directory / 'arms'}]"]
