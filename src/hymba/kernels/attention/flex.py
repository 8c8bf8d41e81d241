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


# FlexAttention picks its forward tiles by the Q/K head dim alone: on sm90 in bf16, 128 x 128 tiles with 4 warps
# for head dim 64. With a wider V (the released Hymba layout: Q/K 64, V 128) that tile measured 1.6x slower than
# 128 x 64 tiles with 4 warps and 3 stages at a Hymba-1.5B prefill chunk on an H200 (sliding window 3.08 against
# 1.92 ms, causal 9.11 against 5.81; benchmarks/results/2026-12-03-h200-s14.md). With V as wide as Q/K the
# two were equal, so the default stays there. The "fwd_" prefix leaves the backward's own tiles alone.
WIDE_V_FWD_OPTIONS = {"fwd_BLOCK_M": 128, "fwd_BLOCK_N": 64, "fwd_num_warps": 4, "fwd_num_stages": 3}


def fwd_kernel_options(qk_dim: int, v_dim: int, capability: tuple[int, int] | None) -> dict | None:
    """The forward kernel options for these head dims on a GPU of this compute capability (None: flex's own)."""
    if capability == (9, 0) and v_dim > qk_dim:
        return dict(WIDE_V_FWD_OPTIONS)
    return None


@lru_cache(maxsize=8)
def _capability(device: str) -> tuple[int, int] | None:
    return torch.cuda.get_device_capability(device) if device.startswith("cuda") else None


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
    opts = fwd_kernel_options(q.shape[-1], v.shape[-1], _capability(str(q.device)))
    return _compiled()(q, k, v, block_mask=bm, enable_gqa=k.shape[1] != q.shape[1], kernel_options=opts)
