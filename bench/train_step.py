"""Training-step time and memory: the original scripts' configuration ("user") against ours, per model and
optimizer, in one run.

    python bench/train_step.py                      # GPU: granite-350m and granite-1b (random init, no hub)
    python bench/train_step.py --device cpu         # CPU: the tiny preset, a couple of steps (what the test runs)
    python bench/train_step.py --out DIR --profile  # also write results.json, table.md and a profiler table

"user":  SVD Muon (exact float32 polar factor), transformers' pure-torch Mamba2 scan, full-vocabulary logits
         and F.cross_entropy, at a batch that fits (--user-batch, 2×512 by default).
"ours":  mamba_ssm's fused Triton Mamba2 kernel (+ causal-conv1d or orthonoise's Triton conv1d), the chunked
         fused cross-entropy, batch 8×512, each optimizer of --optimizers with its config defaults.
Both: the trainer's step (orthonoise.trainer.train_step), bf16 autocast with fp32 master weights, TF32 on,
grad-clip 1.0, the AdamW partner for non-matrix parameters. Each GPU configuration runs in its own process (the
torch-scan one hides mamba_ssm before transformers is imported; peak memory is per process). Step time = host
clock around a synchronised step, median over --steps after --warmup; the forward+backward / optimizer split
comes from CUDA events.
Needs torch, transformers, hydra-core and the project (on the GPU image: shared/gpu/wheelhouse.sh).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
sys.path.insert(0, str(ROOT))

OPTIMIZERS = ("muon", "orthonoise", "isotropic", "nolah", "adamw")


# ------------------------------------------------------------------ config without Hydra ----------------------

def build_optimizers(model, name: str, **overrides):
    """orthonoise.optim.build_optimizers on the config `python train.py optimizer=<name>` composes."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from orthonoise.optim import build_optimizers as build

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"optimizer={name}", *(f"optimizer.{k}={v}" for k, v in overrides.items())])
    return build(model, cfg, log=lambda *_: None)


def model_node(preset: str, **config_overrides):
    from omegaconf import OmegaConf

    node = OmegaConf.load(CONF / "model" / f"{preset}.yaml")
    node.pretrained = False  # random init from config: no hub
    for k, v in config_overrides.items():
        node.config[k] = v
    return node


# ------------------------------------------------------------------ one configuration (a worker) ---------------

def run_config(spec: dict) -> list[dict]:
    """Build the model once, then time every optimizer of spec['runs'] on it; one result dict per run."""
    if spec["mamba"] == "torch" and spec.get("isolated"):
        sys.modules["mamba_ssm"] = None  # hide it before transformers resolves its kernels: the pure-torch scan
        sys.modules["causal_conv1d"] = None
    import torch

    model, windows, about = build_config(spec)
    results = []
    for run in spec["runs"]:
        base = {**about, "cudagraph": bool(spec.get("cudagraph") or run.get("cudagraph")), "optimizer": run["label"]}
        try:
            results.append({**base, **time_run(model, windows, spec, run, about["n_params"])})
        except torch.cuda.OutOfMemoryError:
            results.append({**base, "status": "oom"})
        except Exception as err:  # keep the other rows of the table
            results.append({**base, "status": f"error: {type(err).__name__}: {str(err).splitlines()[0][:200]}"})
            traceback.print_exc()
        if spec.get("isolated"):  # the parent keeps what finished if this process later times out
            print("ROW " + json.dumps(results[-1]), flush=True)
        model.zero_grad(set_to_none=True)
        if spec.get("profile") and run is spec["runs"][0] and results[-1]["status"] == "ok":
            text = profile_step(model, windows, spec, run, windows.device)
            if spec.get("out"):
                Path(spec["out"], f"profile_{spec['model']}_{run['label']}.txt").write_text(text)
            else:
                results[-1]["profile"] = text
    return results


