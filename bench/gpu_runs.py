"""Real train.py runs on one GPU: does every optimizer's run complete with the CUDA graph on, what a full step, an
eval and an effective-rank pass cost, does a twice-preempted run resume bit-identically, how many runs share a GPU.

    python bench/gpu_runs.py runs preempt share --models granite-350m,granite-1b   # the GPU (bench/gpu.sh)
    python bench/gpu_runs.py --smoke runs preempt share                              # CPU rehearsal of the script

runs     every optimizer of OPTIMIZERS for `steps` steps on each model, one process per model (Hydra's in-process
         launcher: the first job pays the imports and kernel compilation, `startup` in the table); median full step
         (the trainer's own step_time_s), its forward+backward / optimizer split, the evals' eval_s and rank_s
         (orthonoise/trainer.py), peak memory, whether the CUDA graph was captured. Ends with the rows
         bench/results/step_times.yaml takes (`measured` and `overheads`).
preempt  the first model's Muon run stopped with USR2 (SLURM's preemption signal) at two steps, relaunched after
         each, then the same run uninterrupted: both completed, and equal final val loss and parameters?
share    1, 2, 4 concurrent runs of the first model (seeds 1..N) on the one GPU: runs per GPU-hour against one run
         alone, and whether seed 1 run beside others ends bit-identical to seed 1 alone.
Results: <out>/runs.md (a table per section, appended as each section ends) and <out>/runs.json. Run directories go
under --work (their checkpoints are GBs: keep them out of the device tool's $OUT).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orthonoise.run.rundir import EVAL_S, RANK_S, SUMMARY_FILE, read_hydra_record, read_metrics  # noqa: E402
from orthonoise.sweep.rehearsal import bit_identical, final_params, preempt_once, run_dirs, run_logged  # noqa: E402

OPTIMIZERS = ("muon", "orthonoise", "isotropic", "nolah")
GRAPH_CAPTURED = "forward+backward captured in a CUDA graph"  # orthonoise/perf/cuda_graph.py's log line
COMMON = ("logger=disabled", "trainer.progress_bar=false", "trainer.log_every=1", "trainer.eval_batches=4",
          "trainer.final_eval_batches=4")


@dataclass(frozen=True)
class Setup:
    """What each section runs: the GPU's real models, or the tiny CPU rehearsal that checks this script."""
    models: tuple[str, ...]
    overrides: tuple[str, ...]        # every run's, beside COMMON
    steps: int                        # runs and preempt
    eval_every: int
    checkpoint_every: int
    preempt_at: tuple[int, int]       # logged steps after which USR2 arrives
    share_counts: tuple[int, ...]     # concurrent runs per measurement
    share_steps: int                  # long enough that the runs overlap well past their start-up


GPU = Setup(models=("granite-350m", "granite-1b"),
            overrides=("model.pretrained=false", "data=local", "data.seq_len=512", "hardware=h100"),
            steps=30, eval_every=15, checkpoint_every=10, preempt_at=(10, 20), share_counts=(1, 2, 4),
            share_steps=150)
SMOKE = Setup(models=("tiny",), overrides=("hardware=cpu", "trainer.warmup_steps=2"),
              steps=12, eval_every=6, checkpoint_every=2, preempt_at=(3, 7), share_counts=(1, 2), share_steps=6)


def train_args(setup: Setup, model: str, steps: int, *extra: str, multirun: bool = False) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *(["-m"] if multirun else []), *setup.overrides, *COMMON,
            f"model={model}", f"trainer.max_steps={steps}", *extra]


def run_args(setup: Setup, model: str, run_dir: Path, *extra: str) -> list[str]:
    """One run of `setup.steps` steps into run_dir."""
    return train_args(setup, model, setup.steps, "seed=1", f"trainer.eval_every={setup.eval_every}",
                      f"trainer.checkpoint_every={setup.checkpoint_every}", *extra, f"hydra.run.dir={run_dir}")


# ------------------------------------------------------------------ reading a run -------------------------------

