"""The training loop: read it top to bottom.

set-up (fail fast) → hold the run directory → data → model → optimizers → resume
→ [step, log, eval, checkpoint]* → summary.
"""
import contextlib
import logging
import math
import time
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from orthonoise import distributed, runlock
from orthonoise.checkpoint import load_checkpoint, remove_stale_tmp, rng_state, save_checkpoint, set_rng_state
from orthonoise.data import Batches, PreparationStopped, load_corpus
from orthonoise.divergence import Divergence
from orthonoise.errors import RunRefused
from orthonoise.identity import Claim, Identity, describe, provenance, read_record, restore_hydra_files
from orthonoise.loss import causal_lm_loss
from orthonoise.metrics import RunRecord, mark_status
from orthonoise.model import build_model, count_parameters, mamba_kernel_path
from orthonoise.optim import build_optimizers
from orthonoise.perf.compilation import compile_blocks
from orthonoise.perf.cuda_graph import try_cuda_graph
from orthonoise.perf.meter import PerfMeter
from orthonoise.preemption import Preemption, stopped_by
from orthonoise.rundir import Status, read_summary
from orthonoise.validate import validate
from orthonoise.wandb_run import start_wandb

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
    """Linear warmup, then constant / linear / cosine decay to min_lr_ratio."""
    warmup, total, floor = trainer.warmup_steps, trainer.max_steps, trainer.min_lr_ratio

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if trainer.lr_decay == "linear":
            return 1.0 - (1.0 - floor) * progress
        if trainer.lr_decay == "cosine":
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

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
            total += torch.stack([causal_lm_loss(model, batch) * len(batch), torch.tensor(float(len(batch)), device=device)])
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


def train(cfg: DictConfig, run_dir: Path, choices: dict | None = None, hydra_files: dict | None = None) -> dict:
    """Train one run into `run_dir`; returns the summary (also written to summary.json).

    hydra_files: this launch's `.hydra/*.yaml` texts (train.py passes them), kept in the run's identity record."""
    run_dir = Path(run_dir)
    ranks = distributed.env_ranks()
    previous = read_summary(run_dir)
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
            recorded = read_record(run_dir)
        except RunRefused:
            recorded = None
        restore_hydra_files(run_dir, recorded)  # this launch's Hydra overwrote them
        diff = Identity.of(cfg).differences(recorded) if recorded else {}
        why = (f"; this launch differs from what it ran with in {describe(diff)}: its record keeps what it ran "
               f"with; to run these settings use another run directory" if diff else
               " (the same command finds the same run; delete that directory, or change the seed, to run again)")
        print(f"skipped: {run_dir} already completed {previous.get('steps')} steps, final val_loss "
              f"{previous.get('final_val_loss')}{why}")
    return previous


