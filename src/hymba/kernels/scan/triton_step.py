"""Mamba-1 decoding in Triton: the one-token conv update and the one-token state update, each one kernel.

A decode step of a Mamba-1 head is two reads of its state with a matmul between them (the conv output u feeds
x_proj, which gives delta, B and C), so it is two kernels, each reading its state once and writing it once in
place:

- :func:`causal_conv1d_update_triton`: shift the conv inputs [B, D, K-1] by one, the depthwise conv of the K
  inputs, bias and SiLU. Same semantics as :func:`hymba.kernels.scan.ref.causal_conv1d_update_ref`.
- :func:`selective_state_update_triton`: delta + bias, softplus, h = exp(delta A) h + delta B x,
  y = C.h + D x, y *= SiLU(z); the state stays fp32. Same semantics as
  :func:`hymba.kernels.scan.ref.selective_state_update_ref` (mamba_ssm's ``selective_state_update``).

Inputs may be fp32, bf16 or fp16 with any strides (the model passes slices of its input projection); nothing
is cast or copied on the host side. Both are ``torch.library`` custom ops (``hymba::conv_state_update``,
``hymba::selective_state_update``) that declare the state they mutate and have fake implementations, so a
decode step traces under ``torch.compile`` and replays from a CUDA graph. Under ``TRITON_INTERPRET=1`` the
kernels run on CPU tensors (how the tests check them at tiny shapes).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hymba.kernels.scan.triton import _softplus

BLOCK_D = 64  # channels per program (state update: BLOCK_D x N fp32 in registers)
CONV_BLOCK_D = 256  # channels per program of the conv update
NUM_WARPS = 4


@triton.jit
def _state_update_kernel(
    state_ptr,
    x_ptr,
    dt_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    out_ptr,
    DIM,
    N,
    s_hb,
    s_hd,
    s_hn,
    s_xb,
    s_xd,
    s_tb,
    s_td,
    s_Ad,
    s_An,
    s_Bb,
    s_Bn,
    s_Cb,
    s_Cn,
    s_zb,
    s_zd,
    s_ob,
    s_od,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    A_IS_LOG: tl.constexpr,
    BLOCK: tl.constexpr,
    NP: tl.constexpr,
):
    b = tl.program_id(0)
    d = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    n = tl.arange(0, NP)
    md, mn = d < DIM, n < N
    mdn = md[:, None] & mn[None, :]
    hp = state_ptr + b * s_hb + d[:, None] * s_hd + n[None, :] * s_hn
    h = tl.load(hp, mask=mdn, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + b * s_xb + d * s_xd, mask=md, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + b * s_tb + d * s_td, mask=md, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt += tl.load(bias_ptr + d, mask=md, other=0.0).to(tl.float32)
    if SOFTPLUS:
        dt = _softplus(dt)
    A = tl.load(A_ptr + d[:, None] * s_Ad + n[None, :] * s_An, mask=mdn, other=0.0).to(tl.float32)
    if A_IS_LOG:
        A = -tl.exp(A)  # Mamba's A = -exp(A_log), as the full forward computes it
    Bv = tl.load(B_ptr + b * s_Bb + n * s_Bn, mask=mn, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + b * s_Cb + n * s_Cn, mask=mn, other=0.0).to(tl.float32)
    h = tl.exp(dt[:, None] * A) * h + (dt * x)[:, None] * Bv[None, :]
    tl.store(hp, h.to(state_ptr.dtype.element_ty), mask=mdn)
    y = tl.sum(h * Cv[None, :], axis=1)
    if HAS_D:
        y += x * tl.load(D_ptr + d, mask=md, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + b * s_zb + d * s_zd, mask=md, other=0.0).to(tl.float32)
        y = y * z * tl.sigmoid(z)
    tl.store(out_ptr + b * s_ob + d * s_od, y.to(out_ptr.dtype.element_ty), mask=md)


@triton.jit
def _conv_update_kernel(
    state_ptr,
    x_ptr,
    w_ptr,
    bias_ptr,
    out_ptr,
    DIM,
    K,
    s_sb,
    s_sd,
    s_sk,
    s_xb,
    s_xd,
    s_wd,
    s_wk,
    s_ob,
    s_od,
    HAS_BIAS: tl.constexpr,
    SILU: tl.constexpr,
    BLOCK: tl.constexpr,
    KP: tl.constexpr,
):
    b = tl.program_id(0)
    d = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    j = tl.arange(0, KP)
    md = d < DIM
    row = state_ptr + b * s_sb + d[:, None] * s_sd
    x = tl.load(x_ptr + b * s_xb + d * s_xd, mask=md, other=0.0)
    # the K conv inputs: the K-1 stored ones, then this token's (columns past K are zero)
    old = tl.load(row + j[None, :] * s_sk, mask=md[:, None] & (j[None, :] < K - 1), other=0.0)
    win = tl.where(j[None, :] == K - 1, x.to(old.dtype)[:, None], old)
    w = tl.load(w_ptr + d[:, None] * s_wd + j[None, :] * s_wk, mask=md[:, None] & (j[None, :] < K), other=0.0)
    y = tl.sum(win.to(tl.float32) * w.to(tl.float32), axis=1)
    if HAS_BIAS:
        y += tl.load(bias_ptr + d, mask=md, other=0.0).to(tl.float32)
    if SILU:
        y = y * tl.sigmoid(y)
    # shifted by one: stored column j takes input j + 1 (the last stored column this token's input)
    nxt = tl.load(row + (j[None, :] + 1) * s_sk, mask=md[:, None] & (j[None, :] + 1 < K - 1), other=0.0)
    nxt = tl.where(j[None, :] == K - 2, x.to(old.dtype)[:, None], nxt)
    tl.store(row + j[None, :] * s_sk, nxt, mask=md[:, None] & (j[None, :] < K - 1))
    tl.store(out_ptr + b * s_ob + d * s_od, y.to(out_ptr.dtype.element_ty), mask=md)


def _opt(t: Tensor | None, like: Tensor) -> Tensor:
    """Absent optional inputs travel through the custom ops as empty tensors."""
    return like.new_empty(0) if t is None else t


def _s(t: Tensor, dims: int) -> tuple[int, ...]:
    """Strides of t's first ``dims`` dims; an empty (absent) tensor gives zeros."""
    return tuple(t.stride(i) if t.numel() else 0 for i in range(dims))


