"""Mamba-1's depthwise causal conv over a whole sequence in Triton, forward and backward.

:func:`causal_conv1d_triton` reads x [B, S, D] in the model's layout (a slice of the block's input
projection: any batch and time strides, unit channel stride) and writes u [B, S, D] contiguous, which x_proj
reads as it is and the scan reads through a transposed view: PyTorch's conv1d needs [B, D, S] and so costs a
transposing copy of x, and another of its output, per layer. Bias, SiLU and the left-padding mask (padding
enters neither the conv nor its output) are fused; the sum is in fp32, rounded once to x's dtype. Semantics
are those of :func:`hymba.kernels.scan.ref.causal_conv1d_ref`, up to that rounding (the reference rounds the
conv output before SiLU in x's dtype).

Backward (``hymba::causal_conv1d_bwd``): one kernel recomputes the conv output per tile, forms the gradient
before SiLU (fp32, [B, S, D]) and the tile's partial sums for the weight and bias gradients (summed on the
host in a fixed order: deterministic, no atomics); a second kernel gives dx, the conv of that gradient with
the taps reversed. Both are ``torch.library`` custom ops with fake implementations, so they trace under
``torch.compile``. Under ``TRITON_INTERPRET=1`` they run on CPU tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK_T = 32  # time steps per program
BLOCK_D = 128  # channels per program (contiguous in memory: coalesced loads and stores)
NUM_WARPS = 4


@triton.jit
def _tap(x_ptr, valid_ptr, b, t, d, dm, S, s_xb, s_xt, s_vb, s_vt, k, K: tl.constexpr, HAS_VALID: tl.constexpr):
    """The inputs [BT, BD] tap ``k`` reads for outputs t: x[t - (K - 1) + k], fp32, zero before position 0,
    past S and (``HAS_VALID``) at padding."""
    tk = t - (K - 1) + k
    m = (tk >= 0) & (tk < S)
    xv = tl.load(x_ptr + b * s_xb + tk[:, None] * s_xt + d[None, :], mask=m[:, None] & dm[None, :], other=0.0)
    xv = xv.to(tl.float32)
    if HAS_VALID:
        keep = tl.load(valid_ptr + b * s_vb + tk * s_vt, mask=m, other=0)
        xv = tl.where(keep[:, None] != 0, xv, 0.0)
    return xv


@triton.jit
def _conv_fwd_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    valid_ptr,
    out_ptr,
    S,
    DIM,
    s_xb,
    s_xt,
    s_wd,
    s_wk,
    s_vb,
    s_vt,
    s_ob,
    s_ot,
    K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_VALID: tl.constexpr,
    SILU: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
):
    pt, pd, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t = pt * BT + tl.arange(0, BT)
    d = pd * BD + tl.arange(0, BD)
    dm = d < DIM
    acc = tl.zeros((BT, BD), dtype=tl.float32)
    for k in tl.static_range(K):
        xv = _tap(x_ptr, valid_ptr, b, t, d, dm, S, s_xb, s_xt, s_vb, s_vt, k, K, HAS_VALID)
        w = tl.load(w_ptr + d * s_wd + k * s_wk, mask=dm, other=0.0).to(tl.float32)
        acc += xv * w[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + d, mask=dm, other=0.0).to(tl.float32)[None, :]
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tm = t < S
    if HAS_VALID:
        keep = tl.load(valid_ptr + b * s_vb + t * s_vt, mask=tm, other=0)
        acc = tl.where(keep[:, None] != 0, acc, 0.0)
    tl.store(
        out_ptr + b * s_ob + t[:, None] * s_ot + d[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=tm[:, None] & dm[None, :],
    )


@triton.jit
def _conv_bwd_grad_kernel(
    dout_ptr,
    x_ptr,
    w_ptr,
    bias_ptr,
    valid_ptr,
    g_ptr,
    dw_ptr,
    db_ptr,
    S,
    DIM,
    s_gb,
    s_gt,
    s_xb,
    s_xt,
    s_wd,
    s_wk,
    s_vb,
    s_vt,
    s_pb,
    s_pt,
    K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_VALID: tl.constexpr,
    SILU: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
):
    """g = d(out)/d(pre-activation) for one tile (stored fp32, contiguous [B, S, D]), and the tile's partial
    weight and bias gradients: dw[d, k] = sum_t g[t, d] x[t - K + 1 + k, d], db[d] = sum_t g[t, d]."""
    pt, pd, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t = pt * BT + tl.arange(0, BT)
    d = pd * BD + tl.arange(0, BD)
    dm = d < DIM
    tm = t < S
    pre = tl.zeros((BT, BD), dtype=tl.float32)
    for k in tl.static_range(K):
        tk = t - (K - 1) + k
        m = (tk >= 0) & (tk < S)
        xv = tl.load(x_ptr + b * s_xb + tk[:, None] * s_xt + d[None, :], mask=m[:, None] & dm[None, :], other=0.0).to(
            tl.float32
        )
        if HAS_VALID:
            keep = tl.load(valid_ptr + b * s_vb + tk * s_vt, mask=m, other=0)
            xv = tl.where(keep[:, None] != 0, xv, 0.0)
        pre += xv * tl.load(w_ptr + d * s_wd + k * s_wk, mask=dm, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        pre += tl.load(bias_ptr + d, mask=dm, other=0.0).to(tl.float32)[None, :]
    tile = tm[:, None] & dm[None, :]
    g = tl.load(dout_ptr + b * s_gb + t[:, None] * s_gt + d[None, :], mask=tile, other=0.0).to(tl.float32)
    if SILU:
        sig = tl.sigmoid(pre)
        g = g * sig * (1.0 + pre * (1.0 - sig))
    if HAS_VALID:
        keep = tl.load(valid_ptr + b * s_vb + t * s_vt, mask=tm, other=0)
        g = tl.where(keep[:, None] != 0, g, 0.0)  # padding's output is a constant zero
    g = tl.where(tile, g, 0.0)
    tl.store(g_ptr + (b * S + t[:, None]) * DIM + d[None, :], g, mask=tile)
    part = b * s_pb + pt * s_pt
    tl.store(db_ptr + part + d, tl.sum(g, axis=0), mask=dm)
    for k in tl.static_range(K):
        xv = _tap(x_ptr, valid_ptr, b, t, d, dm, S, s_xb, s_xt, s_vb, s_vt, k, K, HAS_VALID)
        tl.store(dw_ptr + (part + d) * K + k, tl.sum(g * xv, axis=0), mask=dm)


@triton.jit
def _conv_bwd_dx_kernel(
    g_ptr,
    w_ptr,
    valid_ptr,
    dx_ptr,
    S,
    DIM,
    s_wd,
    s_wk,
    s_vb,
    s_vt,
    K: tl.constexpr,
    HAS_VALID: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
):
    """dx[t, d] = sum_k w[d, k] g[t + K - 1 - k, d]: the conv transposed (zero at padding, masked in forward)."""
    pt, pd, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t = pt * BT + tl.arange(0, BT)
    d = pd * BD + tl.arange(0, BD)
    dm = d < DIM
    tm = t < S
    acc = tl.zeros((BT, BD), dtype=tl.float32)
    for k in tl.static_range(K):
        tk = t + (K - 1) - k
        m = tk < S
        gv = tl.load(g_ptr + (b * S + tk[:, None]) * DIM + d[None, :], mask=m[:, None] & dm[None, :], other=0.0)
        acc += gv * tl.load(w_ptr + d * s_wd + k * s_wk, mask=dm, other=0.0).to(tl.float32)[None, :]
    if HAS_VALID:
        keep = tl.load(valid_ptr + b * s_vb + t * s_vt, mask=tm, other=0)
        acc = tl.where(keep[:, None] != 0, acc, 0.0)
    tl.store(
        dx_ptr + (b * S + t[:, None]) * DIM + d[None, :],
        acc.to(dx_ptr.dtype.element_ty),
        mask=tm[:, None] & dm[None, :],
    )


@torch.library.custom_op("hymba::causal_conv1d_fwd", mutates_args=())
def _conv_fwd(x: Tensor, weight: Tensor, bias: Tensor, valid: Tensor, silu: bool) -> Tensor:
    b, S, dim = x.shape
    if x.stride(2) != 1:
        x = x.contiguous()
    w = weight.reshape(dim, -1)  # nn.Conv1d's [D, 1, K] as [D, K]
    out = torch.empty(b, S, dim, device=x.device, dtype=x.dtype)
    has_valid = valid.numel() > 0
    v = valid if has_valid else x.new_empty(1, 1, dtype=torch.uint8)
    grid = (triton.cdiv(S, BLOCK_T), triton.cdiv(dim, BLOCK_D), b)
    _conv_fwd_kernel[grid](
        x,
        w,
        bias if bias.numel() else w,
        v,
        out,
        S,
        dim,
        x.stride(0),
        x.stride(1),
        w.stride(0),
        w.stride(1),
        v.stride(0),
        v.stride(1),
        out.stride(0),
        out.stride(1),
        K=w.shape[1],
        HAS_BIAS=bias.numel() > 0,
        HAS_VALID=has_valid,
        SILU=silu,
        BT=BLOCK_T,
        BD=BLOCK_D,
        num_warps=NUM_WARPS,
    )
    return out


@_conv_fwd.register_fake
def _(x, weight, bias, valid, silu):
    return x.new_empty(x.shape)


@torch.library.custom_op("hymba::causal_conv1d_bwd", mutates_args=())
def _conv_bwd(
    dout: Tensor, x: Tensor, weight: Tensor, bias: Tensor, valid: Tensor, silu: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """-> dx [B, S, D] (x's dtype, contiguous), dweight (weight's shape), dbias [D] (empty without a bias); the
    weight and bias gradients in fp32."""
    b, S, dim = x.shape
    if x.stride(2) != 1:
        x = x.contiguous()
    if dout.stride(2) != 1:
        dout = dout.contiguous()
    w = weight.reshape(dim, -1)
    K = w.shape[1]
    n_t = triton.cdiv(S, BLOCK_T)
    f32 = dict(device=x.device, dtype=torch.float32)
    g = torch.empty(b, S, dim, **f32)
    dw_part = torch.empty(b, n_t, dim, K, **f32)
    db_part = torch.empty(b, n_t, dim, **f32)
    has_valid = valid.numel() > 0
    v = valid if has_valid else x.new_empty(1, 1, dtype=torch.uint8)
    grid = (n_t, triton.cdiv(dim, BLOCK_D), b)
    _conv_bwd_grad_kernel[grid](
        dout,
        x,
        w,
        bias if bias.numel() else w,
        v,
        g,
        dw_part,
        db_part,
        S,
        dim,
        dout.stride(0),
        dout.stride(1),
        x.stride(0),
        x.stride(1),
        w.stride(0),
        w.stride(1),
        v.stride(0),
        v.stride(1),
        db_part.stride(0),
        db_part.stride(1),
        K=K,
        HAS_BIAS=bias.numel() > 0,
        HAS_VALID=has_valid,
        SILU=silu,
        BT=BLOCK_T,
        BD=BLOCK_D,
        num_warps=NUM_WARPS,
    )
    dx = torch.empty(b, S, dim, device=x.device, dtype=x.dtype)
    _conv_bwd_dx_kernel[grid](
        g,
        w,
        v,
        dx,
        S,
        dim,
        w.stride(0),
        w.stride(1),
        v.stride(0),
        v.stride(1),
        K=K,
        HAS_VALID=has_valid,
        BT=BLOCK_T,
        BD=BLOCK_D,
        num_warps=NUM_WARPS,
    )
    dw = dw_part.sum((0, 1)).reshape(weight.shape)
    db = db_part.sum((0, 1)) if bias.numel() else bias.new_empty(0, dtype=torch.float32)
    return dx, dw, db


@_conv_bwd.register_fake
def _(dout, x, weight, bias, valid, silu):
    f32 = torch.float32
    return x.new_empty(x.shape), weight.new_empty(weight.shape, dtype=f32), bias.new_empty(bias.shape, dtype=f32)


def _setup(ctx, inputs, output):
    x, weight, bias, valid, silu = inputs
    ctx.save_for_backward(x, weight, bias, valid)
    ctx.silu = silu


def _backward(ctx, dout):
    x, weight, bias, valid = ctx.saved_tensors
    dx, dw, db = _conv_bwd(dout, x, weight, bias, valid, ctx.silu)
    return dx, dw.to(weight.dtype), db.to(bias.dtype) if bias.numel() else None, None, None


_conv_fwd.register_autograd(_backward, setup_context=_setup)


def causal_conv1d_triton(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, valid: Tensor | None = None, silu: bool = True
) -> Tensor:
    """x [B, S, D] -> u [B, S, D] contiguous; args as :func:`hymba.kernels.scan.ref.causal_conv1d_ref`."""
    if x.ndim != 3 or weight.shape[0] != x.shape[2]:
        raise ValueError(
            f"causal_conv1d: x [B, S, D] and weight [D, (1,) K] expected, got {tuple(x.shape)} and "
            f"{tuple(weight.shape)}"
        )
    v = valid.to(torch.uint8) if valid is not None else x.new_empty(0, dtype=torch.uint8)
    return _conv_fwd(x, weight, bias if bias is not None else x.new_empty(0), v, silu)


__all__ = ["causal_conv1d_triton"]
