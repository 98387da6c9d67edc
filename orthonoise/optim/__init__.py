"""The Muon optimizer family (Muon, OrthoNoise, IsotropicNoise, NOLAH) and its wiring to the config.

Public: the four optimizers (torch.optim.Optimizers), NoisyMuon (a noise variant by distribution name), the
trainer's protocol (TrainerHooks, Optimizers), build_optimizers, and the registry of kinds (registry.py); the
standalone samplers are in orthonoise.optim.noise. See docs/optimizers.md.
"""
from orthonoise.optim.build import build_optimizers
from orthonoise.optim.muon import Muon
from orthonoise.optim.noisy import IsotropicNoise, NoisyMuon, OrthoNoise
from orthonoise.optim.nolah import NOLAH
from orthonoise.optim.protocol import Optimizers, TrainerHooks
from orthonoise.optim.registry import REGISTRY, Kind, Role, kind_of

__all__ = ["Muon", "OrthoNoise", "IsotropicNoise", "NOLAH", "NoisyMuon", "Optimizers", "TrainerHooks",
           "build_optimizers", "REGISTRY", "Kind", "Role", "kind_of"]
