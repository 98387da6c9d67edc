"""The trainer's side of an optimizer: what it calls besides torch.optim.Optimizer's step/zero_grad/state_dict."""
from __future__ import annotations

import torch


class TrainerHooks:
    """Declared hooks with no-op defaults; an optimizer class inherits them and overrides those it has (the Muon
    family does). The trainer reaches them through `Optimizers`."""

    def prepare(self) -> None:
        """Called before each step's forward+backward: work that needs no gradient (the noise variants draw the
        next step's noise, on a GPU on a side stream, so it overlaps forward+backward). Never changes the steps."""

    def metrics(self) -> dict[str, float]:
        """Measurements merged into metrics.jsonl at eval steps (may cost an SVD: called only there)."""
        return {}

    def summary(self) -> dict:
        """Fields merged into the run's summary.json when it ends."""
        return {}


class Optimizers(list):
    """The run's optimizers (torch.optim.Optimizers, stepped, zeroed and checkpointed one by one), and the
    TrainerHooks of those that have them, named by whoever builds the list (`build_optimizers`)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer], hooked: list[TrainerHooks]):
        super().__init__(optimizers)
        self.hooked = hooked

    def prepare(self) -> None:
        for opt in self.hooked:
            opt.prepare()

    def metrics(self) -> dict[str, float]:
        return {k: v for opt in self.hooked for k, v in opt.metrics().items()}

    def summary(self) -> dict:
        return {k: v for opt in self.hooked for k, v in opt.summary().items()}
