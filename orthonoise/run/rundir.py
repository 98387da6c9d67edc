"""The run directory: the one contract between the trainer and every tool that reads runs.

A run directory holds `.hydra/` (the composed config, Hydra's own record, the overrides), `metrics.jsonl` (one
JSON object per logged step), `summary.json` (the run's state and final numbers), `checkpoints/`, `identity.json`
(the fingerprint of the config and code that produced the run, and the `.hydra/` files it started with:
orthonoise/run/identity.py) and `run.lock` (held by the one process that trains into the directory:
orthonoise/run/runlock.py). The trainer
writes them through this module and the report, `status`, `plan`, the launcher hooks and the test fixtures read
them through it, so a file name, a status word or a tolerance rule exists once.
"""
from __future__ import annotations

import enum
import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from orthonoise.run.atomic import write_text_atomic

# Run directories are named by what was asked for, so the same command finds the same directory and launching it
# again resumes its interrupted run (or skips it when completed) instead of paying for a new one. conf/config.yaml
# names runs `outputs/runs/${run_name:${hydra.job.override_dirname}}`; Hydra sorts the overrides, so their order
# on the command line does not matter.
MAX_NAME = 200  # file systems allow 255 bytes per path component


def run_name(override_dirname: str) -> str:
    """`optimizer=orthonoise,seed=1` as a directory name: "default" for no overrides, no slashes, bounded length."""
    name = override_dirname.replace("/", "_") or "default"
    if len(name.encode()) > MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:12]
        name = name.encode()[: MAX_NAME - 13].decode(errors="ignore") + "-" + digest
    return name


def multiples(base, *factors) -> str:
    """`${multiples:${optimizer.lr},0.5,1,2}` in a sweep's grid: the values as a Hydra sweep list, so a grid written
    as multiples of the regime's value scales with whatever sets it (a regime, the tiny preset). 12 significant
    digits keep 0.5 × 1e-4 the 5e-05 a run directory is named by."""
    return ",".join(repr(float(f"{float(base) * float(f):.12g}")) for f in factors)


def register_resolvers() -> None:
    """Every entry point that composes conf/ calls this first (train.py, orthonoise.sweep.plan, the tests)."""
    OmegaConf.register_new_resolver("run_name", run_name, replace=True)
    OmegaConf.register_new_resolver("multiples", multiples, replace=True)


SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
HYDRA_DIR = ".hydra"
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")  # what Hydra writes into HYDRA_DIR at every launch
IDENTITY_FILE = "identity.json"
LOCK_FILE = "run.lock"
# yaml.safe_load's rules in libyaml's C parser when PyYAML has it: the same values, ~10× faster over thousands of runs
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# The keys of a metrics.jsonl row and of summary.json that readers compute with: every reader names them through
# these constants, so a renamed metric is one edit here.
STEP = "step"
VAL_LOSS = "val_loss"            # a row's validation loss (eval steps only)
EFF_RANK = "eff_rank"            # a row's mean effective rank of the Muon-family momenta (eval steps only)
TOKENS_PER_S = "tokens_per_s"    # a row's throughput, and the summary's whole-run throughput
EVAL_S, RANK_S = "eval_s", "rank_s"  # an eval row's seconds for the validation pass and for the optimizers' metrics
                                     # (the effective rank): what the preflight's overheads price (sweep/cost.py)
STATUS = "status"                # summary: a Status word
STEPS, MAX_STEPS = "steps", "max_steps"
FINAL_VAL_LOSS, BEST_VAL_LOSS, BEST_STEP = "final_val_loss", "best_val_loss", "best_step"
WALL_TIME_S, GPU_HOURS, WORLD_SIZE = "wall_time_s", "gpu_hours", "world_size"
FINAL_ALPHA = "final_alpha"      # summary: the noise scale a noise variant ended at
WHY_FAILED, WHY_DIVERGED = "error", "diverged"  # summary: why a run failed, what made it diverge
SLURM_STATE = "slurm_state"      # summary: how SLURM ended the job (TIMEOUT, CANCELLED, NODE_FAIL, ...)
PROVENANCE, CONFIG_CHANGES = "provenance", "config_changes"


class Status(str, enum.Enum):
    """A run's state. The trainer writes the first five to summary.json; MISSING is what a reader concludes for
    a planned job that left no summary and no metrics (never started, or crashed before writing anything),
    UNREADABLE for a run directory whose summary or config is malformed (hand-edited, truncated, foreign)."""
    RUNNING = "running"
    COMPLETED = "completed"
    DIVERGED = "diverged"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # checkpointed and stopped (SIGTERM/USR2/Ctrl-C): relaunching resumes it
    MISSING = "missing"
    UNREADABLE = "unreadable"  # a reader's verdict: the files are there but malformed (Run.error says why)

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__

    @property
    def finished(self) -> bool:
        """Ran to its end (a verdict may use it); anything else is still owed a result."""
        return self in (Status.COMPLETED, Status.DIVERGED)

    @classmethod
    def parse(cls, value) -> Status | None:
        """A status word as read from a file; None when it is not one of ours."""
        try:
            return cls(value)
        except ValueError:
            return None


