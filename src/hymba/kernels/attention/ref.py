"""Attention masks and the reference attention (``scaled_dot_product_attention`` with an explicit mask).

A query at position p sees a key at position p' when the key is valid and
    p' <= p  and  (p - p' < window  or  the key is a meta token).
So a sliding-window query sees itself and the ``window - 1`` tokens before it (global layers: window=None).
Positions, not indices, define the mask: the same rule serves training, left-padded prefill and a decoding
cache whose ring buffer holds keys out of order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

# cuDNN's SDPA backward returns NaN in dQ when a mask is passed and seq_len % 128 == 64 on H100/H200 (torch
# 2.11, pytorch/pytorch#196678): every seed-scale MQAR row whose attention ran SDPA at the 64-token curriculum
# setting got NaN gradients (7 rows). So an SDPA call that will be differentiated runs on the other fused
# kernels; inference keeps the default choice.
_TRAINING_SDPA = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]


@dataclass
class MaskSpec:
    """Who may attend to whom.

    Attributes:
        q_pos: [B, Tq] positions of the queries.
        k_pos: [B, Tk] positions of the keys.
        k_meta: [B, Tk] bool, key is a meta token (always visible).
        k_valid: [B, Tk] bool or None (all valid): padding and empty cache slots are invalid.
        window: sliding window W, or None for global attention.
        n_meta: number of leading meta tokens when the layout is plain training/prefill without padding
            (keys == queries, ``[meta][tokens]``); ``None`` otherwise. Lets block-sparse kernels use indices.
    """

    q_pos: Tensor
    k_pos: Tensor
    k_meta: Tensor
    k_valid: Tensor | None = None
    window: int | None = None
    n_meta: int | None = None

    def with_window(self, window: int | None) -> MaskSpec:
        return MaskSpec(self.q_pos, self.k_pos, self.k_meta, self.k_valid, window, self.n_meta)


def build_mask(spec: MaskSpec) -> Tensor:
    """Boolean mask [B, 1, Tq, Tk], True where attention is allowed.

    A query that may see no key at all (a padding position) is allowed every key so its output stays finite;
    such outputs are never read.
    """
    qp = spec.q_pos[:, :, None]
    kp = spec.k_pos[:, None, :]
    allowed = kp <= qp
    if spec.window is not None:
        allowed = allowed & ((qp - kp < spec.window) | spec.k_meta[:, None, :])
    if spec.k_valid is not None:
        allowed = allowed & spec.k_valid[:, None, :]
    empty = ~allowed.any(-1, keepdim=True)
    return (allowed | empty).unsqueeze(1)


def attention_sdpa(q: Tensor, k: Tensor, v: Tensor, spec: MaskSpec) -> Tensor:
    """Args: q [B, H, Tq, Dk], k [B, Hkv, Tk, Dk], v [B, Hkv, Tk, Dv]. Returns [B, H, Tq, Dv].

    A global layer in the plain layout (keys == queries, ``[meta][tokens]`` at positions 0, 1, ...; no window,
    no padding) is plain causal attention: SDPA's ``is_causal``, no mask built or read (the flash kernels where
    they apply)."""
    causal = spec.n_meta is not None and spec.window is None and spec.k_valid is None and q.shape[2] == k.shape[2]
    mask, gqa = (None if causal else build_mask(spec)), k.shape[1] != q.shape[1]
    if q.is_cuda and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        if gqa:  # the memory-efficient kernel takes no grouped heads (it would fall to the bf16 math kernel)
            k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], 1) for t in (k, v))
        with sdpa_kernel(_TRAINING_SDPA):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    if gqa and q.shape[2] == 1:
        # One query per row (decoding): the G query heads of a K/V head become G queries of that head, so
        # every kernel reads each K/V head once and none needs grouped-head support. [B, Hkv, G, Dk]
        B, H, _, Dk = q.shape
        Hkv = k.shape[1]
        o = F.scaled_dot_product_attention(q.reshape(B, Hkv, H // Hkv, Dk), k, v, attn_mask=mask)
        return o.reshape(B, H, 1, v.shape[-1])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=gqa)


def attention_naive(q: Tensor, k: Tensor, v: Tensor, spec: MaskSpec) -> Tensor:
    """Softmax(QK^T / sqrt(d)) V in fp32 with explicit head repetition: the test oracle."""
    rep = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(rep, 1).float()
    v = v.repeat_interleave(rep, 1).float()
    s = q.float() @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    s = s.masked_fill(~build_mask(spec), float("-inf"))
    return (s.softmax(-1) @ v).to(q.dtype)


def rotary_ref(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE in the rotate-half layout (Llama): x [B, H, T, D], cos and sin broadcasting to it, in x's dtype.
    Under autocast q and k come from a bf16 projection while cos and sin are fp32 (the residual stream's dtype):
    the rotation is then computed in fp32 and returned in bf16, so attention gets bf16 Q/K as it gets V (it
    returned fp32 Q/K before, which autocast cast back to bf16 inside sdpa and flex: two fp32 tensors and two
    casts a layer)."""
    x1, x2 = x.chunk(2, dim=-1)
    return (x * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)