def build_config(spec: dict):
    """The configuration's model, one batch of random windows, and the fields every row of it starts with."""
    import torch

    from orthonoise.lm.model import build_model, count_parameters, mamba_kernel_path
    from orthonoise.perf import compilation

    device = torch.device(spec["device"])
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    mcfg = model_node(spec["model"], **spec.get("model_config", {}))
    mcfg.activation_checkpointing = bool(spec.get("checkpointing"))
    model = build_model(mcfg).to(device)
    model.train()
    if spec.get("compile"):
        compilation.compile_blocks(model)
    windows = torch.randint(0, model.config.vocab_size, (spec["batch"], spec["seq"] + 1), device=device)
    about = {**{k: spec[k] for k in ("model", "who", "batch", "seq", "loss")}, "compile": bool(spec.get("compile")),
             "cudagraph": None, "checkpointing": bool(spec.get("checkpointing")),  # cudagraph, optimizer: per run
             "mamba_path": mamba_kernel_path() if spec["mamba"] != "torch" else "torch",
             "n_params": count_parameters(model), "optimizer": None,
             "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    return model, windows, about


def loss_fn(spec: dict):
    from orthonoise.lm.loss import causal_lm_loss

    return lambda model, windows: causal_lm_loss(model, windows, fused=spec["loss"] == "fused")


def bench_step(model, optimizers, windows, spec: dict, graph=None, timer=None) -> float:
    """The trainer's step (orthonoise.trainer.train_step: grad-clip 1.0, no accumulation) on `windows`; returns
    once its kernels have run, with its loss."""
    import torch

    from orthonoise.trainer import UNTIMED, train_step

    result = train_step(model, optimizers, lambda: windows, 1, 1.0, spec["bf16"], loss_fn(spec), graph,
                        timer or UNTIMED)
    if windows.device.type == "cuda":
        torch.cuda.current_stream(windows.device).synchronize()  # the optimizer's kernels too
    return result.loss


def path_checks(model, windows, spec: dict, run: dict) -> tuple[dict, object]:
    """Losses the fast paths must agree on (fused vs unfused Mamba2 on the first run; graph vs eager), and the
    CUDA graph of forward+backward where the run asks for one (else None)."""
    import torch

    from orthonoise.lm.loss import causal_lm_loss
    from orthonoise.perf import cuda_graph

    check, graph = {}, None
    def autocast():
        return torch.autocast(windows.device.type, dtype=torch.bfloat16, enabled=spec["bf16"])

    if spec.get("check_paths") and run is spec["runs"][0] and windows.device.type == "cuda":
        with torch.no_grad(), autocast():
            a = causal_lm_loss(model, windows).item()  # fused Mamba2 kernel (use_cache=False)
            b = torch.nn.functional.cross_entropy(  # transformers' default: cache → unfused conv + scan
                model(input_ids=windows[:, :-1]).logits.float().flatten(0, 1), windows[:, 1:].flatten()).item()
        check["fused_vs_unfused_mamba_loss"] = abs(a - b)
    if spec.get("cudagraph") or run.get("cudagraph"):
        with torch.no_grad(), autocast():
            eager = causal_lm_loss(model, windows, fused=spec["loss"] == "fused").item()
        graph = cuda_graph.CudaGraphStep(model, loss_fn(spec), windows, torch.bfloat16 if spec["bf16"] else None)
        check["graph_vs_eager_loss"] = abs(graph(windows).item() - eager)
    return check, graph


def time_run(model, windows, spec: dict, run: dict, n_params: int) -> dict:
    """One optimizer's steps on the configuration: medians over the timed steps after the warm-up ones."""
    import torch

    from orthonoise.perf import meter

    device = windows.device
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    optimizers = build_optimizers(model, run["optimizer"], **run.get("overrides", {}))
    timer = meter.StepTimer(device)
    check, graph = path_checks(model, windows, spec, run)
    warmup = run.get("warmup", spec["warmup"])
    steps, splits = [], {}
    for i in range(warmup + run.get("steps", spec["steps"])):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        value = bench_step(model, optimizers, windows, spec, graph, timer)
        dt = time.perf_counter() - t0
        if i >= warmup:
            steps.append(dt)
            for k, v in timer.read().items():
                splits.setdefault(k, []).append(v)
    step = statistics.median(steps)
    fb, op = statistics.median(splits["fwd_bwd"]), statistics.median(splits["optimizer"])
    tps = spec["batch"] * spec["seq"] / step
    m = meter.mfu(n_params, tps, meter.device_peak_flops(device))
    return {"status": "ok", "steps_timed": len(steps), "step_s": round(step, 4), "fwd_bwd_s": round(fb, 4),
            "optimizer_s": round(op, 4), "optimizer_frac": round(op / (fb + op), 4), "tokens_per_s": round(tps, 1),
            "mfu": round(m, 4) if m is not None else None,
            "peak_mem_gib": round(meter.peak_memory_gib(device), 2) if device.type == "cuda" else None,
            "final_loss": round(value, 4), **check}


def profile_step(model, windows, spec, run, device) -> str:
    """torch.profiler table of three steps (kernel time by op), for finding where the step goes."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    optimizers = build_optimizers(model, run["optimizer"], **run.get("overrides", {}))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    bench_step(model, optimizers, windows, spec)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(3):
            bench_step(model, optimizers, windows, spec)
    wall = (time.perf_counter() - t0) / 3
    averages = prof.key_averages()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    gpu_us = sum(getattr(e, "self_device_time_total", 0) or 0 for e in averages) / 3
    launches = sum(e.count for e in averages if getattr(e, "self_device_time_total", 0)) / 3
    head = (f"per step (3 profiled steps, profiler on): wall {wall * 1e3:.1f} ms, summed GPU kernel time "
            f"{gpu_us / 1e3:.1f} ms, kernel launches {launches:.0f}\n")
    return head + averages.table(sort_by=key, row_limit=45, max_name_column_width=70)


# ------------------------------------------------------------------ the plan, the table -------------------------

def plan(args) -> list[dict]:
    slow = {"steps": min(args.steps, args.svd_steps), "warmup": min(args.warmup, 1)}  # ~1 s/step optimizers

    def optimizer_run(entry: str) -> dict:
        """'orthonoise', or 'orthonoise:sampler=polar' with optimizer.* overrides; labelled as given."""
        name, *settings = entry.split(":")
        overrides = dict(setting.split("=", 1) for setting in settings)
        return {"optimizer": name, "label": entry, "overrides": overrides, **(slow if name == "nolah" else {})}

    opt_runs = [optimizer_run(o) for o in args.optimizers]
    if args.cudagraph:  # each optimizer with the captured forward+backward, then --eager ones without
        opt_runs = [{**r, "cudagraph": True} for r in opt_runs] + [optimizer_run(o) for o in args.eager]
    common = {"device": args.device, "seq": args.seq, "warmup": args.warmup, "steps": args.steps,
              "bf16": args.device == "cuda"}
    svd = {"optimizer": "muon", "label": "muon-svd", "overrides": {"orthogonalizer": "svd"},
           "steps": min(args.steps, args.svd_steps), "warmup": min(args.warmup, 1)}
    first, users, groups = [], [], []
    for model in args.models:
        ub = args.user_batch if args.device == "cuda" else args.batch
        user = {**common, "model": model, "who": "user", "mamba": "torch", "loss": "full", "batch": ub,
                "runs": [svd]}
        ours = {**common, "model": model, "who": "ours", "mamba": "fast", "loss": "fused", "batch": args.batch,
                "runs": opt_runs + ([svd] if args.ours_svd else []),
                "profile": args.profile and model == args.models[0], "check_paths": True}
        if model == "granite-1b" and args.checkpoint_1b:
            ours["checkpointing"] = True
        first.append(ours)
        users.append(user)
        groups.append({"ours": ours, "user": user, "variants": []})
        for variant in args.variants:  # ablations of ours, on the first optimizer only
            v = {**ours, "who": f"ours:{variant}", "runs": opt_runs[:1], "profile": False}
            if variant == "full-ce":
                v["loss"] = "full"
            elif variant == "compile":
                v["compile"] = True
            elif variant == "ckpt":
                v["checkpointing"] = True
            elif variant == "cudagraph":
                v["cudagraph"] = True
            elif variant == "torch-scan":
                v["mamba"] = "torch"
            else:
                raise SystemExit(f"unknown variant {variant}")
            first.append(v)
            groups[-1]["variants"].append(v)
    # CPU: user first (the test reads that order). GPU, by priority under --deadline: the first model's ours and
    # ablations, then each other model's ours, user and ablations, the first model's (slow) user run last.
    if args.device == "cpu":
        specs = users + first
    else:
        specs = [groups[0]["ours"], *groups[0]["variants"]]
        for g in groups[1:]:
            specs += [g["ours"], g["user"], *g["variants"]]
        specs.append(groups[0]["user"])
    specs = [s for s in specs if not (s["who"] == "user" and s["model"] in args.skip_user)]
    if args.device == "cpu":
        for s in specs:
            s["model_config"] = {"vocab_size": 512}
            s["mamba"] = "fast" if s["mamba"] == "fast" else "torch"
    return specs


def run_isolated(spec: dict, timeout: int) -> list[dict]:
    """One configuration in a fresh process (clean allocator, kernels hidden or not before transformers loads)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps({**spec, "isolated": True})]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        stdout, stderr, status = proc.stdout, proc.stderr, f"crashed (exit {proc.returncode})"
    except subprocess.TimeoutExpired as err:
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        stderr = err.stderr.decode() if isinstance(err.stderr, bytes) else (err.stderr or "")
        status = f"timeout {timeout}s"
    for line in stdout.splitlines():
        if line.startswith("RESULTS "):
            return json.loads(line[len("RESULTS "):])
    done = [json.loads(line[4:]) for line in stdout.splitlines() if line.startswith("ROW ")]
    sys.stderr.write(stderr[-3000:])
    return done + [{**_row_base(spec, r), "status": status} for r in spec["runs"][len(done):]]