# Launch outcomes, not run statuses: this launch did not run the job. The sweep's summary line counts them;
# nothing writes them into a run directory. SKIPPED: its run had finished already. RUNNING_ELSEWHERE: a live
# process (an earlier sweep's job, another user's launch) holds its directory, so its result is still owed and
# the sweep that counts one exits non-zero.
SKIPPED = "skipped"
RUNNING_ELSEWHERE = "running elsewhere"


def write_json_atomic(path: Path, obj: dict) -> None:
    write_text_atomic(Path(path), json.dumps(obj, indent=2) + "\n")  # a reader never sees half a file


def read_summary(run_dir: Path) -> dict | None:
    """summary.json, or None when absent or unreadable (being rewritten, truncated by a crash, not an object)."""
    return inspect_summary(run_dir)[0]


# The summary fields a reader computes with, and the JSON types they must have (null is always allowed).
_INTEGER, _NUMBER, _TEXT = ((int,), "an integer"), ((int, float), "a number"), ((str,), "a string")
SUMMARY_TYPES = {STATUS: _TEXT, STEPS: _INTEGER, MAX_STEPS: _INTEGER, BEST_STEP: _INTEGER,
                 FINAL_VAL_LOSS: _NUMBER, BEST_VAL_LOSS: _NUMBER, WALL_TIME_S: _NUMBER,
                 TOKENS_PER_S: _NUMBER, GPU_HOURS: _NUMBER, WHY_FAILED: _TEXT, WHY_DIVERGED: _TEXT,
                 FINAL_ALPHA: _NUMBER, SLURM_STATE: _TEXT}


# The most a reader reads of each file of a run directory: a record that large is not one the trainer wrote.
MAX_BYTES = {SUMMARY_FILE: 1 << 20, IDENTITY_FILE: 16 << 20, METRICS_FILE: 256 << 20}
MAX_CONFIG_BYTES = 16 << 20  # each of .hydra/*.yaml


class UnreadableFile(OSError):
    """A run-directory file that is not a regular file (a FIFO, a device, a folder) or is larger than a record."""


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"))
    return next((what for test, what in kinds if test(mode)), "not a regular file")


def check_regular(path: Path, limit: int) -> bool:
    """Whether there is a file at `path`; UnreadableFile, saying what it is, when it is not a regular file of at
    most `limit` bytes. A stat only: what `status` asks of every run's metrics before reading any."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableFile(f"it is {_file_kind(info.st_mode)}, not a regular file")
    if info.st_size > limit:
        raise UnreadableFile(f"it holds {info.st_size} bytes, more than the {limit} a run's record can have")
    return True


def read_regular(path: Path, limit: int) -> bytes | None:
    """The bytes of the regular file at `path` (None when nothing is there); UnreadableFile, saying what it is,
    for anything else or anything over `limit` bytes: a reader never blocks on a FIFO nor reads /dev/zero."""
    if not check_regular(path, limit):
        return None
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # replaced by a FIFO since the stat: the open still returns
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnreadableFile("it is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UnreadableFile(f"it holds more than the {limit} bytes a run's record can have")
    return data


def _cannot_read(name: str, err: Exception) -> str:
    return f"{name} cannot be read: {type(err).__name__}: {str(err).splitlines()[0][:80]}"


def inspect_summary(run_dir: Path) -> tuple[dict | None, str | None]:
    """(summary.json, None) when it is usable; (None, why not) when it is there but malformed, or says completed
    of a run that is not a completed seed (incomplete_record); (None, None) when there is none."""
    try:
        data = read_regular(Path(run_dir) / SUMMARY_FILE, MAX_BYTES[SUMMARY_FILE])
        if data is None:
            return None, None
        summary = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        return None, _cannot_read(SUMMARY_FILE, err)
    if not isinstance(summary, dict):
        return None, f"{SUMMARY_FILE} holds a JSON {type(summary).__name__}, not an object"
    for key, (types, what) in SUMMARY_TYPES.items():
        value = summary.get(key)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            return None, f"{SUMMARY_FILE}: {key}={value!r} is not {what}"
    why = incomplete_record(summary)
    return (None, why) if why else (summary, None)


def incomplete_record(summary: dict) -> str | None:
    """Why a summary that says completed is no completed seed (no finite final loss, or fewer steps than the run
    was set to train), or None. Such a run is not counted, and launching it again resumes it."""
    if summary.get("status") != Status.COMPLETED:
        return None
    loss, steps, max_steps = summary.get("final_val_loss"), summary.get("steps"), summary.get("max_steps")
    if loss is None or not math.isfinite(loss):
        problem = f"final_val_loss={loss} is not a finite number"
    elif steps is None or (max_steps is not None and steps < max_steps):
        problem = f"steps={steps} of max_steps={max_steps}"
    else:
        return None
    return (f"{SUMMARY_FILE} says completed but {problem}: not a completed seed; launch the same command again "
            f"to finish it from its newest checkpoint")


def metrics_problem(run_dir: Path) -> str | None:
    """Why metrics.jsonl cannot be read (check_regular), without reading it: readers load the rows only when used."""
    try:
        check_regular(Path(run_dir) / METRICS_FILE, MAX_BYTES[METRICS_FILE])
    except OSError as err:
        return _cannot_read(METRICS_FILE, err)
    return None


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl as a step-sorted list (inspect_metrics without the why)."""
    return inspect_metrics(run_dir)[0]


