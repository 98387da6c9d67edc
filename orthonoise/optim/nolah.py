"""NOLAH, the archived comparison row: Muon plus three toggleable heuristics (update.py holds their math)."""
from torch import Tensor

from orthonoise.optim.muon import Muon, check
from orthonoise.optim.update import damp_large_gradients, gate_gradient, sigmoid_projection


class NOLAH(Muon):
    """Muon + the archived NOLAH heuristics, each toggleable:
    gate: g ← tanh(g)·|g| before the momentum;
    momentum_scaling: B ← scale·B where |g| is above its `percentile`-th percentile (after the momentum update);
    projection: U ← U·sigmoid(U) before orthogonalisation.
    """

    def __init__(self, params, *args, gate: bool = True, momentum_scaling: bool = True, projection: bool = True,
                 scale: float = 0.9, percentile: float = 95.0, **kwargs):
        check(0 < scale <= 1, "scale", scale, "in (0, 1]")
        check(0 < percentile < 100, "percentile", percentile, "in (0, 100)")
        super().__init__(params, *args, **kwargs)
        self._set_defaults(gate=gate, momentum_scaling=momentum_scaling, projection=projection, scale=scale,
                           percentile=percentile)

    def _gradient(self, group, g: Tensor) -> Tensor:
        return gate_gradient(g) if group["gate"] else g

    def _after_momentum(self, group, g: Tensor, buf: Tensor) -> None:
        if group["momentum_scaling"]:
            damp_large_gradients(buf, g, group["percentile"], group["scale"])

    def _before_orthogonalize(self, group, keys, U: Tensor, plan) -> Tensor:
        return sigmoid_projection(U) if group["projection"] else U
