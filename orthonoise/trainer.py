"""The training loop: read it top to bottom.

set-up (fail fast) → data → model → optimizers → resume → [step, log, eval, checkpoint]* → summary.
"""
import contextlib
import logging
import math
import time
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from orthonoise import distributed, perf
from orthonoise.checkpoint import load_checkpoint, save_checkpoint
from orthonoise.data import Batches, load_corpus
from orthonoise.errors import ConfigError
from orthonoise.loss import causal_lm_loss
from orthonoise.metrics import RunRecord, read_summary
from orthonoise.model import build_model, count_parameters, mamba_kernel_path
from orthonoise.optim import build_optimizers
from orthonoise.preemption import Preemption
from orthonoise.wandb_run import start_wandb

log = logging.getLogger(__name__)


def check_hardware(hw: DictConfig, ranks: distributed.Dist) -> torch.device:
    """Everything about the machine that can be wrong, checked before any compute."""
    if hw.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"hardware={hw.name} needs a CUDA GPU but none is visible here; use hardware=cpu")
    if hw.device == "cuda" and hw.world_size > torch.cuda.device_count():
        raise ConfigError(f"hardware={hw.name} needs {hw.world_size} GPUs, {torch.cuda.device_count()} visible")
    if hw.world_size != ranks.world_size:
        raise ConfigError(
            f"hardware={hw.name} expects {hw.world_size} processes but this is {ranks.world_size}: launch with "
            f"`torchrun --nproc_per_node {hw.world_size} train.py ...` or a submitit_slurm launcher with "
            f"tasks_per_node={hw.world_size}"
        )
    if hw.precision not in ("fp32", "bf16"):
        raise ConfigError(f"hardware.precision must be fp32 or bf16, got {hw.precision!r}")
    if hw.batch_size < 1 or hw.grad_accum < 1:
        raise ConfigError("hardware.batch_size and hardware.grad_accum must be >= 1")
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
    if trainer.lr_decay not in ("constant", "linear", "cosine"):
        raise ConfigError(f"trainer.lr_decay must be constant, linear or cosine, got {trainer.lr_decay!r}")

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


