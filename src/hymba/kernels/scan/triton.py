"""Mamba-1 selective scan in Triton, forward and backward, with no source build.

Shapes and semantics are those of :func:`hymba.kernels.scan.ref.selective_scan_ref` (the reference it is
tested against): u, delta, z [B, D, L]; A [D, N]; B, C [B, N, L]; D, delta_bias [D]; any strides (the
model passes [B, L, D] tensors transposed, which makes the per-step loads coalesced), no copies.

- One program per (batch row, block of channels) walks the sequence; the state [BLOCK_D, N] stays in fp32
  registers; delta bias + softplus, the D skip and the SiLU(z) gate are fused; inputs may be fp32, bf16 or fp16.
- Forward saves the state at every ``CHUNK``-th step (B x D x N x L / CHUNK floats), not every step.
- Backward walks the chunks in reverse: it recomputes a chunk's states from its saved start into a small
  per-program scratch buffer, then runs the adjoint recurrence backwards through it. Reductions over channels
  (dB, dC) and over the batch (dA, dD, d bias) go through per-block buffers summed afterwards in PyTorch: no
  float atomics, so gradients are deterministic.
- Registered as ``torch.library`` custom ops (``hymba::selective_scan_fwd`` / ``_bwd``) with fake
  implementations, so ``torch.compile`` traces through the scan without a graph break.

Under ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors (how CI tests them, at tiny shapes).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

CHUNK = 64  # steps between saved states
BLOCK_D = 32  # channels per program
UNROLL = 4  # time steps unrolled per loop iteration (CHUNK must be a multiple)
NUM_WARPS = 4  # per program (benchmarks/scan_kernel.py --sweep measures the alternatives)


@triton.jit
def _softplus(x):
    # as torch.nn.functional.softplus (threshold 20)
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _channel_params(
    A_ptr, D_ptr, bias_ptr, d, n, md, mn, s_Ad, s_An, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr
):
    """A [BLOCK, NP], D and delta bias [BLOCK] of this program's channels, fp32 (absent ones: zeros)."""
    A = tl.load(A_ptr + d[:, None] * s_Ad + n[None, :] * s_An, mask=md[:, None] & mn[None, :], other=0.0)
    Dv = tl.load(D_ptr + d, mask=md, other=0.0).to(tl.float32) if HAS_D else tl.zeros([BLOCK], tl.float32)
    bias = tl.load(bias_ptr + d, mask=md, other=0.0).to(tl.float32) if HAS_BIAS else tl.zeros([BLOCK], tl.float32)
    return A.to(tl.float32), Dv, bias


@triton.jit
def _step_inputs(
    u_ptr,
    dt_ptr,
    B_ptr,
    b,
    d,
    n,
    t,
    ok,
    md,
    mn,
    bias,
    s_ub,
    s_ud,
    s_ul,
    s_tb,
    s_td,
    s_tl,
    s_Bb,
    s_Bn,
    s_Bl,
    SOFTPLUS: tl.constexpr,
):
    """Step t's u [BLOCK], raw delta + bias, delta (0 where not ``ok``: the state stays) and B_t [NP], fp32."""
    m = md & ok
    u = tl.load(u_ptr + b * s_ub + d * s_ud + t * s_ul, mask=m, other=0.0).to(tl.float32)
    raw = tl.load(dt_ptr + b * s_tb + d * s_td + t * s_tl, mask=m, other=0.0).to(tl.float32) + bias
    dt = tl.where(ok, _softplus(raw) if SOFTPLUS else raw, 0.0)
    Bt = tl.load(B_ptr + b * s_Bb + n * s_Bn + t * s_Bl, mask=mn & ok, other=0.0).to(tl.float32)
    return u, raw, dt, Bt


