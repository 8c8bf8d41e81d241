"""RMSNorm for decoding in Triton: one kernel per norm site of a decode step, where PyTorch runs four (the fp32
casts of input and weight, the norm, the cast back) and more for the glue around it.

- :func:`rms_norm_triton`: rows of x, optionally after adding a residual (the sum is returned too);
- :func:`rms_norm_mean_triton`: (norm(a) + norm(b)) / 2, the mean fusion of the two branches (paper Eq. 3);
- :func:`rms_norm_split_triton`: the three parts of one row (Mamba-1's dt, B and C) normalised each with its
  own weight, written side by side into one tensor;
- :func:`silu_mul_triton`: SwiGLU's SiLU(gate) x up, one kernel where PyTorch runs two (not a norm, but the
  same kind of no-grad glue around the FFN's matmuls).

Semantics are those of :mod:`hymba.kernels.norm.ref`, rounding included: normalised and scaled in fp32, each
result rounded to the input dtype where PyTorch rounds it. Inputs are [R, W] with any row stride (unit
column stride). ``torch.library`` custom ops with fake implementations: they trace under ``torch.compile`` and
replay from a CUDA graph. Under ``TRITON_INTERPRET=1`` they run on CPU tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _normed(x, w, mask, W, eps):
    """fp32 RMSNorm of one row (x, w fp32; masked lanes are zero)."""
    ms = tl.sum(x * x, axis=0) / W
    return tl.where(mask, x * tl.rsqrt(ms + eps) * w, 0.0)


@triton.jit
def _rms_kernel(
    x_ptr,
    r_ptr,
    w_ptr,
    x2_ptr,
    w2_ptr,
    out_ptr,
    sum_ptr,
    W,
    eps,
    s_x,
    s_r,
    s_x2,
    s_o,
    s_s,
    HAS_RES: tl.constexpr,
    MEAN2: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    c = tl.arange(0, BLOCK)
    m = c < W
    dt = out_ptr.dtype.element_ty
    x = tl.load(x_ptr + row * s_x + c, mask=m, other=0.0).to(tl.float32)
    if HAS_RES:
        # added in fp32 and rounded once to the dtype: PyTorch's x + residual in that dtype
        x = (x + tl.load(r_ptr + row * s_r + c, mask=m, other=0.0).to(tl.float32)).to(dt)
        tl.store(sum_ptr + row * s_s + c, x, mask=m)
        x = x.to(tl.float32)
    y = _normed(x, tl.load(w_ptr + c, mask=m, other=0.0).to(tl.float32), m, W, eps)
    if MEAN2:
        x2 = tl.load(x2_ptr + row * s_x2 + c, mask=m, other=0.0).to(tl.float32)
        y2 = _normed(x2, tl.load(w2_ptr + c, mask=m, other=0.0).to(tl.float32), m, W, eps)
        # each norm rounded, their sum rounded, then halved: the dtype's arithmetic of (na + nb) / 2
        y = (y.to(dt).to(tl.float32) + y2.to(dt).to(tl.float32)).to(dt).to(tl.float32) * 0.5
    tl.store(out_ptr + row * s_o + c, y.to(dt), mask=m)


@triton.jit
def _split_kernel(x_ptr, w0_ptr, w1_ptr, w2_ptr, out_ptr, W0, P0, W1, W2, eps, s_x, s_o, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    part = tl.program_id(1)
    c = tl.arange(0, BLOCK)
    # the part's columns and weight, chosen without branches (each weight load is masked off for other parts)
    lo = tl.where(part == 0, 0, tl.where(part == 1, W0, W0 + W1))
    width = tl.where(part == 0, W0, tl.where(part == 1, W1, W2))
    m = c < width
    x = tl.load(x_ptr + row * s_x + lo + c, mask=m, other=0.0).to(tl.float32)
    pv = part + 0 * c  # the part as a vector: masks are vectors
    w = tl.load(w0_ptr + c, mask=m & (pv == 0), other=0.0).to(tl.float32)
    w += tl.load(w1_ptr + c, mask=m & (pv == 1), other=0.0).to(tl.float32)
    w += tl.load(w2_ptr + c, mask=m & (pv == 2), other=0.0).to(tl.float32)
    y = _normed(x, w, m, width, eps)
    # in the output the first part takes P0 >= W0 columns, zeros after its W0
    o_lo = tl.where(part == 0, 0, lo + P0 - W0)
    tl.store(out_ptr + row * s_o + o_lo + c, y.to(out_ptr.dtype.element_ty), mask=c < tl.where(part == 0, P0, width))


@triton.jit
def _silu_mul_kernel(g_ptr, u_ptr, out_ptr, W, s_g, s_u, s_o, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = c < W
    dt = out_ptr.dtype.element_ty
    g = tl.load(g_ptr + row * s_g + c, mask=m, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + row * s_u + c, mask=m, other=0.0).to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(dt).to(tl.float32)  # F.silu, rounded to the dtype
    tl.store(out_ptr + row * s_o + c, (act * u).to(dt), mask=m)


def _warps(block: int) -> int:
    return 4 if block <= 1024 else 8


def _rows(t: Tensor) -> Tensor:
    """[..., W] as [R, W] (a view where the leading dims fold, else a copy) with unit column stride."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()


