"""orthonoise: Hydra-configured sweeps of Muon-family optimizers on Granite-4.0-H language models."""
from pathlib import Path

# the checkout this package runs from: conf/, sweeps/ and bench/results/ are read from here
REPO_ROOT = Path(__file__).resolve().parent.parent
