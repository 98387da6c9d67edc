"""Table mode at scale: 100 groups × 100 shared seeds through `python -m orthonoise.report --table ... --json`
(in process), printing the wall and CPU seconds. Target: ≤ 60 s on the 2-core development machine. Every group
has the same seed noise (the case that once needed 99-dimensional multivariate-t integrals).

    .venv/bin/python bench/tablemode_scale.py [GROUPS] [SEEDS]
"""
import contextlib
import io
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from orthonoise.report.__main__ import main


def write_table(path: Path, groups: int, seeds: int) -> None:
    rng = np.random.default_rng(0)
    block = rng.normal(0, 0.007, seeds)
    lines = ["group,seed,value"]
    for g in range(groups):
        shift = math.log1p(-0.01 * (g % 5)) if g else 0.0
        noise = rng.normal(0, 0.007, seeds)
        lines += [f"g{g},{s},{2.0 * math.exp(shift + block[s] + noise[s]):.6f}" for s in range(seeds)]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    groups, seeds = (int(a) for a in (sys.argv[1:3] if len(sys.argv) > 2 else (100, 100)))
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "scale.csv"
        write_table(table, groups, seeds)
        wall, cpu = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["--table", str(table), "--baseline", "g0", "--json"])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"table mode, {groups} groups × {seeds} seeds: exit {code}, {wall:.2f} s wall, {cpu:.2f} s CPU")
