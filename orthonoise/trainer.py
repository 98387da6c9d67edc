"""The training loop: read it top to bottom.

set-up (fail fast) → hold the run directory → data → model → optimizers → resume
→ [step, log, eval, checkpoint]* → summary.
"""
import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from orthonoise import distributed
from orthonoise.distributed import unwrap
from orthonoise.errors import RunRefused
from orthonoise.lm.data import Batches, Corpus, PreparationStopped, load_corpus
from orthonoise.lm.loss import causal_lm_loss
from orthonoise.lm.model import build_model, count_parameters, mamba_kernel_path
from orthonoise.optim import Optimizers, build_optimizers
from orthonoise.optim.schedules import warmup_decay
from orthonoise.perf.compilation import compile_blocks
from orthonoise.perf.cuda_graph import try_cuda_graph
from orthonoise.perf.meter import PerfMeter
from orthonoise.run import runlock
from orthonoise.run.atomic import write_text_atomic
from orthonoise.run.checkpoint import load_checkpoint, remove_stale_tmp, rng_state, save_checkpoint, set_rng_state
from orthonoise.run.divergence import Divergence
from orthonoise.run.identity import Claim, Identity, describe, provenance, recorded_identity, restore_hydra_files
from orthonoise.run.metrics import RunRecord, mark_status
from orthonoise.run.preemption import Preemption, stopped_by
from orthonoise.run.rundir import EVAL_S, METRICS_FILE, RANK_S, VAL_LOSS, Status, inspect_summary, metrics_line
from orthonoise.run.wandb_run import start_wandb
from orthonoise.validate import clamp_warmup, validate

log = logging.getLogger(__name__)


def set_up_device(hw: DictConfig, ranks: distributed.Dist) -> torch.device:
    """The device of this process and its math settings (the hardware was validated already)."""
    if hw.num_threads:
        torch.set_num_threads(hw.num_threads)
    if hw.device == "cuda":
        torch.cuda.set_device(ranks.local_rank)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda", ranks.local_rank)
    return torch.device("cpu")


def lr_multiplier(trainer: DictConfig):
    """Linear warmup, then constant / linear / cosine decay to min_lr_ratio: the ramp alpha follows too."""
    warmup, total, floor, decay = trainer.warmup_steps, trainer.max_steps, trainer.min_lr_ratio, trainer.lr_decay

    def multiplier(step: int) -> float:
        return warmup_decay(step, warmup, total, floor, decay)

    return multiplier


def eval_windows(n_val: int, batches: int, cfg: DictConfig, ranks) -> int:
    """How many validation windows `batches` global batches cover (0: all of them); the same on any number of GPUs."""
    return n_val if batches == 0 else min(n_val, batches * cfg.hardware.batch_size * ranks.world_size)


@torch.no_grad()
def evaluate(model, val: torch.Tensor, cfg: DictConfig, device, autocast, ranks, batches: int) -> float:
    """Mean validation loss over the first `batches` × batch_size windows (0: all), sharded over ranks."""
    model = unwrap(model)  # DDP's forward is a collective; ranks may get different numbers of eval batches
    model.eval()
    n = eval_windows(len(val), batches, cfg, ranks)
    total = torch.zeros(2, device=device)  # sum of losses, number of windows
    shard = val[:n][ranks.rank :: ranks.world_size]
    for i in range(0, len(shard), cfg.hardware.batch_size):
        batch = shard[i : i + cfg.hardware.batch_size].to(device).long()
        with autocast():
            total += torch.stack([causal_lm_loss(model, batch) * len(batch),
                                  torch.tensor(float(len(batch)), device=device)])
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


