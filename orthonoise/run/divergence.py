"""When a run has stopped learning for good: the checks that end it as `diverged`, each naming its cause.

The trainer itself handles NaN/Inf losses and gradient norms (it decides whether a step is applied, and skips up
to `trainer.skip_nonfinite` of them). This class watches the finite numbers:
- a train loss above `trainer.diverge_loss`;
- a validation loss that is NaN/Inf, or above `trainer.diverge_val_ratio` × the run's first one (step 0): a run
  whose loss went 9.0 → 205 has diverged even though no number was infinite;
- a collapse, for `trainer.collapse_evals` evaluations in a row: every gradient norm since the evaluation before
  was exactly 0 (no parameter can move again), or the validation loss sits at ln(vocab size), which is what a
  model predicting the uniform distribution scores (random initialisation is near it too, so step 0 is exempt).
Its counters are part of the checkpoint (state_dict), so a resumed run decides exactly as an unbroken one.
"""
from __future__ import annotations

import math

from omegaconf import DictConfig

from orthonoise.errors import ConfigError

UNIFORM_TOL = 1e-3  # |val_loss − ln V| below this is the uniform prediction (which scores exactly ln V)


class Divergence:
    def __init__(self, trainer: DictConfig):
        self.loss_limit, self.val_ratio = trainer.diverge_loss, trainer.get("diverge_val_ratio")
        self.collapse_evals = trainer.get("collapse_evals", 0)
        if self.val_ratio is not None and not (isinstance(self.val_ratio, (int, float)) and self.val_ratio > 1):
            raise ConfigError(f"trainer.diverge_val_ratio={self.val_ratio} is out of range: must be a number > 1 "
                              f"(the val loss may grow to that multiple of its first value), or null for no limit")
        if not isinstance(self.collapse_evals, int) or isinstance(self.collapse_evals, bool) or self.collapse_evals < 0:
            raise ConfigError(f"trainer.collapse_evals={self.collapse_evals} is out of range: must be an integer ≥ 0 "
                              f"(0 = no collapse check)")
        self.first_val, self.streak, self.zero_grads = None, 0, True

    def after_step(self, step: int, train_loss: float, grad_norm: float) -> str | None:
        """The cause when this (finite) step ends the run, else None."""
        self.zero_grads = self.zero_grads and grad_norm == 0
        if train_loss > self.loss_limit:
            return f"train loss {train_loss:.4g} above trainer.diverge_loss at step {step}"
        return None

    def after_eval(self, step: int, val_loss: float, vocab_size: int) -> str | None:
        """The cause when this evaluation ends the run, else None."""
        if not math.isfinite(val_loss):
            return f"non-finite validation loss at step {step}"
        if self.first_val is None:
            self.first_val = val_loss
        if self.val_ratio is not None and val_loss > self.val_ratio * self.first_val:
            return (f"validation loss {val_loss:.4g} above trainer.diverge_val_ratio={self.val_ratio} × its first "
                    f"value {self.first_val:.4g} at step {step}")
        uniform = abs(val_loss - math.log(vocab_size)) < UNIFORM_TOL
        collapsed = step > 0 and (self.zero_grads or uniform)
        why = "gradient norm exactly 0 at every step" if self.zero_grads else f"validation loss at ln({vocab_size})"
        self.streak, self.zero_grads = (self.streak + 1 if collapsed else 0), True
        if self.collapse_evals and self.streak >= self.collapse_evals:
            return f"collapse: {why} for {self.streak} evaluations in a row (trainer.collapse_evals), at step {step}"
        return None

    def state_dict(self) -> dict:
        return {"first_val": self.first_val, "streak": self.streak, "zero_grads": self.zero_grads}

    def load_state_dict(self, state: dict) -> None:
        self.first_val, self.streak, self.zero_grads = state["first_val"], state["streak"], state["zero_grads"]