@torch.no_grad()
def evaluate(model, val: torch.Tensor, cfg: DictConfig, device, autocast, ranks) -> float:
    """Mean validation loss over the first eval_batches × batch_size windows, sharded over ranks."""
    model = unwrap(model)  # DDP's forward is a collective; ranks may get different numbers of eval batches
    model.eval()
    # eval_batches global batches (batch_size × world_size windows): the same windows on any number of GPUs
    n = len(val) if cfg.trainer.eval_batches == 0 else min(len(val), cfg.trainer.eval_batches * cfg.hardware.batch_size * ranks.world_size)
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
    if previous and previous["status"] == "completed":
        log.info("already completed in %s: skipping (delete summary.json to rerun)", run_dir)
        return previous
    ranks = distributed.init(cfg.hardware.device)
    device = check_hardware(cfg.hardware, ranks)
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
    step, wandb_id = 0, None
    checkpoint = load_checkpoint(run_dir)
    if checkpoint:
        unwrap(model).load_state_dict(checkpoint["model"])
        for obj, state in zip([*optimizers, *schedulers], checkpoint["optimizers"] + checkpoint["schedulers"]):
            obj.load_state_dict(state)
        batches.load_state_dict(checkpoint["batches"])
        record.load_state_dict(checkpoint["record"])
        torch.set_rng_state(checkpoint["torch_rng"])
        step, wandb_id = checkpoint["step"], checkpoint.get("wandb_id")
        say("resumed from %s at step %d", run_dir / "checkpoint.pt", step)
    wandb_run = start_wandb(cfg, run_dir, choices or {}, resume_id=wandb_id) if ranks.is_main else None

    def checkpoint_now():
        if ranks.is_main:
            save_checkpoint(run_dir, {
                "step": step, "model": unwrap(model).state_dict(),
                "optimizers": [o.state_dict() for o in optimizers], "schedulers": [s.state_dict() for s in schedulers],
                "batches": batches.state_dict(), "record": record.state_dict(), "torch_rng": torch.get_rng_state(),
                "wandb_id": wandb_run.id if wandb_run else None,
            })

    def log_row(row):
        record.log(row)
        if wandb_run:
            wandb_run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    if step == 0:
        first = evaluate(model, corpus.val, cfg, device, autocast, ranks)
        log_row({"step": 0, "tokens": 0, "val_loss": first, "val_ppl": math.exp(min(first, 50))})
    record.summary("running", step, step * tokens_per_step)
    status = "completed"
    preemption = Preemption()  # SLURM's time-out / preemption signal: checkpoint at the end of the step
    bar = tqdm(total=cfg.trainer.max_steps, initial=step, disable=not (ranks.is_main and cfg.trainer.progress_bar),
               desc="train", dynamic_ncols=True)
    while step < cfg.trainer.max_steps:
        t0 = time.perf_counter()
        meter.start()
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
        if cfg.trainer.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.grad_clip)
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        meter.mark("optimizer")
        for sched in schedulers:
            sched.step()
        train_loss = distributed.all_reduce_mean(torch.as_tensor(loss_sum, device=device)).item()
        step += 1
        bar.update(1)
        if not math.isfinite(train_loss) or train_loss > cfg.trainer.diverge_loss:
            status = "diverged"
            log_row({"step": step, "train_loss": train_loss if math.isfinite(train_loss) else None})
            break
        row = {"step": step, "train_loss": train_loss, "lr": optimizers[0].param_groups[0]["lr"],
               "tokens": step * tokens_per_step, "step_time_s": round(time.perf_counter() - t0, 4)}
        row.update(meter.end_step(row["step_time_s"], log=True))  # tokens/s, split, MFU, peak memory
        if step % cfg.trainer.eval_every == 0 or step == cfg.trainer.max_steps:
            row["val_loss"] = evaluate(model, corpus.val, cfg, device, autocast, ranks)
            row["val_ppl"] = math.exp(min(row["val_loss"], 50))
            for opt in optimizers:
                row.update(opt.metrics() if hasattr(opt, "metrics") else {})
            bar.set_postfix(train=f"{train_loss:.3f}", val=f"{row['val_loss']:.3f}")
        if step % cfg.trainer.log_every == 0 or "val_loss" in row:
            log_row(row)
        if step % cfg.trainer.checkpoint_every == 0 or step == cfg.trainer.max_steps:
            checkpoint_now()
            record.summary("running", step, step * tokens_per_step)
        if preemption.requested(device):
            status = "interrupted"
            checkpoint_now()
            break
    bar.close()
    summary = record.summary(status, step, step * tokens_per_step, mamba_path=mamba_path,
                             **meter.summary())
    if ranks.is_main:
        print(one_line(summary, record.first_val_loss, run_dir))
    if wandb_run:
        wandb_run.summary.update({k: v for k, v in summary.items() if v is not None})
        wandb_run.finish()
    del model, optimizers
    distributed.teardown()
    preemption.hand_over()  # under submitit: requeue this job (it resumes from the checkpoint) and exit
    return summary


def unwrap(model):
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def one_line(summary: dict, start_val: float | None, run_dir: Path) -> str:
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    minutes, seconds = divmod(int(summary["wall_time_s"]), 60)
    return (f"{summary['status']}: {summary['steps']}/{summary['max_steps']} steps in {minutes}m{seconds:02d}s | "
            f"val_loss {fmt(start_val)} -> {fmt(summary['final_val_loss'])} (best {fmt(summary['best_val_loss'])} "
            f"@ step {summary['best_step']}) | {summary['tokens_per_s']} tok/s | {summary['n_params'] / 1e6:.2f}M params | "
            f"{run_dir}")
