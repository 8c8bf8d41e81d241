"""Mamba-1 selective scan in plain PyTorch (fp32 state), with mamba_ssm's ``selective_scan_fn`` signature.

Recurrence per channel d and state n (Gu & Dao 2023, Alg. 2):
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t = C_t . h_t + D * u_t,  then y_t *= silu(z_t)

``selective_scan_ref`` is chunked: inside a chunk of length Lc every output is a masked sum with decay
exp(cum_t - cum_s) (never above 1, so it cannot overflow), and chunks are chained through the state.
``selective_scan_loop`` is the step-by-step recurrence, slow on purpose: the test oracle.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    dtype_in = u.dtype
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return dtype_in, u, delta, A, B, C


def _finish(y: Tensor, u: Tensor, D, z, dtype_in) -> Tensor:
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype_in)


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                       z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                       return_last_state: bool = False, initial_state: Tensor | None = None,
                       chunk_size: int = 16):
    """Chunked selective scan.

    Args:
        u, delta, z: [B, D, L]; A: [D, N]; B, C: [B, N, L]; D, delta_bias: [D];
        initial_state: [B, D, N] or None (zeros).
    Returns:
        y [B, D, L] in u's dtype, and the final state [B, D, N] (fp32) if ``return_last_state``.
    """
    dtype_in, u, delta, A, B, C = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    b, d, L = u.shape
    n = A.shape[1]
    h = u.new_zeros(b, d, n) if initial_state is None else initial_state.float()
    dA = delta.unsqueeze(-1) * A[:, None]  # (b, d, L, n), <= 0
    dBu = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)  # (b, d, L, n)
    Ct = C.transpose(1, 2)  # (b, L, n)
    ys = []
    for s in range(0, L, chunk_size):
        e = min(L, s + chunk_size)
        cum = dA[:, :, s:e].cumsum(2)  # (b, d, c, n)
        c = e - s
        causal = torch.ones(c, c, dtype=torch.bool, device=u.device).tril()
        # seg[t, s'] = cum_t - cum_s' for s' <= t: the decay from step s' to step t
        seg = cum.unsqueeze(3) - cum.unsqueeze(2)  # (b, d, t, s', n)
        decay = torch.exp(seg.masked_fill(~causal[:, :, None], float("-inf")))
        hs = torch.einsum("bdtsn,bdsn->bdtn", decay, dBu[:, :, s:e]) + cum.exp() * h.unsqueeze(2)
        ys.append(torch.einsum("bdtn,btn->bdt", hs, Ct[:, s:e]))
        h = hs[:, :, -1]
    y = _finish(torch.cat(ys, dim=2), u, D, z, dtype_in)
    return (y, h) if return_last_state else y


def selective_scan_loop(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        return_last_state=False, initial_state=None):
    """Step-by-step recurrence; same signature as :func:`selective_scan_ref`. Test oracle only."""
    dtype_in, u, delta, A, B, C = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    b, d, L = u.shape
    h = u.new_zeros(b, d, A.shape[1]) if initial_state is None else initial_state.float()
    ys = []
    for t in range(L):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = _finish(torch.stack(ys, dim=2), u, D, z, dtype_in)
    return (y, h) if return_last_state else y


def selective_state_update_ref(state: Tensor, x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                               D: Tensor | None = None, z: Tensor | None = None,
                               delta_bias: Tensor | None = None, delta_softplus: bool = False) -> Tensor:
    """One decoding step, updating ``state`` in place (mamba_ssm ``selective_state_update`` signature).

    Args:
        state: [B, D, N]; x, delta, z: [B, D]; A: [D, N]; B, C: [B, N]; D, delta_bias: [D].
    Returns:
        y [B, D] in x's dtype.
    """
    dtype_in = x.dtype
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()
    if delta_softplus:
        delta = F.softplus(delta)
    xf = x.float()
    h = torch.exp(delta[..., None] * A.float()) * state.float() + (delta * xf)[..., None] * B.float()[:, None]
    state.copy_(h)
    y = (h * C.float()[:, None]).sum(-1)
    if D is not None:
        y = y + xf * D.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype_in)
