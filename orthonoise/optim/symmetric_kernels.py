"""Triton kernels for Newton–Schulz's two symmetric products, computing one triangle and mirroring it.

Each Newton–Schulz step forms A = X Xᵀ and B = b·A + c·A·A, both symmetric, then X ← a·X + B·X. torch's batched
GEMMs compute every entry of A and B; these kernels compute only the tiles that touch the upper triangle
(diagonal included) and write each tile's transpose into the lower one, so A and B cost about half their FLOPs
(~28% fewer for a whole Newton–Schulz step at the 1B model's shapes, where B·X stays torch's).

    gram(X)                   X Xᵀ for a batch X (k, m, n)
    gram_polynomial(A, b, c)  b·A + c·A·A for a batch of symmetric A (k, m, m); A·A = A Aᵀ, so the same kernel

fp32 accumulation and one rounding to the input's dtype (bf16 in Newton–Schulz), the arithmetic of torch's bf16
GEMM; the order of the fp32 sums differs, so results agree with torch's to bf16 rounding, not bit for bit.
The output is exactly symmetric (each pair of mirrored entries is one stored value).

Adapted from the symmetric-matmul kernels of KellerJordan/modded-nanogpt (`XXT`, `ba_plus_cAA`, by @byronxu99,
MIT) and nil0x9/flash-muon (`matmul_transpose`, MIT): here the tiles may be rectangular, both operands are loaded
along the contiguous dimension (the second one transposed in registers), and the diagonal tiles are stored once
per entry instead of twice.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs
    triton = None


class Tiles(NamedTuple):
    """Block sizes (rows, columns and the reduction of one output tile) and launch settings."""
    block_m: int
    block_n: int
    block_k: int
    num_warps: int = 8
    num_stages: int = 4


# One of modded-nanogpt's H100 choices for these products (128×128 output tiles, 64-deep slices, 8 warps, 4 stages);
# not tuned here.
CUDA_TILES = Tiles(128, 128, 64)
# Under the interpreter (TRITON_INTERPRET=1, CPU tensors) small tiles keep tests fast and span several tiles.
INTERPRETER_TILES = Tiles(32, 32, 32, num_warps=4, num_stages=1)


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def gram(X: Tensor, tiles: Tiles | None = None) -> Tensor:
    """X Xᵀ for a batch X (k, m, n): (k, m, m) in X's dtype."""
    _check(X)
    if X.stride(-1) != 1:  # both operands are read along rows: make the reduction dimension contiguous
        X = X.contiguous()
    return _launch(X, X.shape[-1], 1.0, 0.0, tiles)


def gram_polynomial(A: Tensor, b: float, c: float, tiles: Tiles | None = None) -> Tensor:
    """b·A + c·A·A for a batch of symmetric A (k, m, m) — torch.baddbmm(A, A, A, beta=b, alpha=c) for a
    symmetric A, since A·A = A Aᵀ."""
    _check(A)
    if A.shape[-1] != A.shape[-2]:
        raise ValueError(f"gram_polynomial takes square (symmetric) matrices, got shape {tuple(A.shape)}")
    if A.stride(-1) != 1:
        A = A.contiguous()
    return _launch(A, A.shape[-1], float(c), float(b), tiles, add_input=True)


def _check(X: Tensor) -> None:
    if triton is None:
        raise RuntimeError("ns_kernel=triton_symmetric needs triton (pip install triton), which is not installed")
    if X.ndim != 3:
        raise ValueError(f"the symmetric kernels take a batch (k, m, n), got shape {tuple(X.shape)}")
    if X.device.type != "cuda" and not interpreted():
        raise ValueError(f"the symmetric kernels run on CUDA tensors (or under TRITON_INTERPRET=1), "
                         f"got a {X.device.type} tensor")


def _launch(X: Tensor, K: int, alpha: float, beta: float, tiles: Tiles | None, add_input: bool = False) -> Tensor:
    """C = alpha·X Xᵀ (+ beta·X when add_input) over one triangle of tiles; grid (tile row, tile column, batch)."""
    tiles = tiles or (INTERPRETER_TILES if interpreted() else CUDA_TILES)
    batch, M = X.shape[0], X.shape[1]
    C = torch.empty((batch, M, M), dtype=X.dtype, device=X.device)
    grid = (triton.cdiv(M, tiles.block_m), triton.cdiv(M, tiles.block_n), batch)
    _symmetric_product[grid](
        X, C, M, K, *X.stride(), *C.stride(), alpha, beta, ADD_INPUT=add_input, DOT_FP32=interpreted(),
        BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n, BLOCK_K=tiles.block_k,
        num_warps=tiles.num_warps, num_stages=tiles.num_stages)
    return C


if triton is not None:
    @triton.jit
    def _symmetric_product(X, C, M, K, sx_b, sx_r, sx_c, sc_b, sc_r, sc_c, alpha, beta,
                           ADD_INPUT: tl.constexpr, DOT_FP32: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """One output tile of alpha·X Xᵀ (+ beta·X): entries on or above the diagonal stored in place, entries
        strictly above it also stored transposed below it. A tile entirely below the diagonal returns at once:
        its mirror tile writes it. Every entry of C is written exactly once."""
        pid_m, pid_n, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        if pid_m * BLOCK_M > pid_n * BLOCK_N + BLOCK_N - 1:  # first row of the tile below its last column
            return
        X += pid_b.to(tl.int64) * sx_b
        C += pid_b.to(tl.int64) * sc_b
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in tl.range(0, K, BLOCK_K):
            ks = k + tl.arange(0, BLOCK_K)
            left = tl.load(X + rows[:, None] * sx_r + ks[None, :] * sx_c,
                           mask=(rows[:, None] < M) & (ks[None, :] < K), other=0.0)
            right = tl.load(X + cols[:, None] * sx_r + ks[None, :] * sx_c,
                            mask=(cols[:, None] < M) & (ks[None, :] < K), other=0.0)
            if DOT_FP32:  # the interpreter's tl.dot multiplies bf16 tiles as raw bits; fp32 products are exact
                left, right = left.to(tl.float32), right.to(tl.float32)
            acc = tl.dot(left, tl.trans(right), acc)
        inside = (rows[:, None] < M) & (cols[None, :] < M)
        acc = acc * alpha
        if ADD_INPUT:
            acc += beta * tl.load(X + rows[:, None] * sx_r + cols[None, :] * sx_c, mask=inside, other=0.0).to(
                tl.float32)
        out = acc.to(C.dtype.element_ty)
        tl.store(C + rows[:, None] * sc_r + cols[None, :] * sc_c, out, mask=inside & (rows[:, None] <= cols[None, :]))
        mirror = (cols[:, None] < M) & (rows[None, :] < M) & (cols[:, None] > rows[None, :])
        tl.store(C + cols[:, None] * sc_r + rows[None, :] * sc_c, tl.trans(out), mask=mirror)
