"""orthonoise: Hydra-configured sweeps of Muon-family optimizers on Granite-4.0-H language models."""