def train(cfg: DictConfig, run_dir: Path, choices: dict | None = None, hydra_files: dict | None = None) -> dict:
    """Train one run into `run_dir`; returns the summary (also written to summary.json).

    hydra_files: this launch's `.hydra/*.yaml` texts (train.py passes them), kept in the run's identity record."""
    run_dir = Path(run_dir)
    clamp_warmup(cfg)  # before the run's settings are compared or recorded
    ranks = distributed.env_ranks()
    previous, why = inspect_summary(run_dir)
    if why and ranks.is_main:
        log.warning("%s: %s", run_dir, why)
    if previous and previous.get("status") == Status.COMPLETED:
        return _skip_completed(cfg, run_dir, previous, ranks.is_main)
    if previous and previous.get("status") == Status.DIVERGED and ranks.is_main:
        log.warning("re-running %s, which diverged (%s): it resumes from its newest checkpoint", run_dir,
                    previous.get("diverged"))
    validate(cfg, world_size=ranks.world_size)  # every config mistake, before any compute
    checks = Divergence(cfg.trainer)  # checks its own limits
    if signal_name := stopped_by():  # an earlier job of this multirun process was told to stop: so is this one
        log.warning("not started: this process received %s; launch the same command again to run it", signal_name)
        return mark_status(run_dir, Status.INTERRUPTED)
    ranks = distributed.init(cfg.hardware.device)
    device = set_up_device(cfg.hardware, ranks)
    with _claimed(cfg, run_dir, hydra_files, ranks, device) as claim, Preemption() as preemption:
        # from here on SLURM's USR2, SIGTERM and Ctrl-C stop at the end of a step
        try:
            summary = _train_checked(cfg, run_dir, choices, preemption, ranks, device, checks, claim)
        except PreparationStopped as stop:  # the signal came while the corpus was prepared: nothing to checkpoint
            log.warning("%s", stop)
            return mark_status(run_dir, Status.INTERRUPTED)
    preemption.hand_over()  # under submitit: requeue this job (it resumes from the checkpoint) and exit
    return summary


def _skip_completed(cfg: DictConfig, run_dir: Path, previous: dict, is_main: bool) -> dict:
    """A completed run is never trained or relabelled again: say so in one line, naming any changed settings."""
    if is_main:
        try:
            recorded = recorded_identity(run_dir)
        except RunRefused:
            recorded = None
        restore_hydra_files(run_dir, recorded)  # this launch's Hydra overwrote them
        diff = Identity.of(cfg).differences(recorded) if recorded else {}
        why = (f"; this launch differs from what it ran with in {describe(diff)}: its record keeps what it ran "
               f"with; to run these settings use another run directory" if diff else
               " (the same command finds the same run; delete that directory, or change the seed, to run again)")
        print(f"skipped: {run_dir} already completed {previous.get('steps')} steps, final val_loss "
              f"{previous.get('final_val_loss')}{_restore_metrics(run_dir)}{why}")
    return previous


def _restore_metrics(run_dir: Path) -> str:
    """A completed run's metrics.jsonl, deleted since, written again from its newest checkpoint, which holds every
    row; returns what to add to the skip line."""
    if (run_dir / METRICS_FILE).exists():
        return ""
    try:
        with runlock.hold(run_dir):
            checkpoint, path = load_checkpoint(run_dir)
            rows = ((checkpoint or {}).get("record") or {}).get("rows")
            if not rows:
                return f"; its {METRICS_FILE} is missing and no checkpoint holds its rows"
            write_text_atomic(run_dir / METRICS_FILE, "".join(metrics_line(row) for row in rows))
    except RunRefused as err:
        return f"; its {METRICS_FILE} is missing and was not restored ({err})"
    return f"; its {METRICS_FILE} was missing: restored from {path} ({len(rows)} rows)"


@contextlib.contextmanager
def _claimed(cfg: DictConfig, run_dir: Path, hydra_files: dict | None, ranks: distributed.Dist, device):
    """Rank 0 holds the run directory (orthonoise/run/runlock.py) and checks this launch against the run's identity
    (orthonoise/run/identity.py); every rank learns the outcome, so a refusal ends them all with no collective left
    waiting. Yields rank 0's Claim (None on the other ranks)."""
    with contextlib.ExitStack() as held:
        claim, refusal = None, None
        if ranks.is_main:
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                held.enter_context(runlock.hold(run_dir))
                claim = Claim(run_dir, Identity.of(cfg), cfg.trainer.allow_config_change, hydra_files)
                remove_stale_tmp(run_dir)  # only the holder may: no other process writes here
            except (RunRefused, OSError) as err:
                refusal = err if isinstance(err, RunRefused) else RunRefused(f"cannot use {run_dir}: {err}")
        if distributed.all_reduce_mean(torch.tensor(float(refusal is not None), device=device)).item() > 0:
            distributed.teardown()
            raise refusal or RunRefused(f"rank 0 could not take {run_dir}; its error says why")
        yield claim