@torch.library.custom_op("hymba::selective_state_update", mutates_args=("state",))
def _state_update(
    state: Tensor,
    x: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    z: Tensor,
    delta_bias: Tensor,
    softplus: bool,
    A_is_log: bool = False,
) -> Tensor:
    b, dim, N = state.shape
    out = torch.empty(b, dim, device=x.device, dtype=x.dtype)
    _state_update_kernel[(b, triton.cdiv(dim, BLOCK_D))](
        state,
        x,
        delta,
        A,
        B,
        C,
        D,
        z,
        delta_bias,
        out,
        dim,
        N,
        *_s(state, 3),
        *_s(x, 2),
        *_s(delta, 2),
        *_s(A, 2),
        *_s(B, 2),
        *_s(C, 2),
        *_s(z, 2),
        *_s(out, 2),
        HAS_D=D.numel() > 0,
        HAS_Z=z.numel() > 0,
        HAS_BIAS=delta_bias.numel() > 0,
        SOFTPLUS=softplus,
        A_IS_LOG=A_is_log,
        BLOCK=BLOCK_D,
        NP=triton.next_power_of_2(N),
        num_warps=NUM_WARPS,
    )
    return out


@_state_update.register_fake
def _(state, x, delta, A, B, C, D, z, delta_bias, softplus, A_is_log=False):
    return x.new_empty(state.shape[:2])


@torch.library.custom_op("hymba::conv_state_update", mutates_args=("conv_state",))
def _conv_update(conv_state: Tensor, x: Tensor, weight: Tensor, bias: Tensor, silu: bool) -> Tensor:
    b, dim, _ = conv_state.shape
    K = weight.shape[-1]
    out = torch.empty(b, dim, device=x.device, dtype=x.dtype)
    _conv_update_kernel[(b, triton.cdiv(dim, CONV_BLOCK_D))](
        conv_state,
        x,
        weight,
        bias,
        out,
        dim,
        K,
        *_s(conv_state, 3),
        *_s(x, 2),
        weight.stride(0),
        weight.stride(-1),
        *_s(out, 2),
        HAS_BIAS=bias.numel() > 0,
        SILU=silu,
        BLOCK=CONV_BLOCK_D,
        KP=triton.next_power_of_2(K),
        num_warps=NUM_WARPS,
    )
    return out


@_conv_update.register_fake
def _(conv_state, x, weight, bias, silu):
    return x.new_empty(conv_state.shape[:2])


def selective_state_update_triton(
    state: Tensor,
    x: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    A_is_log: bool = False,
) -> Tensor:
    """One decoding step, ``state`` [B, D, N] updated in place; args and result as
    :func:`hymba.kernels.scan.ref.selective_state_update_ref` (y [B, D] in x's dtype). With ``A_is_log``, A holds
    Mamba's A_log and the kernel uses -exp(A_log) in fp32 (no per-step kernels for it)."""
    return _state_update(
        state, x, delta, A, B, C, _opt(D, A), _opt(z, x), _opt(delta_bias, A), delta_softplus, A_is_log
    )


def causal_conv1d_update_triton(
    conv_state: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None = None, silu: bool = True
) -> Tensor:
    """One decoding token of a depthwise causal conv, ``conv_state`` [B, D, K-1] shifted in place; args and
    result as :func:`hymba.kernels.scan.ref.causal_conv1d_update_ref`."""
    if conv_state.shape[-1] != weight.shape[-1] - 1:
        raise ValueError(f"conv state holds {conv_state.shape[-1]} inputs; a width-{weight.shape[-1]} conv needs K-1")
    return _conv_update(conv_state, x, weight, _opt(bias, x), silu)


__all__ = ["selective_state_update_triton", "causal_conv1d_update_triton"]
