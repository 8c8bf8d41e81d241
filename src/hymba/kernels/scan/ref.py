"""Mamba-1 selective scan in plain PyTorch (fp32 state), with mamba_ssm's ``selective_scan_fn`` signature.

Recurrence per channel d and state n (Gu & Dao 2023, Alg. 2):
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t = C_t . h_t + D * u_t,  then y_t *= silu(z_t)

``selective_scan_ref`` runs the recurrence over time, vectorised over batch, channels and states, one op per
step, in blocks of steps: a block's decays, inputs, outputs and gradients are formed at once, sized to stay in
a CPU core's cache (:data:`BLOCK_ELEMENTS`; on a GPU one block), with a hand-written backward. On a CPU that is
the fastest plain-PyTorch form we found: the chunked matrix form was 25x slower at B16 x L144 than a whole-sequence
recurrence (every [L, b, d, n] tensor formed at once, autograd for all but the recurrence), which in turn took
3.3-3.4x the blocked form's time forward + backward at the recall probes' batches, 1.3-2.1x at batch 8 and
about the same at test sizes (2 cores, fp32; ``python benchmarks/scan_cpu.py``,
benchmarks/results/2026-12-07-cpu-s23-scan-ref.md).

``selective_scan_quadratic`` is the independent test oracle: every output as a masked sum with decay
exp(cum_t - cum_s) over chunks chained through the state (the "attention-like" dual form), so it shares no loop
with the reference.
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


# (b, d, n) elements a block of steps holds: about 512 KB per fp32 tensor, so that a block's decays, inputs and
# states stay in cache while the recurrence runs over them (2 cores, `benchmarks/scan_cpu.py --blocks 15,19`:
# 2^15 and 2^19 took up to 1.4x and 1.6x its time, 2^19 0.8x at B8 L512; one block for all steps up to 2.8x)
BLOCK_ELEMENTS = 1 << 17


def _block_steps(b: int, d: int, n: int, L: int, device: torch.device | None = None) -> int:
    """Steps a block: cache-sized on a CPU; on a GPU all L in one block, where kernel launches (a few per block
    and per step), not cache, bound the time."""
    if device is not None and device.type != "cpu":
        return L
    return max(1, min(L, BLOCK_ELEMENTS // (b * d * n)))


def _time_major(*ts: Tensor) -> tuple[Tensor, ...]:
    """[b, x, L] -> contiguous [L, b, x]: one step's slice is then a contiguous [b, x] block."""
    return tuple(t.permute(2, 0, 1).contiguous() for t in ts)


def _scan_blocks(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h: Tensor, K: int, hs: Tensor | None):
    """The recurrence over time-major inputs (u, dt: [L, b, d]; B, C: [L, b, n]) from state h, in blocks of K
    steps; returns y [L, b, d] and the last state, and keeps every state in ``hs`` [L, b, d, n] when given."""
    L, b, d = u.shape
    n = A.shape[1]
    y = u.new_empty(L, b, d)
    for s in range(0, L, K):
        e = min(L, s + K)
        k = e - s
        a = torch.exp(dt[s:e, :, :, None] * A)  # (k, b, d, n) decays
        x = (dt[s:e] * u[s:e])[..., None] * B[s:e, :, None, :]  # (k, b, d, n) inputs
        states = hs[s:e] if hs is not None else torch.empty_like(x)
        for t in range(k):  # contiguous out= slices: traces under torch.compile
            h = torch.addcmul(x[t], a[t], h, out=states[t])
        y[s:e] = torch.bmm(states.view(k * b, d, n), C[s:e].view(k * b, n, 1)).view(k, b, d)
    return y, h


