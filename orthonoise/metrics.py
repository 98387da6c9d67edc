"""What a run leaves behind while it trains: metric lines and a current summary (files: orthonoise/rundir.py)."""
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path

from orthonoise.atomic import write_text_atomic
from orthonoise.rundir import METRICS_FILE, SUMMARY_FILE, Status, append_metrics, read_summary, write_json_atomic


class RunRecord:
    """Appends metric lines and keeps summary.json current (rank 0 only; other ranks get enabled=False)."""

    def __init__(self, run_dir: Path, enabled: bool = True, **static):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.static = static  # n_params, max_steps, device, world_size, ...
        self.best_val_loss, self.best_step, self.final_val_loss = math.inf, None, None
        self.first_val_loss = None
        self.elapsed_before = 0.0  # wall time of earlier segments of a resumed run
        self.start = time.time()

    def log(self, row: dict) -> None:
        if "val_loss" in row:
            if self.first_val_loss is None:
                self.first_val_loss = row["val_loss"]
            self.final_val_loss = row["val_loss"]
            if row["val_loss"] < self.best_val_loss:
                self.best_val_loss, self.best_step = row["val_loss"], row["step"]
        if self.enabled:
            append_metrics(self.run_dir, row)

    def rewind(self, step: int) -> None:
        """Drop the metric lines past `step`: a killed run logged them after its last checkpoint (maybe the last
        one half-written), and the resumed run logs them again. step=-1 starts the file afresh."""
        path = self.run_dir / METRICS_FILE
        if not self.enabled or not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get("step", math.inf) <= step:
                kept.append(line + "\n")
        write_text_atomic(path, "".join(kept))

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
            **extra,
        }
        if self.enabled:
            write_json_atomic(self.run_dir / SUMMARY_FILE, summary)
        return summary

    def state_dict(self) -> dict:
        return {"best_val_loss": self.best_val_loss, "best_step": self.best_step,
                "final_val_loss": self.final_val_loss, "first_val_loss": self.first_val_loss,
                "wall_time_s": self.wall_time_s()}

    def load_state_dict(self, state: dict) -> None:
        self.best_val_loss, self.best_step = state["best_val_loss"], state["best_step"]
        self.final_val_loss, self.elapsed_before = state["final_val_loss"], state["wall_time_s"]
        self.first_val_loss = state["first_val_loss"]
        self.start = time.time()


def mark_status(run_dir: Path, status: Status, **fields) -> dict:
    """Set a run's status in summary.json (a crash: "failed" with its error), keeping what the run had reached."""
    summary = read_summary(run_dir) or {"steps": 0}
    summary.update(status=Status(status).value, **fields, updated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(run_dir) / SUMMARY_FILE, summary)
    return summary