def run_figures(run_dir: Path) -> dict:
    """A finished run's figures: status, median step and split, eval and rank seconds, memory, graph."""
    summary = json.loads((run_dir / SUMMARY_FILE).read_text()) if (run_dir / SUMMARY_FILE).exists() else {}
    rows = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
    last = summary.get("max_steps")
    # eval_s of the evals between step 0 (it warms up) and the last (final_eval_batches); rank_s of every eval: its
    # cost does not depend on the batches
    evals = [r[EVAL_S] for r in rows if EVAL_S in r and 0 < r["step"] < (last or 0)]
    ranks = [r[RANK_S] for r in rows if RANK_S in r and r["step"] > 0]
    final = [r for r in rows if EVAL_S in r and r["step"] == last]
    log = (run_dir / "train.log").read_text() if (run_dir / "train.log").exists() else ""
    return {"status": summary.get("status", "no summary"), "steps": summary.get("steps"),
            "step_s": summary.get("median_step_s"), "fwd_bwd_s": summary.get("median_fwd_bwd_s"),
            "optimizer_s": summary.get("median_optimizer_s"), "eval_s": median(evals), "rank_s": median(ranks),
            "final_eval_s": final[0][EVAL_S] if final else None, "peak_mem_gib": summary.get("peak_mem_gib"),
            "wall_time_s": summary.get("wall_time_s"), "final_val_loss": summary.get("final_val_loss"),
            "cuda_graph": GRAPH_CAPTURED in log, "error": summary.get("error")}


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def difference(run_a: Path, run_b: Path) -> str:
    """'bit-identical', or how the two runs differ (with the largest parameter difference)."""
    try:
        diffs = bit_identical(run_a, run_b)
    except (OSError, IndexError, KeyError, ValueError) as err:
        return f"not comparable ({type(err).__name__}: {err})"
    if not diffs:
        return "bit-identical"
    a, b = final_params(run_a), final_params(run_b)
    biggest = max(((a[k].float() - b[k].float()).abs().max().item() for k in a if k in b), default=float("nan"))
    return f"DIFFERENT: {len(diffs)} fields ({'; '.join(diffs[:3])}); max |Δ parameter| {biggest:.3g}"


def fmt(value, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec) if isinstance(value, float) else str(value)


# ------------------------------------------------------------------ the sections --------------------------------

def section_runs(setup: Setup, work: Path, timeout: int) -> tuple[dict, str]:
    results, lines = {}, []
    for model in setup.models:
        sweep = work / "runs" / model
        cmd = train_args(setup, model, setup.steps, "seed=1", f"trainer.eval_every={setup.eval_every}",
                         f"trainer.checkpoint_every={setup.checkpoint_every}", f"optimizer={','.join(OPTIMIZERS)}",
                         f"hydra.sweep.dir={sweep}", multirun=True)
        started, since = time.perf_counter(), time.time()
        rc = run_process(cmd, work / f"runs_{model}.log", timeout)
        wall = time.perf_counter() - started
        dirs = {read_hydra_record(d).choices.get("optimizer"): d for d in run_dirs(sweep)}
        jobs = {name: run_figures(d) for name, d in dirs.items()}
        earlier = [name for name, d in dirs.items()
                   if (d / SUMMARY_FILE).exists() and (d / SUMMARY_FILE).stat().st_mtime < since]
        results[model] = {"exit": rc, "process_s": round(wall, 1), "from_an_earlier_call": earlier, "jobs": jobs}
        lines += runs_table(model, results[model])
    return results, "\n".join(["## runs: every optimizer, CUDA graph on where the hardware preset asks", *lines,
                               *step_time_rows(setup, results)])