def _launch(x, residual, weight, x2, w2, eps) -> tuple[Tensor, Tensor]:
    shape = x.shape
    x = _rows(x)
    R, W = x.shape
    out = torch.empty(R, W, device=x.device, dtype=x.dtype)
    res = _rows(residual) if residual.numel() else x
    total = torch.empty_like(out) if residual.numel() else out
    x2 = _rows(x2) if x2.numel() else x
    block = triton.next_power_of_2(W)
    _rms_kernel[(R,)](
        x,
        res,
        weight,
        x2,
        w2 if w2.numel() else weight,
        out,
        total,
        W,
        eps,
        x.stride(0),
        res.stride(0),
        x2.stride(0),
        out.stride(0),
        total.stride(0),
        HAS_RES=residual.numel() > 0,
        MEAN2=w2.numel() > 0,
        BLOCK=block,
        num_warps=_warps(block),
    )
    return out.view(shape), total.view(shape)


@torch.library.custom_op("hymba::rms_norm", mutates_args=())
def _rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    return _launch(x, x.new_empty(0), weight, x.new_empty(0), weight.new_empty(0), eps)[0]


@_rms_norm.register_fake
def _(x, weight, eps):
    return torch.empty_like(x)


@torch.library.custom_op("hymba::add_rms_norm", mutates_args=())
def _add_rms_norm(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    return _launch(x, residual, weight, x.new_empty(0), weight.new_empty(0), eps)


@_add_rms_norm.register_fake
def _(x, residual, weight, eps):
    return torch.empty_like(x), torch.empty_like(x)


@torch.library.custom_op("hymba::rms_norm_mean", mutates_args=())
def _rms_norm_mean(a: Tensor, wa: Tensor, b: Tensor, wb: Tensor, eps: float) -> Tensor:
    return _launch(a, a.new_empty(0), wa, b, wb, eps)[0]


@_rms_norm_mean.register_fake
def _(a, wa, b, wb, eps):
    return torch.empty_like(a)


@torch.library.custom_op("hymba::rms_norm_split3", mutates_args=())
def _rms_norm_split3(x: Tensor, w0: Tensor, w1: Tensor, w2: Tensor, eps: float, first_width: int) -> Tensor:
    shape = x.shape
    x = _rows(x)
    R = x.shape[0]
    W0, W1, W2 = w0.shape[0], w1.shape[0], w2.shape[0]
    out = torch.empty(R, first_width + W1 + W2, device=x.device, dtype=x.dtype)
    block = triton.next_power_of_2(max(first_width, W1, W2))
    _split_kernel[(R, 3)](
        x, w0, w1, w2, out, W0, first_width, W1, W2, eps, x.stride(0), out.stride(0), BLOCK=block,
        num_warps=_warps(block),
    )  # fmt: skip
    return out.view(*shape[:-1], first_width + W1 + W2)


@_rms_norm_split3.register_fake
def _(x, w0, w1, w2, eps, first_width):
    return x.new_empty(*x.shape[:-1], first_width + w1.shape[0] + w2.shape[0])


@torch.library.custom_op("hymba::silu_mul", mutates_args=())
def _silu_mul(g: Tensor, u: Tensor) -> Tensor:
    shape = g.shape
    g, u = _rows(g), _rows(u)
    R, W = g.shape
    out = torch.empty(R, W, device=g.device, dtype=g.dtype)
    block = min(1024, triton.next_power_of_2(W))
    _silu_mul_kernel[(R, triton.cdiv(W, block))](g, u, out, W, g.stride(0), u.stride(0), out.stride(0), BLOCK=block)
    return out.view(shape)


@_silu_mul.register_fake
def _(g, u):
    return torch.empty_like(g, memory_format=torch.contiguous_format)


def silu_mul_triton(g: Tensor, u: Tensor) -> Tensor:
    """As :func:`~hymba.kernels.norm.ref.silu_mul_ref`."""
    if g.shape != u.shape or g.dtype != u.dtype:
        raise ValueError(f"silu_mul: g {tuple(g.shape)} {g.dtype} and u {tuple(u.shape)} {u.dtype} differ")
    return _silu_mul(g, u)


def rms_norm_triton(x: Tensor, weight: Tensor, eps: float, residual: Tensor | None = None):
    """As :func:`~hymba.kernels.norm.ref.rms_norm_ref`, or with ``residual`` as ``add_rms_norm_ref``."""
    if residual is None:
        return _rms_norm(x, weight, eps)
    return _add_rms_norm(x, residual, weight, eps)


def rms_norm_mean_triton(a: Tensor, wa: Tensor, b: Tensor, wb: Tensor, eps: float) -> Tensor:
    """As :func:`~hymba.kernels.norm.ref.rms_norm_mean_ref`."""
    if a.shape != b.shape:
        raise ValueError(f"rms_norm_mean: a {tuple(a.shape)} and b {tuple(b.shape)} differ in shape")
    return _rms_norm_mean(a, wa, b, wb, eps)


def rms_norm_split_triton(
    x: Tensor, weights: tuple[Tensor, ...], eps: float, first_width: int | None = None
) -> tuple[Tensor, ...]:
    """As :func:`~hymba.kernels.norm.ref.rms_norm_split_ref` for three parts: views of one output (the first
    part ``first_width`` wide, zero-padded, so that a GEMM reading it can take a K that is a multiple of 8)."""
    widths = [w.shape[0] for w in weights]
    if len(weights) != 3 or sum(widths) > x.shape[-1]:
        raise ValueError(f"rms_norm_split: three weights whose widths sum to at most {x.shape[-1]} expected")
    first = widths[0] if first_width is None else first_width
    if first < widths[0]:
        raise ValueError(f"rms_norm_split: first_width={first_width} is narrower than the first part ({widths[0]})")
    out = _rms_norm_split3(x, *weights, eps, first)
    return tuple(out.split([first, *widths[1:]], dim=-1))


__all__ = ["rms_norm_triton", "rms_norm_mean_triton", "rms_norm_split_triton", "silu_mul_triton"]
