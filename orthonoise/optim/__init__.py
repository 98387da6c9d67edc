"""The Muon optimizer family (Muon, OrthoNoise, IsotropicNoise, NOLAH) and its wiring to the config.

See docs/optimizers.md for the algorithm, conventions and defaults.
"""
from orthonoise.optim.build import build_optimizers
from orthonoise.optim.muon import NOLAH, IsotropicNoise, Muon, OrthoNoise
from orthonoise.optim.protocol import Optimizers, TrainerHooks

__all__ = ["Muon", "OrthoNoise", "IsotropicNoise", "NOLAH", "Optimizers", "TrainerHooks", "build_optimizers"]
