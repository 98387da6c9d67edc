"""The training loop: read it top to bottom.

set-up (fail fast) → data → model → optimizers → resume → [step, log, eval, checkpoint]* → summary.
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

from orthonoise import distributed, perf
from orthonoise.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from orthonoise.data import Batches, load_corpus
from orthonoise.loss import causal_lm_loss
from orthonoise.metrics import RunRecord, mark_status
from orthonoise.rundir import Status, read_summary
from orthonoise.model import build_model, count_parameters, mamba_kernel_path
from orthonoise.optim import build_optimizers
from orthonoise.preemption import Preemption, stopped_by
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


def train(cfg: DictConfig, run_dir: Path, choices: dict | None = None) -> dict:
    """Train one run into `run_dir`; returns the summary (also written to summary.json)."""
    run_dir = Path(run_dir)
    previous = read_summary(run_dir)
    if previous and previous.get("status") == Status.COMPLETED:
        print(f"already completed: {previous['steps']} steps, final val_loss {previous['final_val_loss']} | {run_dir} "
              f"(the same command finds the same run; delete that directory, or change the seed, to run again)")
        return previous
    validate(cfg, world_size=distributed.env_ranks().world_size)  # every config mistake, before any compute
    if signal_name := stopped_by():  # an earlier job of this multirun process was told to stop: so is this one
        log.warning("not started: this process received %s; launch the same command again to run it", signal_name)
        return mark_status(run_dir, Status.INTERRUPTED)
    with Preemption() as preemption:  # from here on SLURM's USR2, SIGTERM and Ctrl-C stop at the end of a step
        summary = _train_checked(cfg, run_dir, choices, preemption)
    preemption.hand_over()  # under submitit: requeue this job (it resumes from the checkpoint) and exit
    return summary


def _train_checked(cfg: DictConfig, run_dir: Path, choices: dict | None, preemption: Preemption) -> dict:
    """The run itself, once its config has passed every check."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ranks = distributed.init(cfg.hardware.device)
    device = set_up_device(cfg.hardware, ranks)
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
        say("torch.compile: %d per-layer modules (norms, MLP, attention)", perf.compile_blocks(model))
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
    meter = perf.PerfMeter(device, n_params, tokens_per_step, cfg.hardware.get("peak_tflops"))
    graph = None
    record = RunRecord(run_dir, enabled=ranks.is_main, n_params=n_params, max_steps=cfg.trainer.max_steps,
                       device=device.type, world_size=ranks.world_size)
    step, skipped, wandb_id = 0, 0, None
    checkpoint, checkpoint_path = load_checkpoint(run_dir)  # the newest intact one
    if checkpoint:
        unwrap(model).load_state_dict(checkpoint["model"])
        for obj, state in zip([*optimizers, *schedulers], checkpoint["optimizers"] + checkpoint["schedulers"]):
            obj.load_state_dict(state)
        batches.load_state_dict(checkpoint["batches"])
        record.load_state_dict(checkpoint["record"])
        set_rng_state(checkpoint["rng"])
        step, skipped, wandb_id = checkpoint["step"], checkpoint["skipped"], checkpoint["wandb_id"]
        say("resumed from %s at step %d", checkpoint_path, step)
    record.rewind(step if checkpoint else -1)  # drop what a killed run logged after its last checkpoint
    wandb_run = start_wandb(cfg, run_dir, choices or {}, resume_id=wandb_id) if ranks.is_main else None

    def checkpoint_now():
        if ranks.is_main:
            save_checkpoint(run_dir, {
                "step": step, "skipped": skipped, "model": unwrap(model).state_dict(),
                "optimizers": [o.state_dict() for o in optimizers], "schedulers": [s.state_dict() for s in schedulers],
                "batches": batches.state_dict(), "record": record.state_dict(), "rng": rng_state(),
                "wandb_id": wandb_run.id if wandb_run else None,
            }, step, keep=cfg.trainer.keep_checkpoints)

    def log_row(row):
        record.log(row)
        if wandb_run:
            wandb_run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    if step == 0:
        first = evaluate(model, corpus.val, cfg, device, autocast, ranks, cfg.trainer.eval_batches)
        log_row({"step": 0, "tokens": 0, "val_loss": first, "val_ppl": math.exp(min(first, 50))})
    record.summary(Status.RUNNING, step, step * tokens_per_step)
    status, diverged, final_eval_tokens = Status.COMPLETED, None, None  # tokens behind final_val_loss
    bar = tqdm(total=cfg.trainer.max_steps, initial=step, disable=not (ranks.is_main and cfg.trainer.progress_bar),
               desc="train", dynamic_ncols=True)
    while step < cfg.trainer.max_steps:
        t0 = time.perf_counter()
        meter.start()
        optimizers.prepare()  # work that needs no gradient (the next step's noise), alongside forward+backward
        loss_sum = 0.0
        for micro in range(cfg.hardware.grad_accum):
            windows = batches.next().to(device, non_blocking=True)
            sync = micro == cfg.hardware.grad_accum - 1 or ranks.world_size == 1
            if graph is None:  # hardware.cuda_graph: capture forward+backward once, replay it (orthonoise.perf)
                graph = cfg.hardware.get("cuda_graph", False) and perf.try_cuda_graph(
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
        elif train_loss > cfg.trainer.diverge_loss:
            status, diverged = Status.DIVERGED, f"train loss {train_loss:.4g} above trainer.diverge_loss at step {step}"
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
        if log_this_step:
            log_row(row)
        if step % cfg.trainer.checkpoint_every == 0 or step == cfg.trainer.max_steps:
            checkpoint_now()
            record.summary(Status.RUNNING, step, step * tokens_per_step)
        if preemption.requested(device):
            status = Status.INTERRUPTED
            checkpoint_now()
            break
    bar.close()
    if diverged:
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