@dataclass
class TrainState:
    """Everything a resume restores, declared once: a checkpoint is `state_dict()`, a resume `load_state_dict`."""
    model: torch.nn.Module
    optimizers: Optimizers
    schedulers: list
    batches: Batches
    record: RunRecord
    checks: Divergence
    step: int = 0
    skipped: int = 0  # non-finite steps, never applied
    wandb_id: str | None = None

    def state_dict(self) -> dict:
        return {"step": self.step, "skipped": self.skipped, "model": unwrap(self.model).state_dict(),
                "optimizers": [o.state_dict() for o in self.optimizers],
                "schedulers": [s.state_dict() for s in self.schedulers], "batches": self.batches.state_dict(),
                "record": self.record.state_dict(), "rng": rng_state(), "divergence": self.checks.state_dict(),
                "wandb_id": self.wandb_id}

    def load_state_dict(self, saved: dict) -> None:
        """Raises (ValueError, KeyError, RuntimeError, ...) where `saved` came from another model or optimizer."""
        optimizers = saved["optimizers"]
        if [len(o["param_groups"]) for o in optimizers] != [len(o.param_groups) for o in self.optimizers] or any(
                setting_names(g) != setting_names(mine) for o, opt in zip(optimizers, self.optimizers)
                for g, mine in zip(o["param_groups"], opt.param_groups)):
            raise ValueError("its optimizers have other parameter groups or settings")
        unwrap(self.model).load_state_dict(saved["model"])
        for opt, sched, opt_state, sched_state in zip(self.optimizers, self.schedulers, optimizers,
                                                      saved["schedulers"]):
            settings = [{k: v for k, v in g.items() if k not in GROUP_STATE} for g in opt.param_groups]
            opt.load_state_dict(opt_state)
            for group, own in zip(opt.param_groups, settings):  # this run's settings, and only those
                for key in set(group) - GROUP_STATE:
                    del group[key]
                group.update(own)
            sched.load_state_dict(_at_own_base_lrs(sched, sched_state))
            for group, base, lr in zip(opt.param_groups, sched.base_lrs, sched.get_last_lr()):
                group.update(initial_lr=base, lr=lr)
        self.batches.load_state_dict(saved["batches"])
        self.record.load_state_dict(saved["record"])
        self.checks.load_state_dict(saved.get("divergence",  # a checkpoint from before the divergence state
                                              {**self.checks.state_dict(), "first_val": self.record.first_val_loss}))
        set_rng_state(saved["rng"])
        self.step, self.skipped, self.wandb_id = saved["step"], saved["skipped"], saved["wandb_id"]


@dataclass
class Run:
    """What this process trains with besides the resume state: settings, data, device, meters, loggers."""
    cfg: DictConfig
    run_dir: Path
    corpus: Corpus
    ranks: distributed.Dist
    device: torch.device
    mamba_path: str
    meter: PerfMeter
    tokens_per_step: int
    say: Callable
    wandb: object = None
    final_eval_tokens: int | None = None  # tokens behind final_val_loss

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.hardware.precision == "bf16")


@dataclass
class StepResult:
    loss: float  # the mean training loss over micro-batches and ranks
    grad_norm: float  # before clipping

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and math.isfinite(self.grad_norm)


class _Untimed:
    def start(self) -> None:
        pass

    def mark(self, name: str) -> None:
        pass


UNTIMED = _Untimed()  # train_step's timer where nobody reads the split


