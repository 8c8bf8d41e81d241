"""Kernels behind the model, each chosen by backend name.

``kernels/<op>/ref.py`` is plain PyTorch (fp32, the reference every fast path is tested against);
``kernels/<op>/__init__.py`` dispatches by name. A requested backend that is not available is an error;
``auto`` may fall back and logs once which path it took.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("hymba.kernels")
_said: set[tuple[str, str]] = set()


class BackendUnavailable(RuntimeError):
    """A backend was requested by name but cannot run here."""


def log_choice(op: str, backend: str, why: str) -> None:
    """Log once per (op, backend) which path ``auto`` took."""
    if (op, backend) not in _said and not torch.compiler.is_compiling():  # said by the eager call, not traced
        _said.add((op, backend))
        log.info("%s: auto selected backend %r (%s)", op, backend, why)
