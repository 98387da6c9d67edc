"""Time one optimizer step of the Muon family against torch.optim.Muon and AdamW on Granite-4.0-H matrix shapes.

    python bench/optimizer.py                                  # CPU, small shapes (a scaled-down hybrid)
    python bench/optimizer.py --device cuda --shapes 350m      # the 350M model's 136 hidden matrices
    python bench/optimizer.py --device cuda --shapes 1b

Every row steps the same parameters with the same gradients; `vs torch` is its time over torch.optim.Muon's.
A second table times the pieces (batched Newton–Schulz, the Haar samplers, the effective-rank SVD).
Needs only torch; the `ns_kernel=triton_symmetric` rows need triton and a CUDA GPU (elsewhere they print
"— (needs CUDA)").
"""
import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from orthonoise.optim import NOLAH, IsotropicNoise, Muon, OrthoNoise  # noqa: E402
from orthonoise.optim.noise import effective_rank, haar_from_gaussian  # noqa: E402
from orthonoise.optim.orthogonalize import MUON_COEFFICIENTS, coefficient_schedule, newton_schulz  # noqa: E402

# The hidden-matrix geometry of conf/model/*.yaml (tests/optim/test_bench.py checks it against transformers).
PRESETS = {
    "small": dict(hidden=128, layers=4, attention=(2,), heads=4, kv_heads=2, mamba_heads=8, mamba_head_dim=32,
                  d_state=16, n_groups=1, mlp=256),
    "350m": dict(hidden=768, layers=32, attention=(10, 13, 17, 27), heads=12, kv_heads=4, mamba_heads=48,
                 mamba_head_dim=32, d_state=128, n_groups=1, mlp=2048),
    "1b": dict(hidden=1536, layers=40, attention=(5, 15, 25, 35), heads=12, kv_heads=4, mamba_heads=48,
               mamba_head_dim=64, d_state=128, n_groups=1, mlp=4096),
}


def matrix_shapes(hidden, layers, attention, heads, kv_heads, mamba_heads, mamba_head_dim, d_state, n_groups, mlp):
    """(rows, cols) of every nn.Linear weight the Muon family takes, in model order."""
    head_dim, d_inner = hidden // heads, mamba_heads * mamba_head_dim
    shapes = []
    for layer in range(layers):
        shapes += [(2 * mlp, hidden), (hidden, mlp)]  # shared_mlp: gated input_linear, output_linear
        if layer in attention:  # q, k, v, o
            shapes += [(heads * head_dim, hidden), (kv_heads * head_dim, hidden), (kv_heads * head_dim, hidden),
                       (hidden, heads * head_dim)]
        else:  # in_proj makes z, x, B, C and dt; out_proj maps back
            shapes += [(2 * d_inner + 2 * n_groups * d_state + mamba_heads, hidden), (hidden, d_inner)]
    return shapes


ROWS = {
    "torch.optim.Muon": lambda ps: torch.optim.Muon(ps, lr=0.02, weight_decay=0.0),
    "AdamW": lambda ps: torch.optim.AdamW(ps, lr=3e-3),
    "Muon": lambda ps: Muon(ps, lr=0.02, weight_decay=0.0),
    "Muon polar_express": lambda ps: Muon(ps, lr=0.02, weight_decay=0.0, ns_coefficients="polar_express"),
    "Muon ns_kernel=triton_symmetric": lambda ps: Muon(ps, lr=0.02, weight_decay=0.0, ns_kernel="triton_symmetric"),
    "OrthoNoise": lambda ps: OrthoNoise(ps, lr=0.02, weight_decay=0.0, alpha=1e-3, seed=0),
    "OrthoNoise ns_kernel=triton_symmetric": lambda ps: OrthoNoise(ps, lr=0.02, weight_decay=0.0, alpha=1e-3, seed=0,
                                                                   ns_kernel="triton_symmetric"),
    "OrthoNoise sampler=qr": lambda ps: OrthoNoise(ps, lr=0.02, weight_decay=0.0, alpha=1e-3, seed=0, sampler="qr"),
    "OrthoNoise sampler=polar": lambda ps: OrthoNoise(ps, lr=0.02, weight_decay=0.0, alpha=1e-3, seed=0,
                                                      sampler="polar"),
    "OrthoNoise rank_threshold=0.5": lambda ps: OrthoNoise(ps, lr=0.02, weight_decay=0.0, alpha=1e-3, seed=0,
                                                           rank_threshold=0.5),
    "IsotropicNoise": lambda ps: IsotropicNoise(ps, lr=0.02, weight_decay=0.0, alpha=1e-3, seed=0),
    "NOLAH": lambda ps: NOLAH(ps, lr=0.02, weight_decay=0.0),
    "Muon svd": lambda ps: Muon(ps, lr=0.02, weight_decay=0.0, orthogonalizer="svd"),
}
NS_TRITON = "Newton–Schulz 5 steps, one-triangle Triton kernels, batched per shape"
GRAM_TRITON = "X Xᵀ only (bf16, wide), one-triangle Triton kernel, batched per shape"
NEEDS_CUDA = {"Muon ns_kernel=triton_symmetric", "OrthoNoise ns_kernel=triton_symmetric", NS_TRITON, GRAM_TRITON}
SKIPPED = "— (needs CUDA)"