def train_step(model, optimizers: Optimizers, next_batch: Callable[[], torch.Tensor], grad_accum: int,
               clip: float | None, bf16: bool, loss_fn: Callable, graph=None, timer=UNTIMED) -> StepResult:
    """One training step, as the trainer and bench/train_step.py run it: forward+backward over `grad_accum`
    micro-batches from `next_batch` (`graph`, a CudaGraphStep, replays a captured one), the gradient norm (clipped
    to `clip`), the loss averaged over ranks, then the optimizer step, never applied when the loss or the norm is
    non-finite (it would poison the weights and the momentum). `timer` marks "fwd_bwd" and "optimizer"."""
    timer.start()
    optimizers.prepare()  # work that needs no gradient (the next step's noise), alongside forward+backward
    loss_sum = 0.0
    for micro in range(grad_accum):
        windows = next_batch()
        if graph:
            loss = graph(windows)
        else:
            accumulating = micro < grad_accum - 1 and isinstance(model, torch.nn.parallel.DistributedDataParallel)
            with (torch.autocast(windows.device.type, dtype=torch.bfloat16, enabled=bf16),
                  model.no_sync() if accumulating else contextlib.nullcontext()):
                loss = loss_fn(model, windows) / grad_accum
            loss.backward()
        loss_sum += loss.detach()
    timer.mark("fwd_bwd")
    grad_norm = gradient_norm(model, clip)  # clips too, when clip is set
    loss = distributed.all_reduce_mean(torch.as_tensor(loss_sum))
    result = StepResult(*torch.stack([loss.float(), grad_norm.float()]).tolist())  # one host sync
    for opt in optimizers:
        if result.finite:
            opt.step()
        opt.zero_grad(set_to_none=True)
    timer.mark("optimizer")
    return result


def _train_checked(cfg: DictConfig, run_dir: Path, choices: dict | None, preemption: Preemption,
                   ranks: distributed.Dist, device: torch.device, checks: Divergence, claim: Claim | None) -> dict:
    """The run itself, once its config has passed every check and this process holds the run directory."""
    torch.manual_seed(cfg.seed)
    run, state = _set_up(cfg, run_dir, load_corpus(cfg.data), ranks, device, checks)
    resumed = _resume(state, run_dir, claim, cfg.trainer.max_steps)
    if resumed:
        run.say("resumed from %s at step %d", resumed, state.step)
    if claim:  # rank 0: the run's identity record now names this launch (and any change it was allowed)
        identity = claim.commit(state.step)
        state.record.static.update(config_fingerprint=identity["fingerprint"], config_changes=identity["changes"],
                                   provenance=provenance(device))
    state.record.rewind(state.step if resumed else -1)  # drop what a killed run logged after its last checkpoint
    if ranks.is_main:
        run.wandb = start_wandb(cfg, run_dir, choices or {}, resume_id=state.wandb_id)
        state.wandb_id = run.wandb.id if run.wandb else None
    status, diverged = _train_loop(run, state, preemption)
    return _finish(run, state, status, diverged)


# ------------------------------------------------------------------ set-up ----------------------------------------