def inspect_metrics(run_dir: Path) -> tuple[list[dict], str | None]:
    """(metrics.jsonl as a step-sorted list, None); a resumed run repeats steps, the last line wins; a
    half-written or foreign line is skipped. ([], why) when it is there but cannot be read (read_regular)."""
    try:
        data = read_regular(Path(run_dir) / METRICS_FILE, MAX_BYTES[METRICS_FILE])
    except OSError as err:
        return [], _cannot_read(METRICS_FILE, err)
    by_step = {}
    for line in (data or b"").decode(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a half-written last line of a live or killed job
        if isinstance(record, dict) and isinstance(record.get(STEP), int):
            by_step[record[STEP]] = record
    return [by_step[step] for step in sorted(by_step)], None


def metrics_line(row: dict) -> str:
    return json.dumps(row) + "\n"


def append_metrics(run_dir: Path, row: dict) -> int:
    """Append one row; returns the bytes written."""
    line = metrics_line(row).encode()
    with open(Path(run_dir) / METRICS_FILE, "ab") as f:
        f.write(line)
    return len(line)


def is_run_dir(path: Path) -> bool:
    return (Path(path) / HYDRA_DIR).is_dir() or (Path(path) / SUMMARY_FILE).is_file()


@dataclass
class HydraRecord:
    """What Hydra wrote into a run's `.hydra/`: the composed config, the config-group choices
    (hydra.runtime.choices: group -> option, e.g. {"optimizer": "orthonoise", "preset": "tiny"}) and the
    command line's overrides. A missing file reads as empty; a malformed one as empty with why in `problems`."""
    config: dict = field(default_factory=dict)
    choices: dict = field(default_factory=dict)
    overrides: list = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def composed(self) -> DictConfig | None:
        """The composed config as OmegaConf (interpolations resolve on access), or None when config.yaml is missing
        or unusable: such a directory is no evidence for the sweep tools that read it."""
        return OmegaConf.create(self.config) if self.config else None


def read_hydra_record(run_dir: Path) -> HydraRecord:
    """The one reader of a run's `.hydra/` files (the report, the sweep tools and `status` read runs through it)."""
    hydra_dir = Path(run_dir) / HYDRA_DIR
    (config, *_), (hydra, *_), (overrides, *_) = read = [
        _read_yaml(hydra_dir / name, kind) for name, kind in zip(HYDRA_FILES, (dict, dict, list))]
    choices = hydra
    for key in ("hydra", "runtime", "choices"):
        choices = choices.get(key) if isinstance(choices, dict) else None
    return HydraRecord(config=config, overrides=overrides,
                       choices={str(k): v for k, v in choices.items()} if isinstance(choices, dict) else {},
                       problems=[problem for _, problem in read if problem])


def _read_yaml(path: Path, kind: type) -> tuple:
    """(the file's value, None), (kind(), why it is unusable), or (kind(), None) when there is no such file."""
    try:
        data = read_regular(path, MAX_CONFIG_BYTES)  # a FIFO or a device: unreadable, never a hang
        if data is None:
            return kind(), None
        value = yaml.load(data.decode("utf-8"), Loader=YAML_LOADER)
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        return kind(), _cannot_read(f"{HYDRA_DIR}/{path.name}", err)
    if value is not None and not isinstance(value, kind):
        return kind(), f"{HYDRA_DIR}/{path.name} holds a {type(value).__name__}, not a {kind.__name__}"
    return value or kind(), None