class _Scan(torch.autograd.Function):
    """y_t = C_t . h_t with h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t, over time-major inputs (see
    :func:`_scan_blocks`); outputs y [L, b, d] and the last state [b, d, n].

    Backward runs the recurrence in reverse, block by block, with the block's decays recomputed:
    g_t = C_t gy_t + exp(dt_{t+1} A) g_{t+1} (+ the last state's gradient at t = L - 1); then with
    ga_t = g_t h_{t-1} exp(dt_t A), the gradient of dt_t A:  dA = sum ga_t dt_t,
    ddt_t = sum_n ga_t A + u_t sum_n g_t B_t,  du_t = dt_t sum_n g_t B_t,  dB_t = sum_d g_t dt_t u_t,
    dC_t = sum_d gy_t h_t,  dh_0 = exp(dt_0 A) g_0.
    """

    @staticmethod
    def forward(ctx, u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor, K: int):
        hs = u.new_empty(*u.shape, A.shape[1])
        y, h = _scan_blocks(u, dt, A, B, C, h0, K, hs)
        ctx.K = K
        ctx.save_for_backward(u, dt, A, B, C, h0, hs)
        return y, h

    @staticmethod
    def backward(ctx, gy: Tensor, g_last: Tensor):
        u, dt, A, B, C, h0, hs = ctx.saved_tensors
        K = ctx.K
        L, b, d = u.shape
        n = A.shape[1]
        gy = gy.contiguous()
        carry = g_last.clone()  # exp(dt_{t+1} A) g_{t+1}, from the step after the block
        du, ddt = torch.empty_like(u), torch.empty_like(dt)
        dB, dC = torch.empty_like(B), torch.empty_like(C)
        dA = torch.zeros_like(A)
        for s in reversed(range(0, L, K)):
            e = min(L, s + K)
            k = e - s
            a = torch.exp(dt[s:e, :, :, None] * A)
            dC[s:e] = torch.bmm(gy[s:e].view(k * b, 1, d), hs[s:e].view(k * b, d, n)).view(k, b, n)
            g = torch.mul(gy[s:e, :, :, None], C[s:e, :, None, :])  # (k, b, d, n), contiguous
            for t in range(k - 1, -1, -1):
                g[t].add_(carry)
                carry = a[t] * g[t]
            h_prev = hs[s - 1 : e - 1] if s > 0 else torch.cat([h0[None], hs[: e - 1]])
            ga = g * h_prev * a
            gB = torch.bmm(g.view(k * b, d, n), B[s:e].view(k * b, n, 1)).view(k, b, d)
            ddt[s:e] = (ga * A).sum(-1) + gB * u[s:e]
            du[s:e] = gB * dt[s:e]
            dA += (ga * dt[s:e, :, :, None]).sum((0, 1))
            dB[s:e] = torch.bmm((dt[s:e] * u[s:e]).view(k * b, 1, d), g.view(k * b, d, n)).view(k, b, n)
        return du, ddt, dA, dB, dC, carry, None


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

    The recurrence h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t runs step by step in blocks of steps whose
    decays and inputs are formed at once (module docstring), with a hand-written backward; without a gradient
    to keep, only one block of states is held at a time.
    """
    dtype_in, u, delta, A, B, C = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    b, d, L = u.shape
    n = A.shape[1]
    h0 = u.new_zeros(b, d, n) if initial_state is None else _up(initial_state)
    K = _block_steps(b, d, n, L, u.device)
    ut, dtt, Bt, Ct = _time_major(u, delta, B, C)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C, h0)):
        y, h = _Scan.apply(ut, dtt, A, Bt, Ct, h0, K)
    else:
        y, h = _scan_blocks(ut, dtt, A, Bt, Ct, h0, K, None)
    y = _finish(y.permute(1, 2, 0), u, D, z, dtype_in)
    return (y, h) if return_last_state else y


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


def causal_conv1d_shifted(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, valid: Tensor | None = None, silu: bool = True
) -> Tensor:
    """:func:`causal_conv1d_ref`'s conv written as K shifted multiply-adds in the model's [B, S, D] layout:
    ``u[t] = sum_j w[j] * x[t - (K - 1) + j]`` (x zero before the start). No layout change, and only elementwise
    ops, which torch.compile fuses, forward and backward (the weight gradient a reduction over B x S), into a
    few kernels with the SiLU and its neighbours; conv1d is an opaque library call with [B, D, S] copies around
    it. The weight and bias are cast to x's dtype, as autocast does for conv1d. Same arguments and result."""
    S, dim = x.shape[1], x.shape[2]
    w = weight.reshape(dim, -1).to(x.dtype)
    K = w.shape[1]
    if valid is not None:
        x = x.masked_fill(~valid[..., None], 0.0)
    xp = F.pad(x, (0, 0, K - 1, 0))
    u = xp[:, K - 1 :] * w[:, K - 1]
    for j in range(K - 1):
        u = u + xp[:, j : j + S] * w[:, j]
    if bias is not None:
        u = u + bias.to(x.dtype)
    if silu:
        u = F.silu(u)
    if valid is not None:
        u = u.masked_fill(~valid[..., None], 0.0)
    return u