def _set_up(cfg: DictConfig, run_dir: Path, corpus: Corpus, ranks: distributed.Dist, device: torch.device,
            checks: Divergence) -> tuple[Run, TrainState]:
    """Model, optimizers, schedule and data of a fresh run, on this rank."""
    say = log.info if ranks.is_main else (lambda *a, **k: None)
    model = build_model(cfg.model, vocab_size=corpus.vocab_size).to(device)
    n_params = count_parameters(model)
    mamba_path = mamba_kernel_path()
    say("model %s: %.2fM parameters, Mamba2 path: %s", cfg.model.preset, n_params / 1e6, mamba_path)
    if device.type == "cuda" and mamba_path == "torch":
        log.warning("SLOW: mamba_ssm is not installed, Mamba2 runs transformers' pure-torch scan "
                    "(pip install .[kernels])")
    if cfg.hardware.compile:
        say("torch.compile: %d per-layer modules (norms, MLP, attention)", compile_blocks(model))
    optimizers = build_optimizers(model, cfg, log=say)
    multiplier = lr_multiplier(cfg.trainer)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, multiplier) for opt in optimizers]
    if ranks.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    batches = Batches(corpus.train, cfg.hardware.batch_size, seed=cfg.seed, rank=ranks.rank,
                      world_size=ranks.world_size)
    tokens_per_step = cfg.hardware.batch_size * cfg.hardware.grad_accum * ranks.world_size * cfg.data.seq_len
    meter = PerfMeter(device, n_params, tokens_per_step, cfg.hardware.get("peak_tflops"))
    record = RunRecord(run_dir, enabled=ranks.is_main, n_params=n_params, max_steps=cfg.trainer.max_steps,
                       device=device.type, world_size=ranks.world_size)
    run = Run(cfg, run_dir, corpus, ranks, device, mamba_path, meter, tokens_per_step, say)
    return run, TrainState(model, optimizers, schedulers, batches, record, checks)


# Param-group entries that are training state, not settings: a resume keeps the checkpoint's.
GROUP_STATE = {"params", "lr", "initial_lr", "step", "seed"}
# Entries torch's Optimizer adds to a group by itself: `load_state_dict` puts `differentiable` into the defaults,
# which the Muon family copies into its groups. Not a setting of the run; a checkpoint may or may not hold it.
TORCH_OWN = {"differentiable"}


def setting_names(group: dict) -> set:
    """The settings a param group declares (what tells one optimizer from another), not its state."""
    return set(group) - GROUP_STATE - TORCH_OWN


def _at_own_base_lrs(sched, saved: dict) -> dict:
    """A scheduler's saved state at its saved position, with this run's base learning rates: equal to the saved
    ones unless trainer.allow_config_change accepted another lr, from which the schedule then continues."""
    epoch = saved["last_epoch"]
    return {**saved, "base_lrs": list(sched.base_lrs),
            "_last_lr": [base * factor(epoch) for base, factor in zip(sched.base_lrs, sched.lr_lambdas)]}


def _resume(state: TrainState, run_dir: Path, claim: Claim | None, max_steps: int) -> Path | None:
    """Load the newest intact checkpoint, if any, into the freshly built run; returns its path. The config's
    settings stay in force (equal to the checkpoint's, unless trainer.allow_config_change accepted a change); a
    checkpoint of another model size or optimizer is refused with one line instead of a traceback."""
    checkpoint, path = load_checkpoint(run_dir)
    if not checkpoint:
        return None
    try:
        state.load_state_dict(checkpoint)
    except (RuntimeError, KeyError, ValueError, IndexError, TypeError) as err:
        changed = f"; changed: {describe(claim.diff)}" if claim and claim.diff else ""
        raise RunRefused(f"{path} does not fit this run's model or optimizers ({str(err).splitlines()[0][:200]}): it "
                         f"was made by another model size or optimizer{changed}. Use another run directory for these "
                         f"settings (change an override, set hydra.run.dir=..., or delete that one)") from None
    if state.step > max_steps:
        raise RunRefused(f"trainer.max_steps={max_steps} is below step {state.step}, where {path} left this run: a "
                         f"run cannot be shortened; set trainer.max_steps ≥ {state.step}, or use another run "
                         f"directory for the shorter run")
    return path


# ------------------------------------------------------------------ the loop --------------------------------------