@contextlib.contextmanager
def _claimed(cfg: DictConfig, run_dir: Path, hydra_files: dict | None, ranks: distributed.Dist, device):
    """Rank 0 holds the run directory (orthonoise/runlock.py) and checks this launch against the run's identity
    (orthonoise/identity.py); every rank learns the outcome, so a refusal ends them all with no collective left
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


def _train_checked(cfg: DictConfig, run_dir: Path, choices: dict | None, preemption: Preemption,
                   ranks: distributed.Dist, device: torch.device, checks: Divergence, claim: Claim | None) -> dict:
    """The run itself, once its config has passed every check and this process holds the run directory."""
    torch.manual_seed(cfg.seed)

    corpus = load_corpus(cfg.data)
    model = build_model(cfg.model, vocab_size=corpus.vocab_size).to(device)
    n_params = count_parameters(model)
    say = log.info if ranks.is_main else (lambda *a, **k: None)
    mamba_path = mamba_kernel_path()
    say("model %s: %.2fM parameters, Mamba2 path: %s", cfg.model.preset, n_params / 1e6, mamba_path)
    if device.type == "cuda" and mamba_path == "torch":
        log.warning("SLOW: mamba_ssm is not installed, Mamba2 runs transformers' pure-torch scan (pip install .[kernels])")
    if cfg.hardware.compile:
        say("torch.compile: %d per-layer modules (norms, MLP, attention)", compile_blocks(model))
    optimizers = build_optimizers(model, cfg, log=say)
    multiplier = lr_multiplier(cfg.trainer)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, multiplier) for opt in optimizers]
    if ranks.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    batches = Batches(corpus.train, cfg.hardware.batch_size, seed=cfg.seed, rank=ranks.rank, world_size=ranks.world_size)
    bf16 = cfg.hardware.precision == "bf16"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    tokens_per_step = cfg.hardware.batch_size * cfg.hardware.grad_accum * ranks.world_size * cfg.data.seq_len
    meter = PerfMeter(device, n_params, tokens_per_step, cfg.hardware.get("peak_tflops"))
    graph = None
    record = RunRecord(run_dir, enabled=ranks.is_main, n_params=n_params, max_steps=cfg.trainer.max_steps,
                       device=device.type, world_size=ranks.world_size)
    step, skipped, wandb_id = 0, 0, None
    checkpoint, checkpoint_path = load_checkpoint(run_dir)  # the newest intact one
    if checkpoint:
        _resume(checkpoint, checkpoint_path, model, optimizers, schedulers, batches, record, checks, claim)
        step, skipped, wandb_id = checkpoint["step"], checkpoint["skipped"], checkpoint["wandb_id"]
        say("resumed from %s at step %d", checkpoint_path, step)
    if claim:  # rank 0: the run's identity record now names this launch (and any change it was allowed)
        identity = claim.commit(step)
        record.static.update(config_fingerprint=identity["fingerprint"], config_changes=identity["changes"],
                             provenance=provenance(device))
    record.rewind(step if checkpoint else -1)  # drop what a killed run logged after its last checkpoint
    wandb_run = start_wandb(cfg, run_dir, choices or {}, resume_id=wandb_id) if ranks.is_main else None

    def checkpoint_now():
        if ranks.is_main:
            save_checkpoint(run_dir, {
                "step": step, "skipped": skipped, "model": unwrap(model).state_dict(),
                "optimizers": [o.state_dict() for o in optimizers], "schedulers": [s.state_dict() for s in schedulers],
                "batches": batches.state_dict(), "record": record.state_dict(), "rng": rng_state(),
                "divergence": checks.state_dict(),
                "wandb_id": wandb_run.id if wandb_run else None,
            }, step, keep=cfg.trainer.keep_checkpoints)

    def log_row(row):
        record.log(row)
        if wandb_run:
            wandb_run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    status, diverged = Status.COMPLETED, None
    if step == 0:
        first = evaluate(model, corpus.val, cfg, device, autocast, ranks, cfg.trainer.eval_batches)
        log_row({"step": 0, "tokens": 0, "val_loss": first, "val_ppl": math.exp(min(first, 50))})
        diverged = checks.after_eval(0, first, corpus.vocab_size)
    record.summary(Status.RUNNING, step, step * tokens_per_step)
    final_eval_tokens = None  # tokens behind final_val_loss
    bar = tqdm(total=cfg.trainer.max_steps, initial=step, disable=not (ranks.is_main and cfg.trainer.progress_bar),
               desc="train", dynamic_ncols=True)
    while step < cfg.trainer.max_steps and not diverged:
        t0 = time.perf_counter()
        meter.start()
        optimizers.prepare()  # work that needs no gradient (the next step's noise), alongside forward+backward
        loss_sum = 0.0
        for micro in range(cfg.hardware.grad_accum):
            windows = batches.next().to(device, non_blocking=True)
            sync = micro == cfg.hardware.grad_accum - 1 or ranks.world_size == 1
            if graph is None:  # hardware.cuda_graph: capture forward+backward once, replay it (orthonoise.perf)
                graph = cfg.hardware.get("cuda_graph", False) and try_cuda_graph(
                    model, causal_lm_loss, windows, bf16, cfg.hardware.grad_accum, ranks.world_size, log)
            if graph:
                loss = graph(windows)
            else:
                with autocast(), (model.no_sync() if not sync else contextlib.nullcontext()):
                    loss = causal_lm_loss(model, windows) / cfg.hardware.grad_accum
                loss.backward()
            loss_sum += loss.detach()
        meter.mark("fwd_bwd")
        grad_norm = gradient_norm(model, cfg.trainer.grad_clip)  # clips too, when grad_clip is set
        loss = distributed.all_reduce_mean(torch.as_tensor(loss_sum, device=device))
        train_loss, grad_norm = torch.stack([loss.float(), grad_norm.float()]).tolist()  # one host sync
        finite = math.isfinite(train_loss) and math.isfinite(grad_norm)
        for opt in optimizers:
            if finite:  # a non-finite step would poison the weights and the momentum: it is never applied
                opt.step()
            opt.zero_grad(set_to_none=True)
        meter.mark("optimizer")
        with warnings.catch_warnings():  # a skipped first step: the schedule still follows the step count
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler.step\(\)` before")
            for sched in schedulers:
                sched.step()
        step += 1
        bar.update(1)
        row = {"step": step, "train_loss": _finite_or_none(train_loss), "grad_norm": _finite_or_none(grad_norm),
               "lr": optimizers[0].param_groups[0]["lr"], "tokens": step * tokens_per_step,
               "step_time_s": round(time.perf_counter() - t0, 4)}
        cause = checks.after_step(step, train_loss, grad_norm)
        if not finite:
            skipped += 1
            row["skipped"] = True
            problem = f"non-finite {'loss' if not math.isfinite(train_loss) else 'gradient norm'} at step {step}"
            if skipped > cfg.trainer.skip_nonfinite:
                status, diverged = Status.DIVERGED, problem
                log_row(row)
                break
            log.warning("%s: step skipped (%d of at most trainer.skip_nonfinite=%d)", problem, skipped,
                        cfg.trainer.skip_nonfinite)
        elif cause:
            status, diverged = Status.DIVERGED, cause
            log_row(row)
            break
        evaluating = step % cfg.trainer.eval_every == 0 or step == cfg.trainer.max_steps
        log_this_step = evaluating or step % cfg.trainer.log_every == 0 or not finite
        row.update(meter.end_step(row["step_time_s"], log=log_this_step))  # tokens/s, split, MFU, peak memory
        if evaluating:  # the last one, the run's final_val_loss, on final_eval_batches (default: the whole split)
            size = cfg.trainer.final_eval_batches if step == cfg.trainer.max_steps else cfg.trainer.eval_batches
            row["val_loss"] = evaluate(model, corpus.val, cfg, device, autocast, ranks, size)
            final_eval_tokens = eval_windows(len(corpus.val), size, cfg, ranks) * cfg.data.seq_len
            row["val_ppl"] = math.exp(min(row["val_loss"], 50))
            row.update(optimizers.metrics())
            bar.set_postfix(train=f"{train_loss:.3f}", val=f"{row['val_loss']:.3f}")
            diverged = checks.after_eval(step, row["val_loss"], corpus.vocab_size)
        if log_this_step:
            log_row(row)
        if diverged:
            break
        if step % cfg.trainer.checkpoint_every == 0 or step == cfg.trainer.max_steps:
            checkpoint_now()
            record.summary(Status.RUNNING, step, step * tokens_per_step)
        if preemption.requested(device):
            status = Status.INTERRUPTED
            checkpoint_now()
            break
    bar.close()
    if diverged:
        status = Status.DIVERGED
        log.error("diverged: %s", diverged)
    summary = record.summary(status, step, step * tokens_per_step, mamba_path=mamba_path, skipped_steps=skipped,
                             diverged=diverged, final_eval_tokens=final_eval_tokens, **meter.summary(),
                             **optimizers.summary())
    if ranks.is_main:
        print(one_line(summary, record.first_val_loss, run_dir))
    if wandb_run:
        wandb_run.summary.update({k: v for k, v in summary.items() if v is not None})
        wandb_run.finish()
    del model, optimizers
    distributed.teardown()
    return summary


# Param-group entries that are training state, not settings: a resume keeps the checkpoint's.
GROUP_STATE = {"params", "lr", "initial_lr", "step", "seed"}


def _resume(checkpoint: dict, path: Path, model, optimizers, schedulers, batches, record, checks,
            claim: Claim | None) -> None:
    """Load a checkpoint into the freshly built run. The config's settings stay in force (equal to the
    checkpoint's, unless trainer.allow_config_change accepted a change); a checkpoint of another model size or
    optimizer is refused with one line instead of a traceback."""
    settings = [[{k: v for k, v in g.items() if k not in GROUP_STATE} for g in o.param_groups] for o in optimizers]
    base_lrs = [list(sched.base_lrs) for sched in schedulers]
    try:
        saved = checkpoint["optimizers"]
        if [len(o["param_groups"]) for o in saved] != [len(o.param_groups) for o in optimizers] or any(
                set(g) != set(mine) for o, opt in zip(saved, optimizers)
                for g, mine in zip(o["param_groups"], opt.param_groups)):
            raise ValueError("its optimizers have other parameter groups or settings")
        unwrap(model).load_state_dict(checkpoint["model"])
        for obj, state in zip([*optimizers, *schedulers], saved + checkpoint["schedulers"]):
            obj.load_state_dict(state)
        batches.load_state_dict(checkpoint["batches"])
        record.load_state_dict(checkpoint["record"])
        checks.load_state_dict(checkpoint.get("divergence",  # a checkpoint from before the divergence state
                                              {**checks.state_dict(), "first_val": record.first_val_loss}))
        set_rng_state(checkpoint["rng"])
    except (RuntimeError, KeyError, ValueError, IndexError, TypeError) as err:
        changed = f"; changed: {describe(claim.diff)}" if claim and claim.diff else ""
        raise RunRefused(f"{path} does not fit this run's model or optimizers ({str(err).splitlines()[0][:200]}): it "
                         f"was made by another model size or optimizer{changed}. Use another run directory for these "
                         f"settings (change an override, set hydra.run.dir=..., or delete that one)") from None
    for opt, sched, groups, bases in zip(optimizers, schedulers, settings, base_lrs):
        for group, own in zip(opt.param_groups, groups):
            group.update(own)
        if sched.base_lrs != bases:  # trainer.allow_config_change with another lr: the schedule continues from it
            sched.base_lrs = bases
            for group, base, factor in zip(opt.param_groups, bases, sched.lr_lambdas):
                group["initial_lr"], group["lr"] = base, base * factor(sched.last_epoch)
            sched._last_lr = [group["lr"] for group in opt.param_groups]


def gradient_norm(model, clip: float | None) -> torch.Tensor:
    """The global gradient norm before clipping (DDP gradients are averaged already: the same on every rank)."""
    params = [p for p in model.parameters() if p.grad is not None]
    if clip:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    return torch.nn.utils.get_total_norm([p.grad for p in params])


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no NaN


def unwrap(model):
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def one_line(summary: dict, start_val: float | None, run_dir: Path) -> str:
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    minutes, seconds = divmod(int(summary["wall_time_s"]), 60)
    return (f"{summary['status']}: {summary['steps']}/{summary['max_steps']} steps in {minutes}m{seconds:02d}s | "
            f"val_loss {fmt(start_val)} -> {fmt(summary['final_val_loss'])} (best {fmt(summary['best_val_loss'])} "
            f"@ step {summary['best_step']}) | {summary['tokens_per_s']} tok/s | {summary['n_params'] / 1e6:.2f}M params | "
            f"{run_dir}")
