"""RMSNorm (and SwiGLU's SiLU product) of the decode step and of forwards without autograd: ``ref`` (plain
PyTorch, :mod:`hymba.kernels.norm.ref`, any device) or ``triton`` (one fused kernel per site,
:mod:`hymba.kernels.norm.triton`; CUDA, or CPU under ``TRITON_INTERPRET=1``).

``auto`` takes ``triton`` for CUDA tensors when Triton is importable, else ``ref``, and logs its choice once.
Training keeps :class:`hymba.model.layers.RMSNorm` and PyTorch's SiLU (autograd); these serve decoding,
prefill and evaluation.
"""

from __future__ import annotations

import importlib.util
import os

from hymba.kernels import BackendUnavailable, log_choice
from hymba.kernels.norm.ref import add_rms_norm_ref, rms_norm_mean_ref, rms_norm_ref, rms_norm_split_ref, silu_mul_ref

BACKENDS = ("auto", "ref", "triton")
_TRITON = importlib.util.find_spec("triton") is not None  # looked up once: the dispatch runs in compiled steps


def _auto(device_type: str) -> str:
    return "triton" if device_type == "cuda" and _TRITON else "ref"


def resolve(backend: str, device_type: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"norm backend {backend!r} unknown; expected one of {BACKENDS}")
    if backend == "auto":
        chosen = _auto(device_type)
        log_choice("rms_norm", chosen, f"decode step on {device_type}")
        return chosen
    if backend == "triton":
        if not _TRITON:
            raise BackendUnavailable("norm backend 'triton' needs the triton package (pip install triton)")
        if device_type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise BackendUnavailable("norm backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
    return backend


def rms_norm(x, weight, eps: float, residual=None, backend: str = "auto"):
    """x [..., W] -> rms_norm(x) in x's dtype; with ``residual``: s = x + residual -> (rms_norm(s), s)."""
    if resolve(backend, x.device.type) == "triton":
        from hymba.kernels.norm.triton import rms_norm_triton

        return rms_norm_triton(x, weight, eps, residual)
    return rms_norm_ref(x, weight, eps) if residual is None else add_rms_norm_ref(x, residual, weight, eps)


def rms_norm_mean(a, wa, b, wb, eps: float, backend: str = "auto"):
    """(rms_norm(a; wa) + rms_norm(b; wb)) / 2 for a, b [..., W] (paper Eq. 3's mean fusion)."""
    if resolve(backend, a.device.type) == "triton":
        from hymba.kernels.norm.triton import rms_norm_mean_triton

        return rms_norm_mean_triton(a, wa, b, wb, eps)
    return rms_norm_mean_ref(a, wa, b, wb, eps)


def rms_norm_split(x, weights, eps: float, backend: str = "auto", first_width: int | None = None):
    """x [..., >= sum W_i] -> its first columns' consecutive parts of the weights' widths, each normalised on
    its own (the Triton kernel takes three parts: Mamba-1's dt, B, C); ``first_width``: the first part that
    wide, zero-padded."""
    if len(weights) == 3 and resolve(backend, x.device.type) == "triton":
        from hymba.kernels.norm.triton import rms_norm_split_triton

        return rms_norm_split_triton(x, tuple(weights), eps, first_width)
    return rms_norm_split_ref(x, tuple(weights), eps, first_width)


def silu_mul(g, u, backend: str = "auto"):
    """SwiGLU's F.silu(g) * u for g, u [..., W] of one dtype, in one kernel on Triton."""
    if resolve(backend, g.device.type) == "triton":
        from hymba.kernels.norm.triton import silu_mul_triton

        return silu_mul_triton(g, u)
    return silu_mul_ref(g, u)


__all__ = ["rms_norm", "rms_norm_mean", "rms_norm_split", "silu_mul", "resolve", "BACKENDS"]
