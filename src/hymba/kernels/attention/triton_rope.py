"""Rotary embedding of queries and keys in one Triton kernel (PyTorch's rotate-half takes five kernels per
tensor: two products, a negation, a concatenation and a sum): one decoding token per row, or a whole prompt in
a forward without autograd (prefill, evaluation).

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
def _rope_kernel(
    q_ptr,
    k_ptr,
    cos_ptr,
    sin_ptr,
    qo_ptr,
    ko_ptr,
    BT,
    T,
    H,
    HK,
    HALF,
    s_qb,
    s_qt,
    s_qh,
    s_kb,
    s_kt,
    s_kh,
    s_cb,
    s_ct,
    s_sb,
    s_st,
    TOKENS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One program per (block of TOKENS (row, token) pairs, head): [TOKENS, HALF] tiles of each half of the head."""
    bt = tl.program_id(0) * TOKENS + tl.arange(0, TOKENS)  # (row, token) pairs, row-major
    h = tl.program_id(1)  # query heads 0..H-1, then the key heads
    c = tl.arange(0, BLOCK)[None, :]  # channels of the first half; the second half's are c + HALF
    b = bt // T
    t = bt % T
    m = (bt < BT)[:, None] & (c < HALF)
    # a query head or a key head, chosen by masks rather than branches
    hv = h + 0 * bt[:, None]  # the head as a tensor: masks are tensors
    mq = m & (hv < H)
    mk = m & (hv >= H)
    hq = tl.minimum(h, H - 1)
    hk = tl.maximum(h - H, 0)
    qs = q_ptr + (b * s_qb + t * s_qt + hq * s_qh)[:, None] + c
    ks = k_ptr + (b * s_kb + t * s_kt + hk * s_kh)[:, None] + c
    x1 = tl.load(qs, mask=mq, other=0.0).to(tl.float32) + tl.load(ks, mask=mk, other=0.0).to(tl.float32)
    x2 = tl.load(qs + HALF, mask=mq, other=0.0).to(tl.float32)
    x2 += tl.load(ks + HALF, mask=mk, other=0.0).to(tl.float32)
    cs = cos_ptr + (b * s_cb + t * s_ct)[:, None] + c
    ss = sin_ptr + (b * s_sb + t * s_st)[:, None] + c
    cos1 = tl.load(cs, mask=m, other=0.0).to(tl.float32)
    cos2 = tl.load(cs + HALF, mask=m, other=0.0).to(tl.float32)
    sin1 = tl.load(ss, mask=m, other=0.0).to(tl.float32)
    sin2 = tl.load(ss + HALF, mask=m, other=0.0).to(tl.float32)
    dt = qo_ptr.dtype.element_ty
    # x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1); each product rounded, then the sum
    y1 = ((x1 * cos1).to(dt).to(tl.float32) + (-x2 * sin1).to(dt).to(tl.float32)).to(dt)
    y2 = ((x2 * cos2).to(dt).to(tl.float32) + (x1 * sin2).to(dt).to(tl.float32)).to(dt)
    qo = qo_ptr + ((bt * H + hq) * 2 * HALF)[:, None] + c  # [B, T, H, D] memory
    ko = ko_ptr + ((bt * HK + hk) * 2 * HALF)[:, None] + c
    tl.store(qo, y1, mask=mq)
    tl.store(qo + HALF, y2, mask=mq)
    tl.store(ko, y1, mask=mk)
    tl.store(ko + HALF, y2, mask=mk)


TOKENS = 32  # (row, token) pairs per program


def _bt_strides(t: Tensor) -> tuple[int, int]:
    """Strides (row, token) of a [B or 1, 1, T, D] cos/sin table; a broadcast row or token has stride 0."""
    return (0 if t.shape[0] == 1 else t.stride(0)), (0 if t.shape[2] == 1 else t.stride(2))


@torch.library.custom_op("hymba::rotary_qk", mutates_args=())
def _rotary_qk(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    B, H, T, D = q.shape
    Hk = k.shape[1] if k.numel() else 0
    if q.stride(3) != 1:
        q = q.contiguous()
    if Hk and k.stride(3) != 1:
        k = k.contiguous()
    cos = cos if cos.stride(3) == 1 else cos.contiguous()
    sin = sin if sin.stride(3) == 1 else sin.contiguous()
    qo = torch.empty(B, T, H, D, device=q.device, dtype=q.dtype)
    ko = torch.empty(B, T, Hk, D, device=q.device, dtype=q.dtype)
    kk = k if Hk else q
    _rope_kernel[(triton.cdiv(B * T, TOKENS), H + Hk)](
        q, kk, cos, sin, qo, ko, B * T, T, H, Hk, D // 2,
        q.stride(0), q.stride(2), q.stride(1), kk.stride(0), kk.stride(2), kk.stride(1),
        *_bt_strides(cos), *_bt_strides(sin),
        TOKENS=TOKENS, BLOCK=triton.next_power_of_2(D // 2),
    )  # fmt: skip
    return qo.transpose(1, 2), ko.transpose(1, 2)


@_rotary_qk.register_fake
def _(q, k, cos, sin):
    B, H, T, D = q.shape
    Hk = k.shape[1] if k.numel() else 0
    return q.new_empty(B, T, H, D).transpose(1, 2), q.new_empty(B, T, Hk, D).transpose(1, 2)


def rotary_qk_triton(q: Tensor, k: Tensor | None, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor | None]:
    """q [B, H, T, D] and k [B, Hkv, T, D] (or None) rotated by cos, sin [B or 1, 1, T, D]. Returns q and k
    in [B, T, H, D] memory seen as [B, H, T, D] (the layout PyTorch's ops give views of the input projection)."""
    B, _, T, D = q.shape
    if D % 2:
        raise ValueError(f"rotary_qk: head dim {D} is odd (rotate-half needs two equal halves)")
    if cos.shape[0] not in (1, B) or cos.shape[2] not in (1, T) or cos.shape[3] != D or sin.shape != cos.shape:
        raise ValueError(f"rotary_qk: cos/sin {tuple(cos.shape)} do not broadcast to q {tuple(q.shape)}")
    qo, ko = _rotary_qk(q, q.new_empty(0) if k is None else k, cos, sin)
    return qo, (None if k is None else ko)


__all__ = ["rotary_qk_triton"]
