"""Where and how the process computes: the device, the dtype names, autocast, peak FLOP/s, CUDA-graph capture,
glibc's allocator.

Every part of the project asks this module: ``hymba train`` (``train.device``), ``hymba eval``/``generate``/
``bench`` (``--device``, ``--dtype``), the lm-eval adapter (``device=``, ``dtype=``) and the ablation runner.

``keep_freed_memory`` keeps large freed CPU buffers inside the process (glibc), so each step does not
page-fault them back in. PyTorch's CPU allocator takes big tensors straight from ``malloc``. glibc serves
requests above its mmap threshold (adjusted dynamically, but never past 32 MB) with fresh ``mmap`` calls and
unmaps them on free, so a step whose activations exceed 32 MB (the reference scan's [L, B, D, N] states at
batch 128) faults every page of them in again, every time. Raising the mmap and trim thresholds keeps freed
memory for reuse (the heap settles within a few steps and then holds two to four blocks of a step's
largest size, since glibc's aligned allocations need a little slack the freed block may have lost): a
batch-128 MQAR step of a tiny hybrid row went from 4.65-4.91 s to 2.03-2.07 s on the 2-core CI box
(``benchmarks/results/2026-11-29-h200-session3.md``). The command line and its worker processes call it;
importing ``hymba`` changes nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys

import torch

log = logging.getLogger("hymba.runtime")


# ---- device -----------------------------------------------------------------------------------------------
class DeviceError(ValueError):
    """A device name this machine cannot run on. ``problem`` says why (it reads after ``"<name>: "``);
    ``fallback`` is true when the name is valid but the device is absent here (cpu or auto would run)."""

    def __init__(self, key: str, name: str, problem: str, fallback: bool = False):
        self.key, self.name, self.problem, self.fallback = key, name, problem, fallback
        hint = f"; use {key}=cpu or auto" if fallback else ""
        super().__init__(f"{key}={name!r} is invalid: {problem}{hint}")


def resolve_device(name: str | torch.device | None = "auto", key: str = "device") -> torch.device:
    """``auto`` (or ``None``: CUDA when available), ``cpu``, ``cuda`` or ``cuda:N`` as a ``torch.device``.

    Any other name, or a CUDA device this machine does not have, raises :class:`DeviceError` (a
    ``ValueError``) naming ``key`` the way the caller's user spells it (``train.device``, ``device``).
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        dev = None
    shown = str(name)
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise DeviceError(key, shown, "unknown device; expected auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(key, shown, "CUDA is not available here", fallback=True)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(key, shown, f"this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


# ---- dtype ------------------------------------------------------------------------------------------------
# the short names the configs and flags use; torch's own names (float32, bfloat16, float16) are accepted too
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TORCH_DTYPE_NAMES: tuple[str, ...] = tuple(str(d).removeprefix("torch.") for d in DTYPES.values())


def resolve_dtype(name: str | torch.dtype, key: str = "dtype") -> torch.dtype:
    """A dtype by short name (``fp32``, ``bf16``, ``fp16``) or torch's name (``float32``, ...); an unknown
    name is a ``ValueError`` naming ``key``."""
    if isinstance(name, torch.dtype):
        return name
    table = {n: d for short, d in DTYPES.items() for n in (str(d).removeprefix("torch."), short)}
    if name not in table:
        raise ValueError(f"{key}={name!r} is invalid: expected one of {', '.join(table)}")
    return table[name]


# ---- precision --------------------------------------------------------------------------------------------
def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA, none (fp32) on CPU, unless ``precision`` (auto, fp32, bf16) says otherwise."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``; a no-op for ``None`` (:func:`autocast_dtype`'s fp32)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


# dense bf16 tensor-core peak FLOP/s by GPU name, for MFU (train.peak_flops overrides)
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def peak_flops(device: torch.device, override: float = 0.0) -> float | None:
    """Peak FLOP/s of ``device`` for MFU: ``override`` when set, else the GPU's dense bf16 peak by name; None
    on CPU or an unknown GPU (with a warning)."""
    if device.type != "cuda":
        return None
    if override:
        return override
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in name:
            return flops
    log.warning("MFU not reported: peak FLOP/s of %r unknown (set train.peak_flops)", name)
    return None


# ---- CPU allocator ----------------------------------------------------------------------------------------
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MALLOC_THRESHOLD = 1 << 30  # allocations up to 1 GiB come from (and return to) the heap


def available_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device``: CUDA's free memory, or the host's MemAvailable on CPU
    (Linux); ``None`` where it cannot be known."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@contextlib.contextmanager
def cuda_graph_capture(graph: torch.cuda.CUDAGraph, **kwargs):
    """``torch.cuda.graph(graph, **kwargs)``, for every capture in the project (training steps, decode steps).
    Where the capture fails part-way (an operation that cannot be captured, out of memory), torch 2.11 leaves the
    device's default generator marked as capturing, and every later random op on the device fails ("Offset
    increment outside graph capture encountered unexpectedly"); the generator then gets a fresh copy of its
    state, the same seed and offset, not capturing, and the error goes on to the caller."""
    try:
        with torch.cuda.graph(graph, **kwargs):
            yield
    except BaseException:
        gen = torch.cuda.default_generators[torch.cuda.current_device()]
        gen.graphsafe_set_state(gen.clone_state())
        raise


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (see the module docstring); False where that
    is not possible (not Linux/glibc), which only costs speed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = (
            libc.mallopt(M_MMAP_THRESHOLD, MALLOC_THRESHOLD) == 1
            and libc.mallopt(M_TRIM_THRESHOLD, 2 * MALLOC_THRESHOLD - 1) == 1
        )
    except (OSError, AttributeError):  # musl or another libc without mallopt
        ok = False
    log.debug("glibc mmap/trim thresholds %s", "raised" if ok else "unchanged (no glibc mallopt)")
    return ok


__all__ = [
    "DTYPES",
    "DeviceError",
    "PEAK_BF16_FLOPS",
    "TORCH_DTYPE_NAMES",
    "autocast_context",
    "autocast_dtype",
    "cuda_graph_capture",
    "keep_freed_memory",
    "peak_flops",
    "resolve_device",
    "resolve_dtype",
]