def gram_pieces(stacks) -> dict:
    """Newton–Schulz's first product alone, torch's GEMM against the one-triangle kernel: says whether the kernel
    itself beats cuBLAS where the whole Newton–Schulz row does not."""
    wide = [(x.mT if x.size(-2) > x.size(-1) else x).bfloat16().contiguous() for x in stacks]

    def triton_gram():
        from orthonoise.optim.symmetric_kernels import gram
        return [gram(x) for x in wide]

    return {"X Xᵀ only (bf16, wide), torch, batched per shape": lambda: [x @ x.mT for x in wide],
            GRAM_TRITON: triton_gram}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, min_seconds, max_reps=50, warmup=2):
    """Median seconds per call over at least `min_seconds` (fewer reps for slow calls)."""
    for _ in range(warmup):
        fn()
    times = []
    while sum(times) < min_seconds and len(times) < max_reps:
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", default="small", choices=PRESETS)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="parameter dtype")
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS), metavar="ROW",
                        help=f"which optimizers (default all): {', '.join(ROWS)}")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="time each row for at least this long")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    shapes = matrix_shapes(**PRESETS[args.shapes])
    gen = torch.Generator(device=device).manual_seed(0)
    weights = [torch.randn(s, generator=gen, device=device, dtype=dtype) * 0.02 for s in shapes]
    grads = [torch.randn(s, generator=gen, device=device, dtype=dtype) for s in shapes]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"# {datetime.date.today()} · {name} · torch {torch.__version__} · threads {torch.get_num_threads()}")
    print(f"# {' '.join(['python bench/optimizer.py'] + sys.argv[1:])}")
    print(f"# {args.shapes}: {len(shapes)} matrices, {sum(r * c for r, c in shapes) / 1e6:.1f}M parameters, "
          f"{len(set(shapes))} distinct shapes, {args.dtype}\n")
    print_step_table(time_steps(args.rows, weights, grads, device, args.min_seconds))

    by_shape = {}
    for s in shapes:
        by_shape[s] = by_shape.get(s, 0) + 1
    stacks = [torch.randn((n, *s), generator=gen, device=device) for s, n in by_shape.items()]
    print("\n| piece, all matrices | ms |\n|---|---:|")
    for label, fn in piece_functions(stacks, gen, device).items():
        if label in NEEDS_CUDA and device.type != "cuda":
            print(f"| {label} | {SKIPPED} |")
            continue
        print(f"| {label} | {timed(fn, device, args.min_seconds, max_reps=20, warmup=1) * 1e3:.1f} |")
    print()
    print_sampler_errors(stacks[0])


def time_steps(rows, weights, grads, device, min_seconds) -> dict[str, float | None]:
    """Seconds per optimizer step of each row, each on fresh copies of the same weights and gradients (None: the
    row needs CUDA and this is not a GPU)."""
    results = {}
    for row in rows:
        if row in NEEDS_CUDA and device.type != "cuda":
            results[row] = None
            continue
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        for p, g in zip(params, grads):
            p.grad = g
        results[row] = timed(ROWS[row](params).step, device, min_seconds)
        del params
    return results


def print_step_table(results: dict[str, float | None]) -> None:
    reference = results.get("torch.optim.Muon")
    print("| optimizer step | ms | vs torch.optim.Muon |\n|---|---:|---:|")
    for row, seconds in results.items():
        if seconds is None:
            print(f"| {row} | {SKIPPED} | — |")
            continue
        ratio = f"{seconds / reference:.2f}×" if reference else "—"
        print(f"| {row} | {seconds * 1e3:.1f} | {ratio} |")


def piece_functions(stacks, gen, device) -> dict:
    """The pieces table's rows: label → a call over every shape's stack."""
    ns5 = coefficient_schedule(MUON_COEFFICIENTS, 5)
    return {
        "Newton–Schulz 5 steps, batched per shape": lambda: [newton_schulz(x, ns5) for x in stacks],
        NS_TRITON: lambda: [newton_schulz(x, ns5, ns_kernel="triton_symmetric") for x in stacks],
        **gram_pieces(stacks),
        "Newton–Schulz 3 steps (ns_steps_noise)": lambda: [newton_schulz(x, ns5[:3]) for x in stacks],
        "Haar Q, Cholesky-QR, batched per shape": lambda: [haar_from_gaussian(x) for x in stacks],
        "Haar Q, polar (Newton–Schulz, split-Gram polish), batched per shape": lambda: [
            haar_from_gaussian(x, "polar") for x in stacks],
        "Haar Q, Householder QR, batched per shape": lambda: [haar_from_gaussian(x, "qr") for x in stacks],
        "Haar Q, Householder QR, one matrix at a time": lambda: [haar_from_gaussian(m, "qr")
                                                                 for x in stacks for m in x],
        "Gaussian draw only (one seeded draw per matrix)": lambda: [torch.randn(x.shape[1:], generator=gen,
                                                                               device=device)
                                                                   for x in stacks for _ in x],
        "effective rank (float32 SVD), all matrices": lambda: [effective_rank(x) for x in stacks],
        "effective rank (float64 Gram eigenvalues), all matrices": lambda: [effective_rank(x, "gram") for x in stacks],
    }


def print_sampler_errors(stack) -> None:
    for sampler in ("cholesky", "polar"):
        q = haar_from_gaussian(stack, sampler)
        gram = q.mT @ q if q.size(-2) >= q.size(-1) else q @ q.mT
        err = (gram.double() - torch.eye(gram.size(-1), device=stack.device, dtype=torch.float64)).abs().max().item()
        print(f"max |QᵀQ − I| of the {sampler} sampler on {tuple(stack.shape)}: {err:.1e} "
              f"(float32 eps {torch.finfo(torch.float32).eps:.1e})")


if __name__ == "__main__":
    main()