def runs_table(model: str, result: dict) -> list[str]:
    muon = (result["jobs"].get("muon") or {}).get("step_s")
    earlier = result["from_an_earlier_call"]
    lines = [f"\n### {model}: exit {result['exit']}, process {result['process_s']} s"
             f"{'; completed by an earlier call: ' + ', '.join(earlier) if earlier else ''}\n",
             "| optimizer | status | steps | step s | vs Muon | fwd+bwd s | optimizer s | eval s | rank s | "
             "rank/eval | final eval s | peak GiB | graph |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name in OPTIMIZERS:
        j = result["jobs"].get(name)
        if j is None:
            lines.append(f"| {name} | did not start | | | | | | | | | | | |")
            continue
        ratio = f"{j['step_s'] / muon:.2f}×" if muon and j["step_s"] else "—"
        share = f"{j['rank_s'] / j['eval_s']:.0%}" if j["rank_s"] and j["eval_s"] else "—"
        lines.append(f"| {name} | {j['status']} | {fmt(j['steps'])} | {fmt(j['step_s'], '.4f')} | {ratio} | "
                     f"{fmt(j['fwd_bwd_s'], '.4f')} | {fmt(j['optimizer_s'], '.4f')} | {fmt(j['eval_s'])} | "
                     f"{fmt(j['rank_s'])} | {share} | {fmt(j['final_eval_s'])} | {fmt(j['peak_mem_gib'], '.1f')} | "
                     f"{'yes' if j['cuda_graph'] else 'no'} |")
    return lines


def step_time_rows(setup: Setup, results: dict) -> list[str]:
    """The rows bench/results/step_times.yaml takes from these runs (start-up: the preempt section's)."""
    hardware = next(o.split("=", 1)[1] for o in setup.overrides if o.startswith("hardware="))
    source = f"bench/gpu_runs.py {time.strftime('%Y-%m-%d')}"
    rows = ["\nFor bench/results/step_times.yaml (median step of the trainer, evals excluded):", "```yaml"]
    for model, result in results.items():
        for name, j in result["jobs"].items():
            if j["step_s"]:
                rows.append(f"  - {{model: {model}, optimizer: {name}, hardware: {hardware}, step_s: {j['step_s']}, "
                            f"source: \"{source}\"}}")
        muon = result["jobs"].get("muon") or {}
        rows.append(f"  # overheads (Muon's evals, 4 batches each): {{model: {model}, hardware: {hardware}, "
                    f"eval_s: {muon.get('eval_s')}, rank_s: {muon.get('rank_s')}, "
                    f"final_eval_s: {muon.get('final_eval_s')}}}")
    return [*rows, "```"]


def section_preempt(setup: Setup, work: Path, timeout: int) -> tuple[dict, str]:
    model, base = setup.models[0], fresh(work / "preempt")
    preempted, straight = base / "preempted", base / "straight"
    cmd = run_args(setup, model, preempted, "optimizer=muon")
    log = base / "preempted.log"
    stops = [preempt_once(cmd, lambda: preempted if (preempted / "metrics.jsonl").exists() else None, step, log)
             for step in setup.preempt_at]
    run_process(cmd, log, timeout)  # the relaunch after the second preemption finishes the run
    started = time.perf_counter()
    run_process(run_args(setup, model, straight, "optimizer=muon"), base / "straight.log", timeout)
    process_s, straight_run = time.perf_counter() - started, run_figures(straight)
    startup = process_s - (straight_run["wall_time_s"] or 0)
    resumes = (preempted / "train.log").read_text().count("resumed from")
    result = {"model": model, "stopped_at": stops, "resumes": resumes, "preempted": run_figures(preempted)["status"],
              "straight": straight_run["status"], "comparison": difference(preempted, straight),
              "startup_s": round(startup, 1)}
    text = (f"## preempt: {model} Muon, USR2 after steps {list(setup.preempt_at)}, relaunched each time\n\n"
            f"stopped at {stops}, resumed {resumes} times; preempted run {result['preempted']}, uninterrupted run "
            f"{result['straight']}: **{result['comparison']}**\n\nstart-up of one run (process wall − trainer "
            f"wall, the uninterrupted run): {result['startup_s']} s (overheads' `startup_s` in "
            f"bench/results/step_times.yaml)")
    return result, text


def section_share(setup: Setup, work: Path, timeout: int) -> tuple[dict, str]:
    model, results, base = setup.models[0], {}, fresh(work / "share")
    for n in setup.share_counts:
        dirs = [base / f"n{n}" / f"seed{i}" for i in range(1, n + 1)]
        cmds = [train_args(setup, model, setup.share_steps, f"seed={i}", "optimizer=muon",
                           f"trainer.eval_every={setup.share_steps}", f"trainer.checkpoint_every={setup.share_steps}",
                           f"hydra.run.dir={d}") for i, d in enumerate(dirs, 1)]
        started = time.perf_counter()
        concurrent(cmds, [base / f"n{n}_seed{i}.log" for i in range(1, n + 1)], timeout)
        span = time.perf_counter() - started
        runs = [run_figures(d) for d in dirs]
        steps = [r["step_s"] for r in runs if r["step_s"]]
        results[n] = {"span_s": round(span, 1), "statuses": [r["status"] for r in runs], "step_s": steps,
                      "runs_per_hour": round(3600 * sum(r["status"] == "completed" for r in runs) / span, 2),
                      "alone_vs_shared": None if n == 1 else difference(dirs[0], base / "n1" / "seed1")}
    return results, share_table(model, setup.share_steps, results)


def share_table(model: str, steps: int, results: dict) -> str:
    alone = results.get(1, {})
    lines = [f"## share: {model} Muon, {steps} steps, N runs started together on one GPU\n",
             "| N | completed | span s | runs per hour | vs alone | median step s (each) | seed 1 vs alone |",
             "|---:|---|---:|---:|---:|---|---|"]
    for n, r in results.items():
        ratio = f"{r['runs_per_hour'] / alone['runs_per_hour']:.2f}×" if alone.get("runs_per_hour") else "—"
        lines.append(f"| {n} | {r['statuses'].count('completed')}/{n} | {r['span_s']} | {r['runs_per_hour']} | {ratio} "
                     f"| {', '.join(f'{s:.4f}' for s in r['step_s'])} | {r['alone_vs_shared'] or '—'} |")
    return "\n".join([*lines, "\nruns per hour = completed runs / (last end − first start), start-up included."])


SECTIONS = {"runs": section_runs, "preempt": section_preempt, "share": section_share}


# ------------------------------------------------------------------ processes -----------------------------------

def fresh(directory: Path) -> Path:
    """An empty directory: a section that compares runs must not find a completed run from an earlier call (the
    relaunch would skip it). `runs` keeps its directories: a second call resumes or reuses what the first left."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def run_process(cmd: list[str], log_path: Path, timeout: int) -> int | str:
    """The exit code, or "timeout N s": a cut process still leaves its finished runs to read."""
    try:
        return run_logged(cmd, log_path, timeout)
    except subprocess.TimeoutExpired:
        return f"timeout {timeout} s"


def concurrent(cmds: list[list[str]], logs: list[Path], timeout: int) -> None:
    for log in logs:
        log.parent.mkdir(parents=True, exist_ok=True)
    handles = [open(log, "a") for log in logs]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=h, stderr=subprocess.STDOUT) for cmd, h in zip(cmds, handles)]
    deadline = time.time() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
    for h in handles:
        h.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sections", nargs="+", choices=list(SECTIONS))
    p.add_argument("--smoke", action="store_true", help="the tiny CPU rehearsal of every section (checks the script)")
    p.add_argument("--models", default=None, help="comma-separated model presets (GPU default granite-350m,granite-1b)")
    p.add_argument("--out", type=Path, default=Path("bench/results/gpu_runs"), help="where runs.md and runs.json go")
    p.add_argument("--work", type=Path, default=Path("/tmp/orthonoise-gpu-runs"), help="where run directories go")
    p.add_argument("--timeout", type=int, default=600, help="seconds per process (per model for runs)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a train.py override for every run of this call (repeatable), e.g. trainer.eval_every=30")
    args = p.parse_args(argv)
    setup = SMOKE if args.smoke else GPU
    if args.models:
        setup = Setup(**{**setup.__dict__, "models": tuple(args.models.split(","))})
    setup = Setup(**{**setup.__dict__, "overrides": (*setup.overrides, *args.override)})
    args.out.mkdir(parents=True, exist_ok=True)
    record_path = args.out / "runs.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    for name in args.sections:
        started = time.perf_counter()
        try:
            result, text = SECTIONS[name](setup, args.work, args.timeout)
        except Exception as err:  # one section's failure must not cost the others
            result, text = {"error": f"{type(err).__name__}: {err}"}, f"## {name}: FAILED — {type(err).__name__}: {err}"
        record[name] = {**record.get(name, {}), **result}  # runs350m and runs1b are two calls of `runs`
        record_path.write_text(json.dumps(record, indent=1, default=str))
        with open(args.out / "runs.md", "a") as md:
            md.write(f"{text}\n\n({name}: {time.perf_counter() - started:.0f} s)\n\n")
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
