"""build_optimizers: the Muon-family optimizer for hidden matrices plus its AdamW partner, from the config."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from orthonoise.optim.muon import Muon
from orthonoise.optim.params import split_parameters
from orthonoise.optim.protocol import Optimizers

if TYPE_CHECKING:  # Hydra and OmegaConf are only needed by the trainer; bench/ imports this package with torch alone
    from omegaconf import DictConfig


def build_optimizers(model: torch.nn.Module, cfg: DictConfig, log=print) -> Optimizers:
    """`cfg.optimizer` (a Hydra `_partial_` node) takes the hidden 2-D matrices if it is a Muon-family class,
    `cfg.adamw` the rest; any other optimizer class (the AdamW baseline) takes every parameter alone.
    The Muon-family optimizer is the one with TrainerHooks."""
    from hydra.utils import get_class, instantiate

    make = instantiate(cfg.optimizer, _convert_="all")
    if not issubclass(get_class(cfg.optimizer._target_), Muon):
        params = [p for p in model.parameters() if p.requires_grad]
        log(f"optimizer: {cfg.optimizer._target_} on all {len(params)} parameter tensors")
        return Optimizers([make(params)], hooked=[])
    hidden, rest = split_parameters(model)
    log(_describe(cfg.optimizer._target_.rsplit(".", 1)[-1], hidden))
    log(_describe("AdamW", rest))
    muon = make([p for _, p in hidden])
    partner = [instantiate(cfg.adamw, _convert_="all")([p for _, p in rest])] if rest else []
    return Optimizers([muon, *partner], hooked=[muon])


def _describe(type_name: str, named, shown: int = 4) -> str:
    numel = sum(p.numel() for _, p in named)
    names = ", ".join(n for n, _ in named[:shown]) + (", ..." if len(named) > shown else "")
    return f"optimizer: {type_name} ← {len(named)} tensors, {numel:,} parameters ({names})"