def _row_base(spec, run):
    return {"model": spec["model"], "who": spec["who"], "batch": spec["batch"], "seq": spec["seq"],
            "loss": spec["loss"], "optimizer": run["label"], "mamba_path": spec["mamba"]}


def table(rows: list[dict]) -> str:
    """Markdown table; 'speed-up' = the original scripts' seconds per token over this row's, same model."""
    head = ("| model | config | Mamba2 path | loss | batch | optimizer | step s | fwd+bwd s | optimizer s | opt % "
            "| tokens/s | MFU | peak GiB | speed-up/token | status |")
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    user = {r["model"]: r for r in rows if r["who"] == "user" and r.get("status") == "ok"}
    fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
    for r in rows:
        ok = r.get("status") == "ok"
        speed = None
        if ok and r["model"] in user:
            u = user[r["model"]]
            speed = (u["step_s"] / (u["batch"] * u["seq"])) / (r["step_s"] / (r["batch"] * r["seq"]))
        extra = "+compile" if r.get("compile") else ""
        extra += "+ckpt" if r.get("checkpointing") else ""
        extra += "+cudagraph" if r.get("cudagraph") and "cudagraph" not in r["who"] else ""
        extra += "" if r.get("cudagraph") or r["who"] == "user" else " (eager)"
        lines.append(
            f"| {r['model']} | {r['who']}{extra} | {r.get('mamba_path', '')} | {r['loss']} "
            f"| {r['batch']}×{r['seq']} | {r['optimizer']} | {fmt(r.get('step_s'), '.3f')} "
            f"| {fmt(r.get('fwd_bwd_s'), '.3f')} | {fmt(r.get('optimizer_s'), '.4f')} "
            f"| {fmt(r.get('optimizer_frac') and 100 * r['optimizer_frac'], '.1f')} "
            f"| {fmt(r.get('tokens_per_s'), ',.0f')} "
            f"| {fmt(r.get('mfu') and 100 * r['mfu'], '.1f')}{'%' if r.get('mfu') else ''} "
            f"| {fmt(r.get('peak_mem_gib'), '.1f')} | {fmt(speed, '.1f')}{'×' if speed else ''} | {r.get('status')} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--models", default=None, help="comma-separated presets (GPU: granite-350m,granite-1b; CPU: tiny)")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                   help="comma-separated; NAME:KEY=VALUE[:KEY=VALUE] sets optimizer.KEY, e.g. orthonoise:sampler=polar")
    p.add_argument("--batch", type=int, default=None, help="our batch (GPU 8, CPU 2)")
    p.add_argument("--user-batch", type=int, default=2, help="the batch of the original scripts' configuration (GPU)")
    p.add_argument("--seq", type=int, default=None, help="sequence length (GPU 512, CPU 64)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (GPU 10, CPU 2)")
    p.add_argument("--svd-steps", type=int, default=3, help="timed steps for the slow SVD-Muon runs")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (GPU 3, CPU 1)")
    p.add_argument("--variants", default="", help="ablations of ours: full-ce,compile,cudagraph,ckpt,torch-scan")
    p.add_argument("--ours-svd", action="store_true", help="also time SVD Muon on our fast path")
    p.add_argument("--checkpoint-1b", action="store_true", help="activation checkpointing for granite-1b (ours)")
    p.add_argument("--profile", action="store_true", help="profiler table of ours on the first model")
    p.add_argument("--timeout", type=int, default=420, help="seconds per GPU configuration process")
    p.add_argument("--cudagraph", action="store_true", help="ours: capture forward+backward in a CUDA graph")
    p.add_argument("--eager", default="", help="with --cudagraph: optimizers also timed without the graph")
    p.add_argument("--skip-user", default="", help="models whose user configuration is not run")
    p.add_argument("--deadline", type=int, default=None, help="seconds for the whole run: later configs are skipped")
    p.add_argument("--out", type=Path, default=None, help="write results.json, table.md (and profile_*.txt)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def presets(text: str) -> list[str]:
    """'350m,tiny' → ['granite-350m', 'tiny']."""
    return [m if m.startswith(("granite", "tiny")) else f"granite-{m}" for m in text.split(",") if m]


def complete_args(args: argparse.Namespace, gpu: bool) -> None:
    """The device's defaults for what the command line left out; lists from the comma-separated options."""
    args.models = presets(args.models or ("granite-350m,granite-1b" if gpu else "tiny"))
    args.optimizers = [o for o in args.optimizers.split(",") if o]
    args.variants = [v for v in args.variants.split(",") if v]
    args.eager = [o for o in args.eager.split(",") if o]
    args.skip_user = presets(args.skip_user)
    args.batch = args.batch or (8 if gpu else 2)
    args.seq = args.seq or (512 if gpu else 64)
    args.steps = args.steps or (10 if gpu else 2)
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)


