"""What the report knows about optimizer kinds, in one place: which kind is the baseline, which is the noise
method under test, which is its control, which kinds log an effective rank, and which config keys must agree
for the control to be matched to the method (everything in these config groups except the optimizer class)."""
from __future__ import annotations

BASELINE = "muon"  # the default baseline group (`--baseline KEY=VALUE` picks another)
METHOD = "orthonoise"  # the method whose configs the criteria judge
CONTROL = "isotropic"  # its control: the same algorithm with Gaussian instead of orthogonal noise
ARCHIVED = "nolah"  # shown for reference (early-stability numbers)
MUON_FAMILY = frozenset({BASELINE, METHOD, CONTROL, ARCHIVED})  # these log the momentum's effective rank
# The control matches the method config whose values agree on every key under these config groups (alpha,
# rank threshold, schedule, ...) that both have; only the optimizer class differs.
MATCH_GROUPS = ("optimizer", "noise")
TARGET_KEY = "optimizer._target_"


def optimizer_kind(target: str) -> str:
    """'orthonoise.optim.OrthoNoise' -> 'orthonoise'; 'orthonoise.optim.IsotropicNoise' -> 'isotropic';
    'torch.optim.AdamW' -> 'adamw'."""
    name = str(target).rsplit(".", 1)[-1].lower()
    return CONTROL if name.startswith(CONTROL) else name


def match_keys(config: dict, other: dict) -> list[str]:
    """The keys whose values must be equal for `config` (the control) to be matched with `other`."""
    return [k for k in config if k in other and k != TARGET_KEY and k.split(".", 1)[0] in MATCH_GROUPS]
