"""Selective scan dispatch: ``ref`` (plain PyTorch, any device), ``triton`` (our Triton kernels, CUDA, no
build), or ``mamba_ssm`` (the CUDA kernels of state-spaces' mamba_ssm package, when it is installed).

``auto`` takes, for CUDA tensors, ``mamba_ssm`` when that package is importable, else ``triton`` when Triton is,
else ``ref``; on CPU ``ref``. It logs its choice once.

:func:`causal_conv1d` is Mamba-1's conv over a whole sequence: our Triton kernels in the model's [B, S, D] layout
(:mod:`hymba.kernels.scan.triton_conv`) where no gradient is needed (prefill, evaluation), the scan backend is
not ``ref`` and the tensors are on CUDA; else PyTorch's conv1d (training), the choice logged once.

The one-token decoding ops, :func:`selective_state_update` and :func:`causal_conv1d_update` (the Mamba-1 conv's
state shift), have their own ``auto``: our fused Triton kernels (:mod:`hymba.kernels.scan.triton_step`) for
CUDA tensors when Triton is importable, else ``ref``; they read and write their state once, in place.
``mamba_ssm`` runs mamba_ssm's state update; that package has no conv update (it lives in the separate
causal-conv1d package), so the conv update runs our Triton kernel under ``mamba_ssm`` too.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from hymba.kernels import BackendUnavailable, log_choice
from hymba.kernels.scan.ref import (
    causal_conv1d_ref,
    causal_conv1d_shifted,
    causal_conv1d_update_ref,
    selective_scan_quadratic,
    selective_scan_ref,
    selective_state_update_ref,
)

BACKENDS = ("auto", "ref", "triton", "mamba_ssm")
# the conv where a gradient is needed (training), under a non-``ref`` backend on CUDA: "ref", PyTorch's conv1d and
# its autograd; "triton", our kernels and their backward (hymba::causal_conv1d_bwd), which trained slower on the
# H200 (2026-12-03, benchmarks/results/2026-12-03-h200-s11.md); "shift", the same conv as K shifted multiply-adds
# in [B, S, D] (causal_conv1d_shifted), which torch.compile fuses with its neighbours forward and backward:
# compiled seed training 145.8K -> 158.7K tok/s for row 13 and 224.8K -> 241.7K for row 1 against "ref" (H100,
# benchmarks/results/2026-12-07-h100-s24.md); eager it is a chain of unfused elementwise kernels (not measured).
# "auto": "shift" inside a torch.compile'd graph, "ref" in eager. glue_profile.py and train_throughput.py
# --train-conv time them.
TRAIN_CONV = "auto"
TRAIN_CONVS = ("auto", "ref", "triton", "shift")


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


def _auto_step(device_type: str) -> str:
    """The backend ``auto`` runs the one-token decoding ops on."""
    return "triton" if device_type == "cuda" and _has_triton() else "ref"


def resolve_step(backend: str, device_type: str) -> str:
    """The backend the one-token decoding ops run for a scan backend name (see the module docstring)."""
    if backend == "auto":
        chosen = _auto_step(device_type)
        if chosen == "triton":
            why = f"the fused Triton decode step on {device_type}"
        else:
            why = "triton not installed" if device_type == "cuda" else device_type
        log_choice("selective_state_update", chosen, why)
        return chosen
    return resolve(backend, device_type)


def selective_state_update(
    state,
    x,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    backend: str = "auto",
    A_is_log: bool = False,
):
    """One decoding step, updating ``state`` [B, D, N] in place; see ``selective_state_update_ref``. With
    ``A_is_log``, A is Mamba's A_log and the step uses A = -exp(A_log) in fp32 (the Triton kernel in-kernel)."""
    chosen = resolve_step(backend, x.device.type)
    if chosen == "triton":
        from hymba.kernels.scan.triton_step import selective_state_update_triton

        return selective_state_update_triton(state, x, delta, A, B, C, D, z, delta_bias, delta_softplus, A_is_log)
    if A_is_log:
        A = -torch.exp(A.float())
    if chosen == "mamba_ssm":
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update as fused

        return fused(state, x, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_state_update_ref(state, x, delta, A, B, C, D, z, delta_bias, delta_softplus)


def causal_conv1d(x, weight, bias=None, valid=None, silu: bool = True, backend: str = "auto"):
    """Mamba-1's depthwise causal conv, x [B, S, D] -> u [B, S, D]; see ``causal_conv1d_ref``. ``backend`` is
    the scan backend's name: ``ref`` runs PyTorch's conv1d; the others run the Triton kernel on CUDA (or under
    ``TRITON_INTERPRET=1``) where no gradient is needed, and where one is the conv ``TRAIN_CONV`` names."""
    params = (x, weight) if bias is None else (x, weight, bias)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in params)
    fast = _conv_kernels(backend, x.device.type)
    conv = train_conv(backend, x.device.type, torch.compiler.is_compiling()) if grad else "triton" if fast else "ref"
    if fast:  # "ref" of a non-ref backend is a choice: said once (the eager calls say it; compiled ones cannot)
        why = f"autograd, TRAIN_CONV = {TRAIN_CONV!r}" if grad else "no gradient needed"
        log_choice("causal_conv1d", conv, why)
    if conv == "shift":
        return causal_conv1d_shifted(x, weight, bias, valid, silu)
    if conv == "triton":
        from hymba.kernels.scan.triton_conv import causal_conv1d_triton

        return causal_conv1d_triton(x, weight, bias, valid, silu)
    return causal_conv1d_ref(x, weight, bias, valid, silu)