def _train_loop(run: Run, state: TrainState, preemption: Preemption) -> tuple[Status, str | None]:
    """Steps until max_steps, a divergence or a stop signal; returns (COMPLETED or INTERRUPTED, divergence)."""
    cfg = run.cfg
    diverged = _evaluate_start(run, state) if state.step == 0 else None
    state.record.summary(Status.RUNNING, state.step, state.step * run.tokens_per_step)
    graph = _cuda_graph(run, state) if state.step < cfg.trainer.max_steps and not diverged else None
    bar = tqdm(total=cfg.trainer.max_steps, initial=state.step, desc="train", dynamic_ncols=True,
               disable=not (run.ranks.is_main and cfg.trainer.progress_bar))
    status = Status.COMPLETED

    def next_batch() -> torch.Tensor:
        return state.batches.next().to(run.device, non_blocking=True)

    while state.step < cfg.trainer.max_steps and not diverged:
        t0 = time.perf_counter()
        result = train_step(state.model, state.optimizers, next_batch, cfg.hardware.grad_accum, cfg.trainer.grad_clip,
                            cfg.hardware.precision == "bf16", causal_lm_loss, graph, run.meter)
        _advance_schedule(state.schedulers)
        state.step += 1
        bar.update(1)
        row = {"step": state.step, "train_loss": _finite_or_none(result.loss),
               "grad_norm": _finite_or_none(result.grad_norm), "lr": state.optimizers[0].param_groups[0]["lr"],
               "tokens": state.step * run.tokens_per_step, "step_time_s": round(time.perf_counter() - t0, 4)}
        if diverged := _stop_cause(run, state, result, row):
            _log_row(run, state, row)
            break
        if diverged := _measure(run, state, result, row, bar):
            break
        if state.step % cfg.trainer.checkpoint_every == 0 or state.step == cfg.trainer.max_steps:
            _checkpoint(run, state)
            state.record.summary(Status.RUNNING, state.step, state.step * run.tokens_per_step)
        if preemption.requested(run.device):
            status = Status.INTERRUPTED
            _checkpoint(run, state)
            break
    bar.close()
    return status, diverged


def _cuda_graph(run: Run, state: TrainState):
    """hardware.cuda_graph: forward+backward captured once and replayed every step (orthonoise.perf), or None."""
    if not run.cfg.hardware.get("cuda_graph", False):
        return None
    # shape and dtype of a micro-batch: the graph copies each one in, so the capture's values do not matter
    example = torch.zeros(run.cfg.hardware.batch_size, run.corpus.train.shape[1], dtype=torch.long,
                          device=run.device)
    return try_cuda_graph(state.model, causal_lm_loss, example, run.cfg.hardware.precision == "bf16",
                          run.cfg.hardware.grad_accum, run.ranks.world_size, log) or None


