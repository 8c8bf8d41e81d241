"""Decode attention in Triton: one query per row over a cache, grouped heads read their K/V once, split over
the keys (flash-decoding) so that a long global cache at a small batch still fills the GPU.

Semantics are those of :func:`hymba.kernels.attention.ref.attention_sdpa` for Tq = 1: the mask is worked out
per key from the :class:`~hymba.kernels.attention.ref.MaskSpec` (position, validity, meta flag, window), so
the ring buffer's out-of-order slots, pinned meta slots and empty slots need no dense mask.

- Program (row b, KV head, split): the G = H / Hkv query heads of that KV head as the rows of one tile
  [max(16, G), Dk] (``tl.dot`` wants 16 rows; the pad rows are masked), K/V blocks of ``BLOCK_N`` slots
  streamed once, online softmax in fp32; the partial (max, sum, unnormalised output) of each split go to a
  small fp32 buffer, and a second kernel combines the splits into the output in q's dtype. With one split the
  split kernel writes the output itself.
- Head dims need not be powers of two (padded and masked); Dk and Dv may differ (Hymba: 64 and 128).
- fp32 inputs take IEEE fp32 dots (no TF32), so fp32 decoding stays exact against the reference. (So do
  bf16 inputs under the interpreter, whose bf16 ``tl.dot`` returns garbage, seen with Triton 3.x.)

A ``torch.library`` custom op (``hymba::decode_attention``) with a fake implementation: it traces under
``torch.compile`` and replays from a CUDA graph (the split count depends on shapes only).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

# Split-kernel settings for caches longer than SHORT_SLOTS (global layers): key slots per inner step, warps,
# software-pipeline depth (None: Triton's default). Measured on an H200 (benchmarks/decode_kernels.py --sweep,
# Hymba-1.5B at batch 128): a global cache of 8,384 slots reads at the copy bandwidth with these.
BLOCK_N = 64
NUM_WARPS = 4
NUM_STAGES: int | None = None
# ... and for caches of at most SHORT_SLOTS (sliding-window rings): at batch 128 one split per (row, KV head),
# written directly (no combine), reads a ring of 1,152 slots in 73 us, 91% of the copy bandwidth, against
# 96 us with the long-cache settings (one sweep of 54 settings; the next best was 90 us)
SHORT_SLOTS = 4096
SHORT_BLOCK_N = 64
SHORT_NUM_WARPS = 2
SHORT_NUM_STAGES: int | None = 2
PROGRAMS_PER_SM = 16  # split programs the key splits aim for per SM (long caches; SHORT_: short ones)
SHORT_PROGRAMS_PER_SM = 4
_SM_COUNT: dict[int, int] = {}
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _split_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    qpos_ptr,
    kpos_ptr,
    meta_ptr,
    valid_ptr,
    m_ptr,
    l_ptr,
    o_ptr,
    out_ptr,
    S,
    G,
    HKV,
    DK,
    DV,
    n_splits,
    per_split,
    window,
    scale,
    s_qb,
    s_qh,
    s_qd,
    s_kb,
    s_kh,
    s_ks,
    s_kd,
    s_vb,
    s_vh,
    s_vs,
    s_vd,
    s_qpb,
    s_kpb,
    s_kps,
    s_mb,
    s_ms,
    s_valb,
    s_vals,
    s_ob,
    s_oh,
    s_od,
    HAS_VALID: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    IEEE: tl.constexpr,
    GP: tl.constexpr,
    DKP: tl.constexpr,
    DVP: tl.constexpr,
    BLOCK: tl.constexpr,
    DIRECT: tl.constexpr,
):
    bh = tl.program_id(0)
    sp = tl.program_id(1)
    b = bh // HKV
    hk = bh % HKV
    g = tl.arange(0, GP)
    dk = tl.arange(0, DKP)
    dv = tl.arange(0, DVP)
    mg = g < G
    q = tl.load(
        q_ptr + b * s_qb + (hk * G + g[:, None]) * s_qh + dk[None, :] * s_qd,
        mask=mg[:, None] & (dk[None, :] < DK),
        other=0.0,
    )
    qp = tl.load(qpos_ptr + b * s_qpb)
    m_i = tl.full([GP], -1.0e30, tl.float32)
    l_i = tl.zeros([GP], tl.float32)
    acc = tl.zeros([GP, DVP], tl.float32)
    lo = sp * per_split
    hi = tl.minimum(lo + per_split, S)
    for s0 in range(lo, hi, BLOCK):
        s = s0 + tl.arange(0, BLOCK)
        ms = s < hi
        kp = tl.load(kpos_ptr + b * s_kpb + s * s_kps, mask=ms, other=0)
        ok = ms & (kp <= qp)
        if HAS_WINDOW:
            meta = tl.load(meta_ptr + b * s_mb + s * s_ms, mask=ms, other=0) != 0
            ok = ok & ((qp - kp < window) | meta)
        if HAS_VALID:
            ok = ok & (tl.load(valid_ptr + b * s_valb + s * s_vals, mask=ms, other=0) != 0)
        k = tl.load(
            k_ptr + b * s_kb + hk * s_kh + s[:, None] * s_ks + dk[None, :] * s_kd,
            mask=ms[:, None] & (dk[None, :] < DK),
            other=0.0,
        )
        if IEEE:
            sc = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee")
        else:
            sc = tl.dot(q, tl.trans(k))
        sc = tl.where(ok[None, :], sc * scale, float("-inf"))  # (GP, BLOCK)
        m_new = tl.maximum(m_i, tl.max(sc, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(sc - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(
            v_ptr + b * s_vb + hk * s_vh + s[:, None] * s_vs + dv[None, :] * s_vd,
            mask=ms[:, None] & (dv[None, :] < DV),
            other=0.0,
        )
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    if DIRECT:  # one split: the output itself (a query that sees no key, padding, gets zeros, not NaN)
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(
            out_ptr + b * s_ob + (hk * G + g[:, None]) * s_oh + dv[None, :] * s_od,
            out.to(out_ptr.dtype.element_ty),
            mask=mg[:, None] & (dv[None, :] < DV),
        )
    else:
        row = bh * n_splits + sp  # only the G real heads' partials: the pad rows of the tile are never read
        tl.store(m_ptr + row * GP + g, m_i, mask=mg)
        tl.store(l_ptr + row * GP + g, l_i, mask=mg)
        tl.store(o_ptr + (row * GP + g[:, None]) * DVP + dv[None, :], acc, mask=mg[:, None] & (dv[None, :] < DV))


@triton.jit
def _combine_kernel(
    m_ptr,
    l_ptr,
    o_ptr,
    out_ptr,
    G,
    HKV,
    DV,
    n_splits,
    s_ob,
    s_oh,
    s_od,
    GP: tl.constexpr,
    DVP: tl.constexpr,
):
    bh = tl.program_id(0)
    b = bh // HKV
    hk = bh % HKV
    g = tl.arange(0, GP)
    dv = tl.arange(0, DVP)
    mg = g < G
    mo = mg[:, None] & (dv[None, :] < DV)
    m_all = tl.full([GP], -1.0e30, tl.float32)
    for sp in range(0, n_splits):
        m_all = tl.maximum(m_all, tl.load(m_ptr + (bh * n_splits + sp) * GP + g, mask=mg, other=-1.0e30))
    l_all = tl.zeros([GP], tl.float32)
    acc = tl.zeros([GP, DVP], tl.float32)
    for sp in range(0, n_splits):
        row = bh * n_splits + sp
        w = tl.exp(tl.load(m_ptr + row * GP + g, mask=mg, other=-1.0e30) - m_all)
        l_all += w * tl.load(l_ptr + row * GP + g, mask=mg, other=0.0)
        acc += w[:, None] * tl.load(o_ptr + (row * GP + g[:, None]) * DVP + dv[None, :], mask=mo, other=0.0)
    # a query that sees no key (never read: padding) gets zeros, not NaN
    out = acc / tl.where(l_all > 0, l_all, 1.0)[:, None]
    tl.store(
        out_ptr + b * s_ob + (hk * G + g[:, None]) * s_oh + dv[None, :] * s_od,
        out.to(out_ptr.dtype.element_ty),
        mask=mo,
    )


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 8
    i = device.index if device.index is not None else torch.cuda.current_device()
    if i not in _SM_COUNT:
        _SM_COUNT[i] = torch.cuda.get_device_properties(i).multi_processor_count
    return _SM_COUNT[i]


def settings_for(slots: int) -> tuple[int, int, int | None, int]:
    """(key slots per inner step, warps, pipeline stages, programs per SM) of the split kernel for a cache of
    ``slots``."""
    if slots <= SHORT_SLOTS:
        return SHORT_BLOCK_N, SHORT_NUM_WARPS, SHORT_NUM_STAGES, SHORT_PROGRAMS_PER_SM
    return BLOCK_N, NUM_WARPS, NUM_STAGES, PROGRAMS_PER_SM


def n_splits_for(batch_kv_heads: int, slots: int, device: torch.device) -> int:
    """Splits over the keys: programs for about ``PROGRAMS_PER_SM`` per SM (a few resident at a time: several
    waves, so the last one's tail is short), no split under 4 key blocks."""
    block, _, _, per_sm = settings_for(slots)
    want = triton.cdiv(per_sm * _sm_count(device), batch_kv_heads)
    return max(1, min(want, triton.cdiv(slots, 4 * block)))


def _row_strides(t: Tensor) -> tuple[int, int]:
    """Strides (row, slot) of a [B or 1, S] tensor; a broadcast batch of 1 has row stride 0."""
    return (0 if t.shape[0] == 1 else t.stride(0)), t.stride(1)


@torch.library.custom_op("hymba::decode_attention", mutates_args=())
def _decode_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_pos: Tensor,
    k_pos: Tensor,
    k_meta: Tensor,
    k_valid: Tensor,
    window: int,
) -> Tensor:
    B, H, _, DK = q.shape
    HKV, S, DV = k.shape[1], k.shape[2], v.shape[3]
    G = H // HKV
    GP, DKP, DVP = (
        max(16, triton.next_power_of_2(G)),
        max(16, triton.next_power_of_2(DK)),
        max(16, triton.next_power_of_2(DV)),
    )
    block, warps, stages, _ = settings_for(S)
    n_splits = n_splits_for(B * HKV, S, q.device)
    per_split = triton.cdiv(triton.cdiv(S, n_splits), block) * block
    n_splits = triton.cdiv(S, per_split)
    direct = n_splits == 1  # the split kernel writes the output: no partials, no combine
    f32 = dict(device=q.device, dtype=torch.float32)
    rows = 0 if direct else B * HKV * n_splits
    m = torch.empty(rows, GP, **f32)
    l_ = torch.empty(rows, GP, **f32)
    o = torch.empty(rows, GP, DVP, **f32)
    out = torch.empty(B, H, 1, DV, device=q.device, dtype=q.dtype)
    has_valid = k_valid.numel() > 0
    valid = k_valid if has_valid else k_pos
    meta = k_meta.view(torch.uint8) if k_meta.dtype == torch.bool else k_meta
    valid = valid.view(torch.uint8) if valid.dtype == torch.bool else valid
    _split_kernel[(B * HKV, n_splits)](
        q,
        k,
        v,
        q_pos,
        k_pos,
        meta,
        valid,
        m,
        l_,
        o,
        out,
        S,
        G,
        HKV,
        DK,
        DV,
        n_splits,
        per_split,
        max(window, 0),
        DK**-0.5,
        q.stride(0),
        q.stride(1),
        q.stride(3),
        *k.stride()[:2],
        k.stride(2),
        k.stride(3),
        *v.stride()[:2],
        v.stride(2),
        v.stride(3),
        q_pos.stride(0),
        *_row_strides(k_pos),
        *_row_strides(meta),
        *_row_strides(valid),
        out.stride(0),
        out.stride(1),
        out.stride(3),
        HAS_VALID=has_valid,
        HAS_WINDOW=window >= 0,
        IEEE=q.dtype == torch.float32 or (_INTERPRETED and q.dtype == torch.bfloat16),
        GP=GP,
        DKP=DKP,
        DVP=DVP,
        BLOCK=block,
        DIRECT=direct,
        num_warps=warps,
        **({} if stages is None else {"num_stages": stages}),
    )
    if not direct:
        _combine_kernel[(B * HKV,)](
            m, l_, o, out, G, HKV, DV, n_splits, out.stride(0), out.stride(1), out.stride(3), GP=GP, DVP=DVP
        )
    return out


@_decode_attention.register_fake
def _(q, k, v, q_pos, k_pos, k_meta, k_valid, window):
    return q.new_empty(q.shape[0], q.shape[1], 1, v.shape[3])


def attention_decode_triton(q: Tensor, k: Tensor, v: Tensor, spec) -> Tensor:
    """q [B, H, 1, Dk], k [B, Hkv, S, Dk], v [B, Hkv, S, Dv] -> [B, H, 1, Dv]; mask from ``spec`` as
    :func:`hymba.kernels.attention.ref.build_mask` (q_pos [B, 1]; k_pos, k_meta, k_valid [B or 1, S])."""
    if q.shape[2] != 1:
        raise ValueError(f"decode attention takes one query per row, got q of shape {tuple(q.shape)}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"{q.shape[1]} query heads do not group over {k.shape[1]} K/V heads")
    window = -1 if spec.window is None else int(spec.window)
    valid = spec.k_valid if spec.k_valid is not None else spec.k_pos.new_empty(0)
    return _decode_attention(q, k, v, spec.q_pos, spec.k_pos, spec.k_meta, valid, window)


__all__ = ["attention_decode_triton", "n_splits_for", "settings_for"]
