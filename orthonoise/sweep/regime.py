"""The hardware a sweep file's jobs run on, read from the YAML itself (no Hydra compose): the Makefile asks it once
per launch to pick the launcher, so the answer must come in well under a second.

    python -m orthonoise.sweep.regime phase33_scratch        # -> h100x4

A sweep states its hardware in one place: its own `override hardware: <name>` in the defaults list, else its
regime's (`regime: scratch` -> sweeps/regime/scratch.yaml's `override /hardware: <name>`), else conf/config.yaml's
default. tests/sweeps/test_sweep_files.py checks the answer against the fully composed jobs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

from orthonoise import REPO_ROOT

SWEEPS = REPO_ROOT / "sweeps"
CONF = REPO_ROOT / "conf"


def _defaults(path: Path) -> dict[str, str]:
    """A config file's defaults list as {group: option}, `override ` and leading slashes dropped."""
    entries = (yaml.safe_load(path.read_text()) or {}).get("defaults", [])
    choices = {}
    for entry in entries:
        if isinstance(entry, dict):
            (key, value), = entry.items()
            choices[key.removeprefix("override ").lstrip("/")] = value
    return choices


def sweep_hardware(sweep: str, sweeps_dir: Path = SWEEPS) -> str:
    """The hardware preset (conf/hardware/<name>.yaml) of a sweep file's jobs."""
    own = _defaults(sweeps_dir / f"{sweep}.yaml")
    if "hardware" in own:
        return own["hardware"]
    if "regime" in own:
        regime = _defaults(sweeps_dir / "regime" / f"{own['regime']}.yaml")
        if "hardware" in regime:
            return regime["hardware"]
    return _defaults(CONF / "config.yaml")["hardware"]


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m orthonoise.sweep.regime <sweep>", file=sys.stderr)
        return 2
    try:
        print(sweep_hardware(args[0]))
    except FileNotFoundError as err:
        print(f"error: sweep={args[0]!r}: no such sweep file ({err.filename})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
