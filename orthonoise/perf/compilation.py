"""torch.compile of the Granite layers' blocks around the Mamba2 mixer (`hardware.compile`)."""
from __future__ import annotations

import torch

from orthonoise.distributed import unwrap


def compile_blocks(model: torch.nn.Module, parts: tuple[str, ...] = ("norms", "mlp", "attention")) -> int:
    """torch.compile the per-layer blocks around the Mamba2 mixer (whole-model compile fails in Inductor on the
    Mamba2 scan). Same-class modules share one compiled graph. Returns the number of modules compiled."""
    inner = unwrap(model)
    layers = inner.model.layers
    n = 0
    for layer in layers:
        targets = []
        if "norms" in parts:
            targets += [layer.input_layernorm, layer.post_attention_layernorm]
        if "mlp" in parts:
            targets.append(layer.shared_mlp)
        if "attention" in parts and getattr(layer, "self_attn", None) is not None:
            targets.append(layer.self_attn)
        for module in targets:
            module.compile(dynamic=False)
            n += 1
    if "norms" in parts:
        inner.model.norm.compile(dynamic=False)
        n += 1
    return n