@triton.jit
def _fwd_kernel(
    u_ptr,
    dt_ptr,
    z_ptr,
    out_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    bias_ptr,
    h0_ptr,
    last_ptr,
    chk_ptr,
    L,
    DIM,
    N,
    n_chunks,
    s_ub,
    s_ud,
    s_ul,
    s_tb,
    s_td,
    s_tl,
    s_zb,
    s_zd,
    s_zl,
    s_ob,
    s_od,
    s_ol,
    s_Ad,
    s_An,
    s_Bb,
    s_Bn,
    s_Bl,
    s_Cb,
    s_Cn,
    s_Cl,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr,
    BLOCK: tl.constexpr,
    NP: tl.constexpr,
    CH: tl.constexpr,
    UNROLL: tl.constexpr,
):
    b = tl.program_id(0)
    d = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    n = tl.arange(0, NP)
    md, mn = d < DIM, n < N
    mdn = md[:, None] & mn[None, :]
    A, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, d, n, md, mn, s_Ad, s_An, HAS_D, HAS_BIAS, BLOCK)
    state = (b * DIM + d[:, None]) * N + n[None, :]  # [B, D, N] contiguous
    if HAS_H0:
        h = tl.load(h0_ptr + state, mask=mdn, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK, NP], tl.float32)
    for c in range(0, n_chunks):
        tl.store(chk_ptr + ((b * DIM + d[:, None]) * n_chunks + c) * N + n[None, :], h, mask=mdn)
        for tb in range(c * CH, tl.minimum(c * CH + CH, L), UNROLL):
            for k in tl.static_range(UNROLL):  # unrolled: the steps' loads do not wait for the state
                t = tb + k
                ok = tl.full([1], t, tl.int32) < L  # a tensor (also under the interpreter)
                m = md & ok
                u, _, dt, Bt = _step_inputs(
                    u_ptr,
                    dt_ptr,
                    B_ptr,
                    b,
                    d,
                    n,
                    t,
                    ok,
                    md,
                    mn,
                    bias,
                    s_ub,
                    s_ud,
                    s_ul,
                    s_tb,
                    s_td,
                    s_tl,
                    s_Bb,
                    s_Bn,
                    s_Bl,
                    SOFTPLUS,
                )
                Ct = tl.load(C_ptr + b * s_Cb + n * s_Cn + t * s_Cl, mask=mn & ok, other=0.0).to(tl.float32)
                h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
                y = tl.sum(h * Ct[None, :], axis=1) + Dv * u
                if HAS_Z:
                    z = tl.load(z_ptr + b * s_zb + d * s_zd + t * s_zl, mask=m, other=0.0).to(tl.float32)
                    y = y * z * tl.sigmoid(z)
                tl.store(out_ptr + b * s_ob + d * s_od + t * s_ol, y.to(out_ptr.dtype.element_ty), mask=m)
    tl.store(last_ptr + state, h, mask=mdn)


