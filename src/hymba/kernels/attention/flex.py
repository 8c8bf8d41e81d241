"""FlexAttention path (CUDA): block-sparse causal / sliding-window / meta-prefix masks.

Used for the plain training and prefill layout (no padding, keys == queries), where the mask depends on
indices only and a block mask can be built once per (T, window, n_meta) and reused by every layer.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from hymba.kernels.attention.ref import MaskSpec


@lru_cache(maxsize=64)
def block_mask(T: int, window: int | None, n_meta: int, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q_idx, kv_idx):
        causal = kv_idx <= q_idx
        if window is None:
            return causal
        return causal & ((q_idx - kv_idx < window) | (kv_idx < n_meta))

    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=T, KV_LEN=T, device=device)


@lru_cache(maxsize=1)
def _compiled():
    from torch.nn.attention.flex_attention import flex_attention

    # Every (shape, window, n_meta) is a recompile; past dynamo's default limit of 8 it silently runs the
    # eager flex_attention, which materialises the full score matrix (seen on an H200: OOM at 8K x batch 8).
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(flex_attention, dynamic=False)


def attention_flex(q: Tensor, k: Tensor, v: Tensor, spec: MaskSpec) -> Tensor:
    """Args as :func:`hymba.kernels.attention.ref.attention_sdpa`; needs ``spec.n_meta`` (plain layout)."""
    T = q.shape[2]
    bm = block_mask(T, spec.window, spec.n_meta or 0, str(q.device))
    return _compiled()(q, k, v, block_mask=bm, enable_gqa=k.shape[1] != q.shape[1])
