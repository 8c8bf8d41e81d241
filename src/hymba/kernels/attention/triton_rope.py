"""Rotary embedding of one decoding token's queries and keys in one Triton kernel (PyTorch's rotate-half takes
five kernels per tensor: two products, a negation, a concatenation and a sum).

Semantics of :func:`hymba.kernels.attention.ref.rotary_ref` (Llama's rotate-half layout), rounding included:
x * cos and rotate_half(x) * sin each rounded to the input dtype, then their sum. A ``torch.library`` custom
op with a fake implementation (traces under ``torch.compile``, replays from a CUDA graph); runs on CPU tensors
under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _rope_kernel(q_ptr, k_ptr, cos_ptr, sin_ptr, qo_ptr, ko_ptr, H, HK, D, s_qb, s_kb, s_cb, s_sb, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)  # query heads 0..H-1, then the key heads
    c = tl.arange(0, BLOCK)
    half = D // 2
    partner = tl.where(c < half, c + half, c - half)
    # a query head or a key head, chosen by masks rather than branches
    hv = h + 0 * c  # the head as a vector: masks are vectors
    mq = (c < D) & (hv < H)
    mk = (c < D) & (hv >= H)
    hq = tl.minimum(h, H - 1)
    hk = tl.maximum(h - H, 0)
    qs = q_ptr + b * s_qb + hq * D
    ks = k_ptr + b * s_kb + hk * D
    x = tl.load(qs + c, mask=mq, other=0.0).to(tl.float32) + tl.load(ks + c, mask=mk, other=0.0).to(tl.float32)
    xp = tl.load(qs + partner, mask=mq, other=0.0).to(tl.float32)
    xp += tl.load(ks + partner, mask=mk, other=0.0).to(tl.float32)
    rot = tl.where(c < half, -xp, xp)
    m = c < D
    cos = tl.load(cos_ptr + b * s_cb + c, mask=m, other=0.0).to(tl.float32)
    sin = tl.load(sin_ptr + b * s_sb + c, mask=m, other=0.0).to(tl.float32)
    dt = qo_ptr.dtype.element_ty
    y = ((x * cos).to(dt).to(tl.float32) + (rot * sin).to(dt).to(tl.float32)).to(dt)
    tl.store(qo_ptr + (b * H + hq) * D + c, y, mask=mq)
    tl.store(ko_ptr + (b * HK + hk) * D + c, y, mask=mk)


def _row(t: Tensor, D: int) -> Tensor:
    """[B, ..., D] with each row's heads contiguous -> [B, n * D] (a view when strides allow, else a copy)."""
    t = t.reshape(t.shape[0], -1)
    return t if t.stride(-1) == 1 else t.contiguous()


@torch.library.custom_op("hymba::rotary_qk", mutates_args=())
def _rotary_qk(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    B, H, _, D = q.shape
    Hk = k.shape[1] if k.numel() else 0
    qo = torch.empty(B, H, 1, D, device=q.device, dtype=q.dtype)
    ko = torch.empty(B, Hk, 1, D, device=q.device, dtype=q.dtype)
    qr = _row(q, D)
    kr = _row(k, D) if Hk else qr
    cr, sr = _row(cos, D), _row(sin, D)
    _rope_kernel[(B, H + Hk)](
        qr, kr, cr, sr, qo, ko, H, Hk, D, qr.stride(0), kr.stride(0), cr.stride(0), sr.stride(0),
        BLOCK=triton.next_power_of_2(D),
    )  # fmt: skip
    return qo, ko


@_rotary_qk.register_fake
def _(q, k, cos, sin):
    return torch.empty_like(q), q.new_empty(q.shape[0], k.shape[1] if k.numel() else 0, 1, q.shape[3])


def rotary_qk_triton(q: Tensor, k: Tensor | None, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor | None]:
    """One token's q [B, H, 1, D] and k [B, Hkv, 1, D] (or None) rotated by cos, sin [B, 1, 1, D]; each head's
    D values contiguous (the views of the input projection are). Returns contiguous q and k."""
    if q.shape[2] != 1 or cos.shape[0] != q.shape[0]:
        raise ValueError(f"rotary_qk takes one token per row: q {tuple(q.shape)}, cos {tuple(cos.shape)}")
    qo, ko = _rotary_qk(q, q.new_empty(0) if k is None else k, cos, sin)
    return qo, (None if k is None else ko)


__all__ = ["rotary_qk_triton"]
