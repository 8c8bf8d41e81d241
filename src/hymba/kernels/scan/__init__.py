"""Selective scan dispatch: ``ref`` (plain PyTorch, any device), ``triton`` (our Triton kernels, CUDA, no
build), or ``mamba_ssm`` (the CUDA kernels of state-spaces' mamba_ssm package, when it is installed).

``auto`` takes, for CUDA tensors, ``mamba_ssm`` when that package is importable, else ``triton`` when Triton is,
else ``ref``; on CPU ``ref``. It logs its choice once. The one-token decoding update
(:func:`selective_state_update`) has no Triton kernel yet: under ``triton`` it runs the reference.
"""

from __future__ import annotations

import importlib.util
import os

from hymba.kernels import BackendUnavailable, log_choice
from hymba.kernels.scan.ref import selective_scan_quadratic, selective_scan_ref, selective_state_update_ref

BACKENDS = ("auto", "ref", "triton", "mamba_ssm")


# looked up once at import: resolve() runs inside torch.compile'd forwards, where find_spec cannot be traced
_MAMBA_SSM = importlib.util.find_spec("mamba_ssm") is not None
_TRITON = importlib.util.find_spec("triton") is not None


def _has_mamba_ssm() -> bool:
    return _MAMBA_SSM


def _has_triton() -> bool:
    return _TRITON


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def resolve(backend: str, device_type: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"scan backend {backend!r} unknown; expected one of {BACKENDS}")
    if backend == "auto":
        if device_type == "cuda" and _has_mamba_ssm():
            log_choice("selective_scan", "mamba_ssm", "mamba_ssm found")
            return "mamba_ssm"
        if device_type == "cuda" and _has_triton():
            log_choice("selective_scan", "triton", "CUDA, mamba_ssm not installed")
            return "triton"
        log_choice(
            "selective_scan", "ref", "neither mamba_ssm nor triton installed" if device_type == "cuda" else device_type
        )
        return "ref"
    if backend == "triton":
        if not _has_triton():
            raise BackendUnavailable("scan backend 'triton' needs the triton package (pip install triton)")
        if device_type != "cuda" and not _interpreted():
            raise BackendUnavailable(
                "scan backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 to interpret the kernels on CPU)"
            )
    if backend == "mamba_ssm":
        if device_type != "cuda":
            raise BackendUnavailable("scan backend 'mamba_ssm' needs CUDA tensors")
        if not _has_mamba_ssm():
            raise BackendUnavailable("scan backend 'mamba_ssm' needs the mamba_ssm package (not installed)")
    return backend


def selective_scan(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    return_last_state=False,
    backend: str = "auto",
):
    """Selective scan, shapes as in :func:`hymba.kernels.scan.ref.selective_scan_ref`."""
    chosen = resolve(backend, u.device.type)
    if chosen == "triton":
        from hymba.kernels.scan.triton import selective_scan_triton

        return selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if chosen == "mamba_ssm":
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        # the CUDA kernel wants delta, B, C and z in u's dtype (state and A stay fp32 inside)
        dt = u.dtype
        return selective_scan_fn(
            u,
            delta.to(dt),
            A,
            B.to(dt).contiguous(),
            C.to(dt).contiguous(),
            D,
            None if z is None else z.to(dt),
            delta_bias,
            delta_softplus,
            return_last_state,
        )
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def selective_state_update(
    state, x, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, backend: str = "auto"
):
    """One decoding step, updating ``state`` [B, D, N] in place; see ``selective_state_update_ref``."""
    if resolve(backend, x.device.type) == "mamba_ssm":
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update as fused

        return fused(state, x, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_state_update_ref(state, x, delta, A, B, C, D, z, delta_bias, delta_softplus)


__all__ = [
    "selective_scan",
    "selective_state_update",
    "selective_scan_ref",
    "selective_scan_quadratic",
    "selective_state_update_ref",
    "resolve",
]
