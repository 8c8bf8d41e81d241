"""Attention dispatch: ``sdpa`` (explicit mask, any device; the reference) or ``flex`` (FlexAttention, CUDA).

``auto`` takes ``flex`` on CUDA for the plain layout (training, unpadded prefill) and ``sdpa`` otherwise
(decoding, padded batches, CPU, head dims FlexAttention cannot tile), logging its choice once.
"""

from __future__ import annotations

from hymba.kernels import BackendUnavailable, log_choice
from hymba.kernels.attention.ref import MaskSpec, attention_naive, attention_sdpa, build_mask

BACKENDS = ("auto", "sdpa", "flex")


def attention(q, k, v, spec: MaskSpec, backend: str = "auto"):
    """q [B, H, Tq, Dk], k [B, Hkv, Tk, Dk], v [B, Hkv, Tk, Dv] -> [B, H, Tq, Dv]."""
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} unknown; expected one of {BACKENDS}")
    plain = spec.n_meta is not None and q.shape[2] == k.shape[2]
    # FlexAttention's Triton templates need power-of-two head dims of 16..128 (256 overflows shared memory)
    flex_dims = all(d in (16, 32, 64, 128) for d in (q.shape[-1], v.shape[-1]))
    if backend == "flex":
        if q.device.type != "cuda":
            raise BackendUnavailable("attention backend 'flex' needs CUDA tensors")
        if not plain:
            raise BackendUnavailable("attention backend 'flex' serves the unpadded training/prefill layout only")
    elif backend == "auto":
        if q.device.type == "cuda" and plain and flex_dims:
            backend = "flex"
            log_choice("attention", "flex", "CUDA, plain layout")
        elif q.device.type == "cuda" and plain:
            log_choice("attention", "sdpa", f"head dims {q.shape[-1]}/{v.shape[-1]} unsupported by flex")
        else:
            backend = "sdpa"
    if backend == "flex":
        from hymba.kernels.attention.flex import attention_flex

        return attention_flex(q, k, v, spec)
    return attention_sdpa(q, k, v, spec)


__all__ = ["attention", "MaskSpec", "build_mask", "attention_sdpa", "attention_naive"]
