"""Attention dispatch: ``sdpa`` (PyTorch's SDPA with an explicit mask, or its causal kernel for a global layer
in the plain layout; any device; the reference), ``flex`` (FlexAttention, CUDA) or
``triton`` (our decode kernel, :mod:`hymba.kernels.attention.triton_decode`: one query per row over a cache,
grouped heads reading their K/V once, split over the keys; CUDA, or CPU under ``TRITON_INTERPRET=1``).

``auto`` takes ``triton`` on CUDA for one query per row (decoding) when Triton is importable, ``flex`` on CUDA
for the plain layout (training, unpadded prefill) and ``sdpa`` otherwise (padded batches, CPU, head dims
FlexAttention cannot tile, sequences shorter than one 128-token flex block), logging its choice once. The plain
layout's global layers (plain causal attention) it runs on SDPA's causal kernel (``GLOBAL_CAUSAL = "sdpa"``, the
default: faster in training than flex) or on flex (``"flex"``). A
requested ``triton`` serves one query per row only; longer queries are an error. Should FlexAttention still
fail to compile for a shape, ``auto`` logs the error and runs that shape on ``sdpa`` from then on; a requested
``flex`` raises it.
"""

from __future__ import annotations

import importlib.util
import os

from hymba.kernels import BackendUnavailable, log, log_choice
from hymba.kernels.attention.ref import MaskSpec, attention_naive, attention_sdpa, build_mask, rotary_ref

BACKENDS = ("auto", "sdpa", "flex", "triton")
_TRITON = importlib.util.find_spec("triton") is not None  # looked up once: the dispatch runs in compiled steps
FLEX_BLOCK = 128  # FlexAttention's default block; shorter sequences with GQA fail to compile (torch 2.11, H200)
FLEX_HEAD_DIMS = (16, 32, 64, 128)  # its Triton templates need power-of-two head dims (256 overflows shared memory)
_flex_failed: set[tuple] = set()  # shapes whose flex compile failed under `auto`
GLOBAL_CAUSAL = "sdpa"  # what `auto` runs on CUDA for a global layer in the plain layout (plain causal attention):
# "sdpa" (SDPA's is_causal: flash where the head dims match) or "flex". sdpa: compiled seed training on an H100,
# row 6 527.7K against 285.4K tok/s on flex, row 13 158.6K against 162.6K (benchmarks/results/2026-12-07-h100-s28.md)
GLOBAL_CAUSALS = ("flex", "sdpa")


def _compile_errors() -> tuple[type[BaseException], ...]:
    import torch._dynamo.exc
    import torch._inductor.exc

    return tuple(
        e
        for e in (
            getattr(torch._inductor.exc, "InductorError", None),
            getattr(torch._dynamo.exc, "BackendCompilerFailed", None),
        )
        if e is not None
    )


def _sdpa_reason(q_dim: int, v_dim: int, q_len: int) -> str | None:
    """Why ``auto`` runs sdpa for a plain-layout CUDA call, or None when FlexAttention serves it."""
    if not all(d in FLEX_HEAD_DIMS for d in (q_dim, v_dim)):
        return f"head dims {q_dim}/{v_dim} unsupported by flex"
    if q_len < FLEX_BLOCK:
        return f"sequences shorter than one {FLEX_BLOCK}-token flex block"
    return None


def auto_takes_flex(device_type: str, plain: bool, q_dim: int, v_dim: int, q_len: int) -> bool:
    """Whether :func:`attention` with backend ``auto`` runs FlexAttention (no dense mask or score matrix) for
    such a call: CUDA, the plain (unpadded) layout, head dims and length flex serves. (A shape whose flex
    compile fails still falls back to sdpa at run time.)"""
    return device_type == "cuda" and plain and _sdpa_reason(q_dim, v_dim, q_len) is None


def _auto_decode(device_type: str) -> str:
    """The backend ``auto`` runs one query per row on."""
    return "triton" if device_type == "cuda" and _TRITON else "sdpa"


