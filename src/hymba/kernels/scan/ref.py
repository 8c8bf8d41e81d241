"""Mamba-1 selective scan in plain PyTorch (fp32 state), with mamba_ssm's ``selective_scan_fn`` signature.

Recurrence per channel d and state n (Gu & Dao 2023, Alg. 2):
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t = C_t . h_t + D * u_t,  then y_t *= silu(z_t)

``selective_scan_ref`` runs the recurrence over time, vectorised over batch, channels and states, with one
fused op per step forward and backward: on a CPU the fastest plain-PyTorch form we found (the chunked
matrix form was 25x slower at B16 x L144). ``selective_scan_quadratic`` is the independent test oracle:
every output as a masked sum with decay exp(cum_t - cum_s) over chunks chained through the state (the
"attention-like" dual form), so it shares no loop with the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _up(t: Tensor) -> Tensor:
    """At least fp32 (fp64 stays fp64, so tests can compare exactly)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    dtype_in = u.dtype
    u, delta, A, B, C = (_up(t) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + _up(delta_bias)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return dtype_in, u, delta, A, B, C


def _finish(y: Tensor, u: Tensor, D, z, dtype_in) -> Tensor:
    if D is not None:
        y = y + u * _up(D)[:, None]
    if z is not None:
        y = y * F.silu(_up(z))
    return y.to(dtype_in)


def selective_scan_quadratic(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: Tensor | None = None,
    chunk_size: int = 16,
):
    """Chunked quadratic (matrix) form of the selective scan: the test oracle.

    Args:
        u, delta, z: [B, D, L]; A: [D, N]; B, C: [B, N, L]; D, delta_bias: [D];
        initial_state: [B, D, N] or None (zeros).
    Returns:
        y [B, D, L] in u's dtype, and the final state [B, D, N] (fp32) if ``return_last_state``.
    """
    dtype_in, u, delta, A, B, C = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    b, d, L = u.shape
    n = A.shape[1]
    h = u.new_zeros(b, d, n) if initial_state is None else _up(initial_state)
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


class _LinearRecurrence(torch.autograd.Function):
    """h_t = a_t * h_{t-1} + b_t over the leading (time) dim, one fused op per step each way.

    Backward is the same recurrence run in reverse: g_{t-1} += a_t * g_t, then da_t = g_t * h_{t-1}, db_t = g_t.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
        hs = torch.empty(b.shape, dtype=b.dtype, device=b.device)  # contiguous: out=hs[t] traces under compile
        h = h0
        for t in range(b.shape[0]):
            h = torch.addcmul(b[t], a[t], h, out=hs[t])
        ctx.save_for_backward(a, hs, h0)
        return hs

    @staticmethod
    def backward(ctx, g: Tensor):
        a, hs, h0 = ctx.saved_tensors
        g = g.clone()
        for t in range(g.shape[0] - 1, 0, -1):
            g[t - 1].addcmul_(a[t], g[t])
        h_prev = torch.cat([h0[None], hs[:-1]], dim=0)
        return g * h_prev, g, a[0] * g[0]


def selective_scan_ref(
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
    initial_state=None,
):
    """Selective scan by its recurrence (fp32 state); shapes as :func:`selective_scan_quadratic`.

    Decay and input terms are formed for all steps at once; only the first-order recurrence
    h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t runs step by step (with a hand-written backward).
    """
    dtype_in, u, delta, A, B, C = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    b, d, L = u.shape
    h0 = u.new_zeros(b, d, A.shape[1]) if initial_state is None else _up(initial_state)
    dt = delta.permute(2, 0, 1)[..., None]  # (L, b, d, 1)
    dA = torch.exp(dt * A)  # (L, b, d, n)
    dBu = (dt * u.permute(2, 0, 1)[..., None]) * B.permute(2, 0, 1)[:, :, None]  # (L, b, d, n)
    hs = _LinearRecurrence.apply(dA, dBu, h0)
    y = torch.einsum("lbdn,bnl->bdl", hs, C)
    y = _finish(y, u, D, z, dtype_in)
    return (y, hs[-1]) if return_last_state else y


def selective_state_update_ref(
    state: Tensor,
    x: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """One decoding step, updating ``state`` in place (mamba_ssm ``selective_state_update`` signature).

    Args:
        state: [B, D, N]; x, delta, z: [B, D]; A: [D, N]; B, C: [B, N]; D, delta_bias: [D].
    Returns:
        y [B, D] in x's dtype.
    """
    dtype_in = x.dtype
    delta = _up(delta)
    if delta_bias is not None:
        delta = delta + _up(delta_bias)
    if delta_softplus:
        delta = F.softplus(delta)
    xf = _up(x)
    h = torch.exp(delta[..., None] * _up(A)) * _up(state) + (delta * xf)[..., None] * _up(B)[:, None]
    state.copy_(h)
    y = (h * _up(C)[:, None]).sum(-1)
    if D is not None:
        y = y + xf * _up(D)
    if z is not None:
        y = y * F.silu(_up(z))
    return y.to(dtype_in)


def causal_conv1d_update_ref(
    conv_state: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None = None, silu: bool = True
) -> Tensor:
    """One decoding token of a depthwise causal conv (Mamba's conv1d), shifting ``conv_state`` in place.

    Args:
        conv_state: [B, D, K-1], the last K-1 inputs (oldest first); x: [B, D] this token's input;
        weight: [D, K] or [D, 1, K] (nn.Conv1d's); bias: [D]; silu: apply SiLU to the output.
    Returns:
        y [B, D] in x's dtype: sum_k weight[:, k] * inputs[:, k] + bias over the K inputs (the stored ones, then
        x), computed in fp32; ``conv_state`` then holds the last K-1 inputs.
    """
    inputs = torch.cat([conv_state, x[..., None].to(conv_state.dtype)], dim=-1)  # (B, D, K)
    y = (_up(inputs) * _up(weight.reshape(weight.shape[0], -1))).sum(-1)
    if bias is not None:
        y = y + _up(bias)
    conv_state.copy_(inputs[..., 1:])
    return (F.silu(y) if silu else y).to(x.dtype)


def causal_conv1d_ref(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, valid: Tensor | None = None, silu: bool = True
) -> Tensor:
    """Mamba-1's depthwise causal conv over a sequence, by PyTorch's conv1d (autograd included).

    Args:
        x: [B, S, D]; weight: [D, 1, K] (nn.Conv1d's) or [D, K]; bias: [D]; valid: [B, S] False at left padding
        (zeroed before the conv, so padding enters no output, and in the output); silu: SiLU on the output.
    Returns:
        u [B, S, D], contiguous (channels innermost), in x's dtype. conv1d writes [B, D, S]; the scan kernels read
        one step's channels at a time, so u is laid out as the model's other [B, S, D] activations: in a view of
        conv1d's output those loads (and the scan backward's du stores) were strided by S (in training, where this
        conv runs). Under torch.compile the copy fuses into the SiLU.
    """
    S, dim = x.shape[1], x.shape[2]
    w = weight.reshape(dim, 1, -1)
    if valid is not None:
        x = x.masked_fill(~valid[..., None], 0.0)
    u = F.conv1d(x.transpose(1, 2), w, bias, padding=w.shape[-1] - 1, groups=dim)[..., :S]
    if silu:
        u = F.silu(u)
    if valid is not None:
        u = u.masked_fill(~valid[:, None], 0.0)
    return u.transpose(1, 2).contiguous()