def run_plan(args: argparse.Namespace, gpu: bool) -> list[dict]:
    """Every configuration of the plan (on a GPU each in its own process), under --deadline; with --out, the rows
    of each are appended to rows.jsonl as it finishes."""
    rows, start = [], time.time()
    for spec in plan(args):
        t0 = time.time()
        left = args.deadline - (t0 - start) if args.deadline else args.timeout
        if left < 30:
            got = [{**_row_base(spec, r), "status": "skipped (deadline)"} for r in spec["runs"]]
        else:
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                spec["out"] = str(args.out)
            got = run_isolated(spec, int(min(args.timeout, left))) if gpu else run_config(spec)
        print(f"[{time.time() - t0:6.1f}s] {spec['model']} {spec['who']}: "
              + ", ".join(f"{r['optimizer']} {r.get('step_s', r.get('status'))}" for r in got), flush=True)
        rows += got
        if args.out:  # what finished survives a time-out
            args.out.mkdir(parents=True, exist_ok=True)
            with open(args.out / "rows.jsonl", "a") as f:
                for r in got:
                    f.write(json.dumps({k: v for k, v in r.items() if k != "profile"}) + "\n")
            for r in got:
                if "profile" in r:
                    (args.out / f"profile_{r['model']}_{r['optimizer']}.txt").write_text(r["profile"])
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print("RESULTS " + json.dumps(run_config(json.loads(args.worker))), flush=True)
        return []
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    complete_args(args, gpu=args.device == "cuda")
    rows = run_plan(args, gpu=args.device == "cuda")
    profiles = {f"{r['model']}_{r['optimizer']}": r.pop("profile") for r in rows if "profile" in r}
    text = table(rows)
    device = rows[0].get("device_name", args.device) if rows else args.device
    header = (f"device: {device}; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}; "
              f"command: python bench/train_step.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print("\n" + header + "\n\n" + text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))
        (args.out / "table.md").write_text(header + "\n\n" + text + "\n")
        for name, prof in profiles.items():
            (args.out / f"profile_{name}.txt").write_text(prof)
    elif profiles:
        for name, prof in profiles.items():
            print(f"\nprofile {name}\n{prof}")
    return rows


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