def _decode_triton(q, k, v, spec: MaskSpec):
    if not _TRITON:
        raise BackendUnavailable("attention backend 'triton' needs the triton package (pip install triton)")
    if q.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":  # read on CPU only
        raise BackendUnavailable("attention backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
    from hymba.kernels.attention.triton_decode import attention_decode_triton

    return attention_decode_triton(q, k, v, spec)


def rotary_qk(q, k, cos, sin):
    """RoPE of q [B, H, T, Dk] and k [B, Hkv, T, Dk] (or None) by cos, sin [B, 1, T, Dk], without autograd
    (a decode step, a prefill): :func:`~hymba.kernels.attention.ref.rotary_ref` on each. Where ``auto`` decodes
    on Triton (CUDA), one kernel rotates both (:mod:`hymba.kernels.attention.triton_rope`)."""
    if _auto_decode(q.device.type) == "triton":
        from hymba.kernels.attention.triton_rope import rotary_qk_triton

        return rotary_qk_triton(q, k, cos, sin)
    return rotary_ref(q, cos, sin), (None if k is None else rotary_ref(k, cos, sin))


def attention(q, k, v, spec: MaskSpec, backend: str = "auto"):
    """q [B, H, Tq, Dk], k [B, Hkv, Tk, Dk], v [B, Hkv, Tk, Dv] -> [B, H, Tq, Dv]."""
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} unknown; expected one of {BACKENDS}")
    if backend == "triton":
        if q.shape[2] != 1:
            raise BackendUnavailable(
                f"attention backend 'triton' serves decoding (one query per row), got {q.shape[2]} queries"
            )
        return _decode_triton(q, k, v, spec)
    if backend == "auto" and q.shape[2] == 1:
        chosen = _auto_decode(q.device.type)
        log_choice("attention", chosen, f"one query per row on {q.device.type}")
        if chosen == "triton":
            return _decode_triton(q, k, v, spec)
        return attention_sdpa(q, k, v, spec)
    plain = spec.n_meta is not None and q.shape[2] == k.shape[2]
    if backend == "flex":
        if not all(d in FLEX_HEAD_DIMS for d in (q.shape[-1], v.shape[-1])):
            raise BackendUnavailable(
                f"attention backend 'flex' needs head dims in {FLEX_HEAD_DIMS}, got {q.shape[-1]}/{v.shape[-1]}"
            )
        if q.device.type != "cuda":
            raise BackendUnavailable("attention backend 'flex' needs CUDA tensors")
        if not plain:
            raise BackendUnavailable("attention backend 'flex' serves the unpadded training/prefill layout only")
        from hymba.kernels.attention.flex import attention_flex

        return attention_flex(q, k, v, spec)
    if backend == "auto" and q.device.type == "cuda" and plain:
        if spec.window is None and GLOBAL_CAUSAL == "sdpa":
            log_choice("attention", "sdpa", "CUDA, a global layer in the plain layout (GLOBAL_CAUSAL)")
            return attention_sdpa(q, k, v, spec)
        key = (tuple(q.shape), tuple(k.shape), v.shape[-1], q.dtype, spec.window, spec.n_meta)
        reason = _sdpa_reason(q.shape[-1], v.shape[-1], q.shape[2])
        if reason:
            log_choice("attention", "sdpa", reason)
        elif key not in _flex_failed:
            from hymba.kernels.attention.flex import attention_flex

            log_choice("attention", "flex", "CUDA, plain layout")
            try:
                return attention_flex(q, k, v, spec)
            except _compile_errors() as e:  # a run-time error (e.g. out of memory) is not caught
                _flex_failed.add(key)
                log.warning(
                    "attention: flex failed for q %s, k %s, window %s (%s); auto uses sdpa for this shape",
                    tuple(q.shape),
                    tuple(k.shape),
                    spec.window,
                    str(e).splitlines()[0][:200],
                )
    return attention_sdpa(q, k, v, spec)


__all__ = [
    "attention",
    "rotary_qk",
    "rotary_ref",
    "auto_takes_flex",
    "MaskSpec",
    "build_mask",
    "attention_sdpa",
    "attention_naive",
]
