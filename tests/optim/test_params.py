import copy

import pytest
import torch
from transformers import GraniteMoeHybridConfig, GraniteMoeHybridForCausalLM

from orthonoise.optim import NOLAH, IsotropicNoise, Muon, OrthoNoise, build_optimizers
from orthonoise.optim.params import split_parameters

HIDDEN = ("mamba.in_proj.weight", "mamba.out_proj.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
          "self_attn.v_proj.weight", "self_attn.o_proj.weight", "shared_mlp.input_linear.weight",
          "shared_mlp.output_linear.weight")


@pytest.fixture(scope="module")
def granite():
    config = GraniteMoeHybridConfig(
        vocab_size=128, hidden_size=64, num_hidden_layers=2, layer_types=["linear_attention", "full_attention"],
        num_attention_heads=4, num_key_value_heads=2, mamba_n_heads=8, mamba_d_head=16, mamba_d_state=16,
        mamba_n_groups=1, mamba_expand=2, mamba_d_conv=4, mamba_chunk_size=64, shared_intermediate_size=96,
        intermediate_size=96, num_local_experts=0, num_experts_per_tok=0, position_embedding_type="nope",
        tie_word_embeddings=True)
    return GraniteMoeHybridForCausalLM(config)


def test_split_on_a_granite_hybrid(granite):
    muon, adamw = split_parameters(granite)
    muon_names, adamw_names = [n for n, _ in muon], [n for n, _ in adamw]
    assert all(n.endswith(HIDDEN) for n in muon_names)
    assert len(muon_names) == 2 * 2 + 2 + 4  # mamba layer: in/out_proj + mlp; attention layer: q/k/v/o + mlp
    for part in ("embed_tokens", "layernorm", "A_log", "mamba.D", "dt_bias", "conv1d.weight", "conv1d.bias",
                 "mamba.norm", "model.norm"):
        assert any(part in n for n in adamw_names), part
    assert not any("lm_head" in n for n in muon_names + adamw_names)  # tied: the embedding, once
    assert len(muon) + len(adamw) == len(list(granite.parameters()))


@pytest.mark.parametrize("name,cls", [("muon", Muon), ("orthonoise", OrthoNoise), ("isotropic", IsotropicNoise),
                                      ("nolah", NOLAH)])
def test_build_optimizers_muon_family(granite, compose_cfg, name, cls):
    lines = []
    opts = build_optimizers(granite, compose_cfg(f"optimizer={name}", "noise=linear"), log=lines.append)
    assert [type(o) for o in opts] == [cls, torch.optim.AdamW]
    assert len(lines) == 2 and "10 tensors" in lines[0] and "in_proj" in lines[0] and "embed_tokens" in lines[1]
    muon_ids = {id(p) for p in opts[0].param_groups[0]["params"]}
    adamw_ids = {id(p) for p in opts[1].param_groups[0]["params"]}
    assert not muon_ids & adamw_ids and len(muon_ids | adamw_ids) == len(list(granite.parameters()))
    assert list(opts[1].param_groups[0]["betas"]) == [0.9, 0.95]


def test_build_optimizers_passes_overrides(granite, compose_cfg):
    cfg = compose_cfg("optimizer=orthonoise", "optimizer.alpha=5e-3", "noise=exponential", "seed=4")
    group = build_optimizers(granite, cfg, log=lambda _: None)[0].param_groups[0]
    assert (group["alpha"], group["schedule"], group["seed"], group["ns_coefficients"]) == (
        5e-3, "exponential", 4, (3.4445, -4.7750, 2.0315))


def test_adamw_baseline_takes_everything(granite, compose_cfg):
    opts = build_optimizers(granite, compose_cfg("optimizer=adamw"), log=lambda _: None)
    assert len(opts) == 1 and type(opts[0]) is torch.optim.AdamW
    assert len(opts[0].param_groups[0]["params"]) == len(list(granite.parameters()))


def test_a_training_step_through_build_optimizers(granite, compose_cfg):
    model = copy.deepcopy(granite)
    opts = build_optimizers(model, compose_cfg("optimizer=orthonoise", "optimizer.alpha=5e-3"), log=lambda _: None)
    x = torch.randint(0, 128, (1, 8))
    before = [p.detach().clone() for p in model.parameters()]
    model(x, labels=x).loss.backward()
    for o in opts:
        o.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert sum(not torch.equal(a, b) for a, b in zip(before, model.parameters())) > 10
