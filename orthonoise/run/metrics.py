"""What a run leaves behind while it trains: metric lines and a current summary (files: orthonoise/run/rundir.py).

metrics.jsonl is never lost silently: the run keeps its rows in memory and in every checkpoint. Before each
append it checks that the file still has the bytes it wrote; a file deleted or cut short meanwhile (by hand, by
a clean-up script) is rewritten from memory with a warning, and at resume the file is rebuilt from the
checkpoint's rows. Each repair is listed in summary.json under `metrics_restored`.
"""
import json
import logging
import math
import time
from datetime import datetime, timezone
from pathlib import Path

from orthonoise.run.atomic import write_text_atomic
from orthonoise.run.rundir import (
    MAX_BYTES,
    METRICS_FILE,
    SUMMARY_FILE,
    Status,
    append_metrics,
    metrics_line,
    read_regular,
    read_summary,
    write_json_atomic,
)
from orthonoise.run.runlock import held_elsewhere

log = logging.getLogger(__name__)


class RunRecord:
    """Appends metric lines and keeps summary.json current (rank 0 only; other ranks get enabled=False)."""

    def __init__(self, run_dir: Path, enabled: bool = True, **static):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.static = static  # n_params, max_steps, device, world_size, ...
        self.best_val_loss, self.best_step, self.final_val_loss = math.inf, None, None
        self.first_val_loss = None
        self.elapsed_before = 0.0  # wall time of earlier segments of a resumed run
        self.start = time.time()
        self.rows: list[dict] | None = []  # every row logged so far (None: a checkpoint from before rows were kept)
        self.metrics_restored: list[str] = []  # each repair of a lost or shortened metrics.jsonl
        self.metrics_bytes = None  # the size metrics.jsonl has if nobody else touched it (None: not known yet)

    def log(self, row: dict) -> None:
        if "val_loss" in row:
            if self.first_val_loss is None:
                self.first_val_loss = row["val_loss"]
            self.final_val_loss = row["val_loss"]
            if row["val_loss"] < self.best_val_loss:
                self.best_val_loss, self.best_step = row["val_loss"], row["step"]
        self.rows.append(row)
        if self.enabled:
            self._check_metrics_file(row["step"])
            self.metrics_bytes += append_metrics(self.run_dir, row)

    def _check_metrics_file(self, step: int) -> None:
        path = self.run_dir / METRICS_FILE
        size = path.stat().st_size if path.exists() else None
        if size != self.metrics_bytes:
            what = ("deleted" if size is None else
                    f"changed by someone else ({size} bytes instead of {self.metrics_bytes})")
            self._repair(f"at step {step}: metrics.jsonl was {what}; rewritten from the run's memory", self.rows[:-1])

    def _repair(self, note: str, rows: list[dict]) -> None:
        log.warning("%s (%d rows)", note, len(rows))
        self.metrics_restored.append(note)
        self._write_all(rows)

    def _write_all(self, rows: list[dict]) -> None:
        text = "".join(metrics_line(row) for row in rows)
        write_text_atomic(self.run_dir / METRICS_FILE, text)
        self.metrics_bytes = len(text.encode())

    def rewind(self, step: int) -> None:
        """Make metrics.jsonl hold exactly the rows logged up to `step` (the checkpoint's): a killed run logged rows
        after its last checkpoint (the last maybe half-written) and the resumed run logs them again; rows lost
        while the run was stopped come back from the checkpoint. step=-1 starts the file afresh."""
        if not self.enabled:
            return
        on_disk = self._lines_up_to(step)
        if self.rows is None:  # a checkpoint from before rows were kept: the file is all there is
            self.rows = [json.loads(line) for line in on_disk]
        lines = [metrics_line(row) for row in self.rows]
        if on_disk != lines:
            missing = len(set(lines) - set(on_disk))
            self._repair(f"at resume from step {step}: metrics.jsonl lacked {missing} of the {len(lines)} rows "
                         f"logged up to it; rewritten from the checkpoint", self.rows)
        else:
            self._write_all(self.rows)

    def _lines_up_to(self, step: int) -> list[str]:
        kept = []  # a FIFO or a device in its place: UnreadableFile, an error line, never a hang
        for line in (read_regular(self.run_dir / METRICS_FILE, MAX_BYTES[METRICS_FILE]) or b"").decode(
                errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a half-written last line of a killed run
            if isinstance(row, dict) and row.get("step", math.inf) <= step:
                kept.append(line + "\n")
        return kept

    def wall_time_s(self) -> float:
        return self.elapsed_before + time.time() - self.start

    def summary(self, status: Status, steps: int, tokens: int, **extra) -> dict:
        wall = self.wall_time_s()
        gpus = self.static.get("world_size", 1) if self.static.get("device") == "cuda" else 0
        summary = {
            "status": Status(status).value,
            "steps": steps,
            **self.static,
            "final_val_loss": self.final_val_loss,
            "best_val_loss": None if math.isinf(self.best_val_loss) else self.best_val_loss,
            "best_step": self.best_step,
            "wall_time_s": round(wall, 2),
            "tokens": tokens,
            "tokens_per_s": round(tokens / wall, 1) if wall > 0 else None,
            "gpu_hours": round(gpus * wall / 3600, 4),
            "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "metrics_restored": self.metrics_restored,
            **extra,
        }
        if self.enabled:
            write_json_atomic(self.run_dir / SUMMARY_FILE, summary)
        return summary

    def state_dict(self) -> dict:
        return {"best_val_loss": self.best_val_loss, "best_step": self.best_step,
                "final_val_loss": self.final_val_loss, "first_val_loss": self.first_val_loss,
                "wall_time_s": self.wall_time_s(), "rows": self.rows, "metrics_restored": self.metrics_restored}

    def load_state_dict(self, state: dict) -> None:
        self.best_val_loss, self.best_step = state["best_val_loss"], state["best_step"]
        self.final_val_loss, self.elapsed_before = state["final_val_loss"], state["wall_time_s"]
        self.first_val_loss = state["first_val_loss"]
        self.rows, self.metrics_restored = state.get("rows"), state.get("metrics_restored", [])
        self.start = time.time()


def mark_status(run_dir: Path, status: Status, **fields) -> dict:
    """Set a run's status in summary.json (a crash: "failed" with its error), keeping what the run had reached.

    Never over a run that another live process holds (orthonoise/run/runlock.py): that one writes its own. In a run
    directory that has become read-only, an existing summary.json that is itself writable is overwritten in place
    (not atomic, but the run's state stays true); an OSError means it could not be written at all."""
    summary = read_summary(run_dir) or {"steps": 0}
    summary.update(status=Status(status).value, **fields,
                   updated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if held_elsewhere(run_dir):
        return summary
    path = Path(run_dir) / SUMMARY_FILE
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    try:
        write_json_atomic(path, summary)
    except OSError:
        if not path.is_file():
            raise
        path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary
