"""Which parameters the Muon family takes: hidden 2-D weight matrices. Everything else goes to AdamW.

On Granite-4.0-H that is mamba in_proj/out_proj, attention q/k/v/o_proj and shared_mlp input/output_linear.
AdamW gets the embedding (tied with lm_head), norms, biases, conv1d (3-D), A_log, D and dt_bias.
"""
import torch

# 2-D but not hidden: the token embedding and the output head act on one-hot / logit space, not a hidden one.
NOT_HIDDEN = ("embed", "lm_head", "wte", "wpe")


def is_hidden_matrix(name: str, param: torch.Tensor) -> bool:
    return param.ndim == 2 and not any(part in name for part in NOT_HIDDEN)


def split_parameters(model: torch.nn.Module):
    """(muon, adamw): two lists of (name, parameter) over the trainable parameters, each once (tied ones too)."""
    muon, adamw = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (muon if is_hidden_matrix(name, p) else adamw).append((name, p))
    return muon, adamw