@triton.jit
def _bwd_kernel(
    u_ptr,
    dt_ptr,
    z_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    bias_ptr,
    chk_ptr,
    dout_ptr,
    dlast_ptr,
    scratch_ptr,
    du_ptr,
    ddt_ptr,
    dz_ptr,
    dA_ptr,
    dD_ptr,
    dbias_ptr,
    dB_ptr,
    dC_ptr,
    dh0_ptr,
    L,
    DIM,
    N,
    n_chunks,
    n_blocks,
    s_ub,
    s_ud,
    s_ul,
    s_tb,
    s_td,
    s_tl,
    s_zb,
    s_zd,
    s_zl,
    s_gb,
    s_gd,
    s_gl,
    s_Ad,
    s_An,
    s_Bb,
    s_Bn,
    s_Bl,
    s_Cb,
    s_Cn,
    s_Cl,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr,
    BLOCK: tl.constexpr,
    NP: tl.constexpr,
    CH: tl.constexpr,
    UNROLL: tl.constexpr,
):
    b = tl.program_id(0)
    blk = tl.program_id(1)
    d = blk * BLOCK + tl.arange(0, BLOCK)
    n = tl.arange(0, NP)
    md, mn = d < DIM, n < N
    mdn = md[:, None] & mn[None, :]
    A, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, d, n, md, mn, s_Ad, s_An, HAS_D, HAS_BIAS, BLOCK)
    state = (b * DIM + d[:, None]) * N + n[None, :]
    # this program's scratch: CH + 1 states (the chunk's start, then the state after each of its steps)
    scratch = scratch_ptr + ((b * DIM + d[:, None]) * (CH + 1)) * N + n[None, :]
    if HAS_DLAST:
        dh = tl.load(dlast_ptr + state, mask=mdn, other=0.0).to(tl.float32)
    else:
        dh = tl.zeros([BLOCK, NP], tl.float32)
    dA = tl.zeros([BLOCK, NP], tl.float32)
    dD = tl.zeros([BLOCK], tl.float32)
    dbias = tl.zeros([BLOCK], tl.float32)
    part = (b * n_blocks + blk) * N  # row of this block in the [B, n_blocks, N, L] dB/dC partials
    for ci in range(0, n_chunks):
        c = n_chunks - 1 - ci
        t0 = c * CH
        t_end = tl.minimum(t0 + CH, L)
        h = tl.load(chk_ptr + ((b * DIM + d[:, None]) * n_chunks + c) * N + n[None, :], mask=mdn, other=0.0)
        tl.store(scratch, h, mask=mdn)
        for tb in range(t0, t_end, UNROLL):  # recompute the chunk's states
            for k in tl.static_range(UNROLL):
                t = tb + k
                ok = tl.full([1], t, tl.int32) < t_end
                u, _, dt, Bt = _step_inputs(
                    u_ptr,
                    dt_ptr,
                    B_ptr,
                    b,
                    d,
                    n,
                    t,
                    ok,
                    md,
                    mn,
                    bias,
                    s_ub,
                    s_ud,
                    s_ul,
                    s_tb,
                    s_td,
                    s_tl,
                    s_Bb,
                    s_Bn,
                    s_Bl,
                    SOFTPLUS,
                )
                h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
                tl.store(scratch + (t - t0 + 1) * N, h, mask=mdn & ok)
        for i in range(0, t_end - t0, UNROLL):  # then the adjoint, backwards through them
            for k in tl.static_range(UNROLL):
                t = t_end - 1 - i - k
                ok = tl.full([1], t, tl.int32) >= t0
                m = md & ok
                u, raw, dt, Bt = _step_inputs(
                    u_ptr,
                    dt_ptr,
                    B_ptr,
                    b,
                    d,
                    n,
                    t,
                    ok,
                    md,
                    mn,
                    bias,
                    s_ub,
                    s_ud,
                    s_ul,
                    s_tb,
                    s_td,
                    s_tl,
                    s_Bb,
                    s_Bn,
                    s_Bl,
                    SOFTPLUS,
                )
                Ct = tl.load(C_ptr + b * s_Cb + n * s_Cn + t * s_Cl, mask=mn & ok, other=0.0).to(tl.float32)
                g = tl.load(dout_ptr + b * s_gb + d * s_gd + t * s_gl, mask=m, other=0.0).to(tl.float32)
                h_t = tl.load(scratch + (t - t0 + 1) * N, mask=mdn & ok, other=0.0)
                h_prev = tl.load(scratch + (t - t0) * N, mask=mdn & ok, other=0.0)
                if HAS_Z:
                    z = tl.load(z_ptr + b * s_zb + d * s_zd + t * s_zl, mask=m, other=0.0).to(tl.float32)
                    sz = tl.sigmoid(z)
                    y = tl.sum(h_t * Ct[None, :], axis=1) + Dv * u
                    dz = g * y * sz * (1.0 + z * (1.0 - sz))
                    tl.store(dz_ptr + (b * DIM + d) * L + t, dz, mask=m)
                    dy = g * z * sz
                else:
                    dy = g
                dD += dy * u
                tl.store(dC_ptr + (part + n) * L + t, tl.sum(dy[:, None] * h_t, axis=0), mask=mn & ok)
                dh += dy[:, None] * Ct[None, :]  # now the whole adjoint of h_t
                a = tl.exp(dt[:, None] * A)
                ddt = tl.where(ok, tl.sum(dh * (h_prev * a * A + u[:, None] * Bt[None, :]), axis=1), 0.0)
                dA += dh * h_prev * a * dt[:, None]
                du = dy * Dv + dt * tl.sum(dh * Bt[None, :], axis=1)
                tl.store(dB_ptr + (part + n) * L + t, tl.sum(dh * (dt * u)[:, None], axis=0), mask=mn & ok)
                dh = dh * a
                if SOFTPLUS:
                    ddt = ddt * tl.sigmoid(raw)
                dbias += ddt
                tl.store(du_ptr + (b * DIM + d) * L + t, du, mask=m)
                tl.store(ddt_ptr + (b * DIM + d) * L + t, ddt, mask=m)
    tl.store(dA_ptr + state, dA, mask=mdn)
    tl.store(dD_ptr + b * DIM + d, dD, mask=md)
    tl.store(dbias_ptr + b * DIM + d, dbias, mask=md)
    tl.store(dh0_ptr + state, dh, mask=mdn)


