"""RMSNorm for decoding, in plain PyTorch: the reference of :mod:`hymba.kernels.norm.triton`.

Each function is what :class:`hymba.model.layers.RMSNorm` and the block's glue compute, op by op: normalised
and scaled in fp32, rounded once to the input's dtype; sums and means of the rounded values in that dtype.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def rms_norm_ref(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """x [..., W], weight [W] -> [..., W] in x's dtype."""
    return F.rms_norm(x.float(), weight.shape, weight.float(), eps).to(x.dtype)


def add_rms_norm_ref(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """s = x + residual (in their dtype) -> (rms_norm(s), s)."""
    s = x + residual
    return rms_norm_ref(s, weight, eps), s


def rms_norm_mean_ref(a: Tensor, wa: Tensor, b: Tensor, wb: Tensor, eps: float) -> Tensor:
    """Paper Eq. 3's fusion before W_out: (rms_norm(a) + rms_norm(b)) / 2, a and b [..., W]."""
    return (rms_norm_ref(a, wa, eps) + rms_norm_ref(b, wb, eps)) / 2


def rms_norm_split_ref(
    x: Tensor, weights: tuple[Tensor, ...], eps: float, first_width: int | None = None
) -> tuple[Tensor, ...]:
    """x [..., >= sum W_i]: its first sum W_i columns split into consecutive parts of the weights' widths, each
    normalised on its own; ``first_width``: the first part returned that wide, zeros after its W_0 columns."""
    widths = [w.shape[0] for w in weights]
    parts = x[..., : sum(widths)].split(widths, dim=-1)
    out = [rms_norm_ref(p, w, eps) for p, w in zip(parts, weights)]
    if first_width is not None:
        out[0] = F.pad(out[0], (0, first_width - widths[0]))
    return tuple(out)


def silu_mul_ref(g: Tensor, u: Tensor) -> Tensor:
    """SwiGLU's product before its down projection: F.silu(g) * u, in their dtype."""
    return F.silu(g) * u