def _advance_schedule(schedulers: list) -> None:
    with warnings.catch_warnings():  # a skipped first step: the schedule still follows the step count
        warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler.step\(\)` before")
        for sched in schedulers:
            sched.step()


def _stop_cause(run: Run, state: TrainState, result: StepResult, row: dict) -> str | None:
    """Why training stops after this step, or None. A non-finite step is skipped (never applied), at most
    trainer.skip_nonfinite times; the divergence checks (orthonoise/run/divergence.py) watch the rest."""
    cause = state.checks.after_step(state.step, result.loss, result.grad_norm)
    if result.finite:
        return cause
    state.skipped += 1
    row["skipped"] = True
    problem = f"non-finite {'loss' if not math.isfinite(result.loss) else 'gradient norm'} at step {state.step}"
    limit = run.cfg.trainer.skip_nonfinite
    if state.skipped > limit:
        return problem
    log.warning("%s: step skipped (%d of at most trainer.skip_nonfinite=%d)", problem, state.skipped, limit)
    return None


def _measure(run: Run, state: TrainState, result: StepResult, row: dict, bar) -> str | None:
    """Throughput, and at eval steps the validation loss and the optimizers' metrics, into this step's row (logged
    every trainer.log_every steps, at evals and at skipped steps); returns a divergence the eval found."""
    cfg, step, diverged = run.cfg.trainer, state.step, None
    evaluating = step % cfg.eval_every == 0 or step == cfg.max_steps
    log_this_step = evaluating or step % cfg.log_every == 0 or not result.finite
    row.update(run.meter.end_step(row["step_time_s"], log=log_this_step))  # tokens/s, split, MFU, peak memory
    if evaluating:  # the last one, the run's final_val_loss, on final_eval_batches (default: the whole split)
        size = cfg.final_eval_batches if step == cfg.max_steps else cfg.eval_batches
        row.update(_validation(run, state, size))
        run.final_eval_tokens = eval_windows(len(run.corpus.val), size, run.cfg, run.ranks) * run.cfg.data.seq_len
        started = time.perf_counter()
        if metrics := state.optimizers.metrics():  # .item() inside: the time includes the GPU's work
            row.update(metrics, **{RANK_S: round(time.perf_counter() - started, 4)})
        bar.set_postfix(train=f"{result.loss:.3f}", val=f"{row['val_loss']:.3f}")
        diverged = state.checks.after_eval(step, row["val_loss"], run.corpus.vocab_size)
    if log_this_step:
        _log_row(run, state, row)
    return diverged


def _evaluate_start(run: Run, state: TrainState) -> str | None:
    """The step-0 row: the untrained model's validation loss; returns a divergence it shows."""
    row = {"step": 0, "tokens": 0, **_validation(run, state, run.cfg.trainer.eval_batches)}
    _log_row(run, state, row)
    return state.checks.after_eval(0, row[VAL_LOSS], run.corpus.vocab_size)


def _validation(run: Run, state: TrainState, batches: int) -> dict:
    """val_loss and val_ppl over `batches` batches, and the seconds the pass took (a float came back from the
    device, so the time includes its work)."""
    started = time.perf_counter()
    loss = evaluate(state.model, run.corpus.val, run.cfg, run.device, run.autocast, run.ranks, batches)
    return {VAL_LOSS: loss, "val_ppl": math.exp(min(loss, 50)), EVAL_S: round(time.perf_counter() - started, 4)}


def _log_row(run: Run, state: TrainState, row: dict) -> None:
    runlock.check_still_held(run.run_dir)  # a deleted run.lock: stop before a second process's rows mix in
    state.record.log(row)
    if run.wandb:
        run.wandb.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])


def _checkpoint(run: Run, state: TrainState) -> None:
    if run.ranks.is_main:
        runlock.check_still_held(run.run_dir)
        save_checkpoint(run.run_dir, state.state_dict(), state.step, keep=run.cfg.trainer.keep_checkpoints)


# ------------------------------------------------------------------ the end ---------------------------------------

def _finish(run: Run, state: TrainState, status: Status, diverged: str | None) -> dict:
    """The summary (summary.json, the one-line report, wandb), then this rank leaves the process group."""
    if diverged:
        status = Status.DIVERGED
        log.error("diverged: %s", diverged)
    summary = state.record.summary(status, state.step, state.step * run.tokens_per_step, mamba_path=run.mamba_path,
                                   skipped_steps=state.skipped, diverged=diverged,
                                   final_eval_tokens=run.final_eval_tokens, **run.meter.summary(),
                                   **state.optimizers.summary())
    if run.ranks.is_main:
        print(one_line(summary, state.record.first_val_loss, run.run_dir))
    if run.wandb:
        run.wandb.summary.update({k: v for k, v in summary.items() if v is not None})
        run.wandb.finish()
    state.model = state.optimizers = None  # gloo: free the model before the process group goes
    distributed.teardown()
    return summary


def gradient_norm(model, clip: float | None) -> torch.Tensor:
    """The global gradient norm before clipping (DDP gradients are averaged already: the same on every rank)."""
    params = [p for p in model.parameters() if p.grad is not None]
    if clip:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    return torch.nn.utils.get_total_norm([p.grad for p in params])


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no NaN


def one_line(summary: dict, start_val: float | None, run_dir: Path) -> str:
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    minutes, seconds = divmod(int(summary["wall_time_s"]), 60)
    return (f"{summary['status']}: {summary['steps']}/{summary['max_steps']} steps in {minutes}m{seconds:02d}s | "
            f"val_loss {fmt(start_val)} -> {fmt(summary['final_val_loss'])} (best {fmt(summary['best_val_loss'])} "
            f"@ step {summary['best_step']}) | {summary['tokens_per_s']} tok/s | "
            f"{summary['n_params'] / 1e6:.2f}M params | {run_dir}")