def _s3(t: Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _opt(t: Tensor | None, like: Tensor) -> Tensor:
    """Absent optional inputs travel through the custom ops as empty tensors."""
    return like.new_empty(0) if t is None else t


@torch.library.custom_op("hymba::selective_scan_fwd", mutates_args=())
def _scan_fwd(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    z: Tensor,
    delta_bias: Tensor,
    h0: Tensor,
    softplus: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """-> out [B, D, L] (u's dtype), last state [B, D, N] fp32, saved chunk states [B, D, n_chunks, N] fp32."""
    b, dim, L = u.shape
    N = A.shape[1]
    if CHUNK % UNROLL:
        raise ValueError(f"scan CHUNK={CHUNK} must be a multiple of UNROLL={UNROLL}")
    n_chunks = max(1, triton.cdiv(L, CHUNK))
    out = torch.empty(b, dim, L, device=u.device, dtype=u.dtype)
    last = torch.empty(b, dim, N, device=u.device, dtype=torch.float32)
    chk = torch.empty(b, dim, n_chunks, N, device=u.device, dtype=torch.float32)
    has_z = z.numel() > 0
    zz = z if has_z else u
    h0c = h0.float().contiguous() if h0.numel() else last
    _fwd_kernel[(b, triton.cdiv(dim, BLOCK_D))](
        u,
        delta,
        zz,
        out,
        A,
        B,
        C,
        D,
        delta_bias,
        h0c,
        last,
        chk,
        L,
        dim,
        N,
        n_chunks,
        *_s3(u),
        *_s3(delta),
        *_s3(zz),
        *_s3(out),
        A.stride(0),
        A.stride(1),
        *_s3(B),
        *_s3(C),
        HAS_D=D.numel() > 0,
        HAS_Z=has_z,
        HAS_BIAS=delta_bias.numel() > 0,
        SOFTPLUS=softplus,
        HAS_H0=h0.numel() > 0,
        BLOCK=BLOCK_D,
        NP=triton.next_power_of_2(N),
        CH=CHUNK,
        UNROLL=UNROLL,
        num_warps=NUM_WARPS,
    )
    return out, last, chk


@_scan_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, h0, softplus):
    b, dim, L = u.shape
    N = A.shape[1]
    n_chunks = max(1, -(-L // CHUNK))
    return (
        u.new_empty(b, dim, L),
        u.new_empty(b, dim, N, dtype=torch.float32),
        u.new_empty(b, dim, n_chunks, N, dtype=torch.float32),
    )


@torch.library.custom_op("hymba::selective_scan_bwd", mutates_args=())
def _scan_bwd(
    dout: Tensor,
    dlast: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    z: Tensor,
    delta_bias: Tensor,
    chk: Tensor,
    softplus: bool,
) -> list[Tensor]:
    """-> du, ddelta, dA, dB, dC, dD, dz, d delta_bias, d h0 (fp32; absent inputs get empty gradients)."""
    b, dim, L = u.shape
    N = A.shape[1]
    n_chunks, n_blocks = chk.shape[2], triton.cdiv(dim, BLOCK_D)
    f32 = dict(device=u.device, dtype=torch.float32)
    du, ddt = torch.empty(b, dim, L, **f32), torch.empty(b, dim, L, **f32)
    has_z = z.numel() > 0
    dz = torch.empty(b, dim, L, **f32) if has_z else du.new_empty(0)
    dA, dh0 = torch.empty(b, dim, N, **f32), torch.empty(b, dim, N, **f32)
    dD, dbias = torch.empty(b, dim, **f32), torch.empty(b, dim, **f32)
    dB, dC = torch.empty(b, n_blocks, N, L, **f32), torch.empty(b, n_blocks, N, L, **f32)
    scratch = torch.empty(b, dim, CHUNK + 1, N, **f32)
    zz = z if has_z else u
    _bwd_kernel[(b, n_blocks)](
        u,
        delta,
        zz,
        A,
        B,
        C,
        D,
        delta_bias,
        chk,
        dout,
        dlast if dlast.numel() else dh0,
        scratch,
        du,
        ddt,
        dz if has_z else du,
        dA,
        dD,
        dbias,
        dB,
        dC,
        dh0,
        L,
        dim,
        N,
        n_chunks,
        n_blocks,
        *_s3(u),
        *_s3(delta),
        *_s3(zz),
        *_s3(dout),
        A.stride(0),
        A.stride(1),
        *_s3(B),
        *_s3(C),
        HAS_D=D.numel() > 0,
        HAS_Z=has_z,
        HAS_BIAS=delta_bias.numel() > 0,
        SOFTPLUS=softplus,
        HAS_DLAST=dlast.numel() > 0,
        BLOCK=BLOCK_D,
        NP=triton.next_power_of_2(N),
        CH=CHUNK,
        UNROLL=UNROLL,
        num_warps=NUM_WARPS,
    )
    # absent inputs get distinct empty gradients (custom-op outputs must not alias)
    return [
        du,
        ddt,
        dA.sum(0),
        dB.sum(1),
        dC.sum(1),
        dD.sum(0) if D.numel() else du.new_empty(0),
        dz,
        dbias.sum(0) if delta_bias.numel() else du.new_empty(0),
        dh0,
    ]


@_scan_bwd.register_fake
def _(dout, dlast, u, delta, A, B, C, D, z, delta_bias, chk, softplus):
    b, dim, L = u.shape
    N = A.shape[1]

    def f(*shape):
        return u.new_empty(*shape, dtype=torch.float32)

    return [
        f(b, dim, L),
        f(b, dim, L),
        f(dim, N),
        f(b, N, L),
        f(b, N, L),
        f(dim) if D.numel() else f(0),
        f(b, dim, L) if z.numel() else f(0),
        f(dim) if delta_bias.numel() else f(0),
        f(b, dim, N),
    ]


def _setup(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, h0, softplus = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2])
    ctx.softplus, ctx.has_h0 = softplus, h0.numel() > 0


def _backward(ctx, dout, dlast, _dchk):
    u, delta, A, B, C, D, z, delta_bias, chk = ctx.saved_tensors
    dlast = dlast.float().contiguous() if dlast is not None else u.new_empty(0)  # often an expanded tensor
    du, ddt, dA, dB, dC, dD, dz, dbias, dh0 = _scan_bwd(
        dout, dlast, u, delta, A, B, C, D, z, delta_bias, chk, ctx.softplus
    )

    def cast(g, like):
        return g.to(like.dtype) if like.numel() else None

    return (
        du.to(u.dtype),
        ddt.to(delta.dtype),
        dA.to(A.dtype),
        dB.to(B.dtype),
        dC.to(C.dtype),
        cast(dD, D),
        cast(dz, z),
        cast(dbias, delta_bias),
        dh0 if ctx.has_h0 else None,
        None,
    )


_scan_fwd.register_autograd(_backward, setup_context=_setup)


def selective_scan_triton(
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
):
    """The selective scan of :func:`~hymba.kernels.scan.ref.selective_scan_ref`, in Triton."""
    out, last, _ = _scan_fwd(
        u, delta, A, B, C, _opt(D, u), _opt(z, u), _opt(delta_bias, u), _opt(initial_state, u), delta_softplus
    )
    return (out, last) if return_last_state else out