def _conv_kernels(backend: str, device_type: str) -> bool:
    """Whether a scan backend on this device runs our conv kernels (else PyTorch's conv1d, always)."""
    return resolve(backend, device_type) != "ref" and _has_triton() and (device_type == "cuda" or _interpreted())


def train_conv(backend: str, device_type: str, compiled: bool) -> str:
    """The Mamba conv that runs where a gradient is needed, for a scan ``backend`` on ``device_type``, in a
    ``torch.compile``'d graph or eager: "ref" (PyTorch's conv1d), "triton" or "shift" (``TRAIN_CONV``)."""
    if not _conv_kernels(backend, device_type) or TRAIN_CONV == "ref":
        return "ref"
    if TRAIN_CONV == "auto":
        return "shift" if compiled else "ref"
    return TRAIN_CONV


def triton_impl(name: str | None = None) -> str:
    """The Triton scan's implementation (``hymba.kernels.scan.triton.IMPL``), first set to ``name`` if given: a
    ``ValueError`` naming the choices for an unknown one. Needs Triton (imported here, not with this module)."""
    from hymba.kernels.scan import triton as scan_triton

    if name is not None:
        if name not in scan_triton.IMPLS:
            raise ValueError(f"scan implementation {name!r} unknown; expected one of {', '.join(scan_triton.IMPLS)}")
        scan_triton.IMPL = name
    return scan_triton.IMPL


def causal_conv1d_update(conv_state, x, weight, bias=None, silu: bool = True, backend: str = "auto"):
    """One decoding token of the depthwise causal conv, shifting ``conv_state`` [B, D, K-1] in place; see
    ``causal_conv1d_update_ref``."""
    if resolve_step(backend, x.device.type) in ("triton", "mamba_ssm"):
        from hymba.kernels.scan.triton_step import causal_conv1d_update_triton

        return causal_conv1d_update_triton(conv_state, x, weight, bias, silu)
    return causal_conv1d_update_ref(conv_state, x, weight, bias, silu)


__all__ = [
    "selective_scan",
    "selective_state_update",
    "causal_conv1d",
    "causal_conv1d_ref",
    "causal_conv1d_shifted",
    "causal_conv1d_update",
    "train_conv",
    "triton_impl",
    "selective_scan_ref",
    "selective_scan_quadratic",
    "selective_state_update_ref",
    "causal_conv1d_update_ref",
    "resolve",
    "resolve_step",
]
