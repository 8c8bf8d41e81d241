"""Mamba-1 selective scan in Triton, forward and backward, with no source build.

Shapes and semantics are those of :func:`hymba.kernels.scan.ref.selective_scan_ref` (the reference it is
tested against): u, delta, z [B, D, L]; A [D, N]; B, C [B, N, L]; D, delta_bias [D]; any strides (the
model passes [B, L, D] tensors transposed, which makes the per-step loads coalesced), no copies.

The state [BLOCK_D, N] of a program's channels stays in fp32 registers; delta bias + softplus, the D skip and
the SiLU(z) gate are fused; inputs may be fp32, bf16 or fp16. Both implementations save the state at every
``CHUNK``-th step (B x D x N x L / CHUNK floats), not every step, and recompute a chunk's states in backward.
``IMPL`` picks one (all save the same chunk states, so any backward serves any forward):

- ``sequential``: one program per (batch row, block of channels) walks the whole sequence. Backward walks the
  chunks in reverse: it recomputes a chunk's states from its saved start into a small per-program scratch
  buffer, then runs the adjoint recurrence backwards through it.
- ``chunked``: parallel over time chunks too, with state passing (as Mamba-2's SSD kernels): the recurrence
  h_t = a_t h_{t-1} + b_t is linear, so a chunk's end state is (its decay prod a_t = exp(A sum delta)) x (its
  start state) + (its end state from a zero start). Forward: (1) one program per (block, chunk, batch row) runs
  its chunk from zero, keeping the end state and sum delta; (2) a short sequential pass per (block, batch row)
  chains the chunks into their true start states (saved for backward) and the last state; (3) one program per
  chunk reruns it from its true start and writes y. Backward does the same for the adjoint, whose recurrence
  g_t = a_{t+1} g_{t+1} + dy_t C_t is linear too, in reverse time: the local adjoint per chunk, the reverse pass
  for each chunk's incoming adjoint (and d h0), then one program per chunk (a persistent grid, so the scratch
  does not grow with B x D x L) that recomputes the chunk's states and writes every gradient. About 2x the
  arithmetic of ``sequential`` for L / CHUNK times as many programs.

Reductions over channels (dB, dC), over the batch and over chunks (dA, dD, d bias) go through per-block buffers
summed afterwards in PyTorch: no float atomics, so gradients are deterministic. The kernels are registered as
``torch.library`` custom ops (``hymba::selective_scan_fwd`` / ``_bwd``) with fake implementations, so
``torch.compile`` traces through the scan without a graph break.

Under ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors (how CI tests them, at tiny shapes).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

IMPL = "chunked"  # or "sequential"; chunked: fwd+bwd 2.0 vs 2.3 ms, row 13 95K vs 91K tok/s (H200, session 9)
CHUNK = 64  # steps between saved states (the time chunk of the chunked implementation)
UNROLL = 4  # time steps unrolled per loop iteration (CHUNK must be a multiple)
BWD_STAGES = 1  # software-pipeline stages of the backward's time loops (tl.range num_stages; 1: not pipelined):
# 2 pipelines its scratch and input loads through cp.async, and measured fwd+bwd 3-7% slower (chunked) and 50%
# slower (sequential) on an H100 (session 21)
BLOCK_D = 32  # channels per program, sequential
NUM_WARPS = 4  # per program, sequential (benchmarks/scan_kernel.py --sweep measures the alternatives)
SEQUENTIAL_FWD_STAGES = 1  # pipeline stages of the sequential forward's time loop: 2 measured 18% slower at
# 32 channels x 4 warps (H100, session 21); 2 pipelines the loads only at 64 channels a warp (see below)
CHUNKED_BLOCK_D = 32  # channels per program, chunked backward (16 was 15-24% slower, H200 session 13)
CHUNKED_WARPS = 1  # per program, chunked
CHUNKED_FWD_BLOCK_D = 64  # channels per program, chunked forward
CHUNKED_FWD_WARPS = 1  # per program, chunked forward
CHUNKED_FWD_STAGES = 2  # pipeline stages of the chunked forward's time loop: with 64 channels a warp its u, delta
# and z loads (4 bytes a thread in bf16) go through cp.async, issued a loop iteration ahead; with 32 (2 bytes a
# thread) Triton leaves them unpipelined. 64 channels + 2 stages: forward 13-25% faster than 32 + 1 (H100,
# session 21, benchmarks/results/2026-12-07-h100-s21.md), needs channels-contiguous inputs (the model's layout)
BWD_PROGRAMS_PER_SM = 16  # chunked backward: persistent programs (scratch slots) per SM
BWD_MAXNREG = 128  # registers a thread of the backward kernels may use (0: the compiler's choice, 255 for the
# chunked backward on sm_90, so 8 one-warp programs fit an SM). 128 fits 16 and spills, and the chunked backward
# kernel took 822 against 927 us (ncu), fwd+bwd 1.61 against 1.84 ms (B16 D1024 L512) and 5.12 against 5.27
# (B8 D2048 L2048); 168: 1.65 and 5.71 (H100, session 22, benchmarks/results/2026-12-07-h100-s22.md)
IMPLS = ("sequential", "chunked")
LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _softplus(x):
    # as torch.nn.functional.softplus (threshold 20)
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _channel_vector(ptr, d, md, HAS: tl.constexpr, BLOCK: tl.constexpr):
    """An optional per-channel input (D, delta bias) at this program's channels, fp32; zeros when absent."""
    return tl.load(ptr + d, mask=md, other=0.0).to(tl.float32) if HAS else tl.zeros([BLOCK], tl.float32)


@triton.jit
def _channel_params(
    A_ptr, D_ptr, bias_ptr, d, n, md, mn, s_Ad, s_An, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr
):
    """A [BLOCK, NP], D and delta bias [BLOCK] of this program's channels, fp32 (absent ones: zeros)."""
    A = tl.load(A_ptr + d[:, None] * s_Ad + n[None, :] * s_An, mask=md[:, None] & mn[None, :], other=0.0)
    Dv = _channel_vector(D_ptr, d, md, HAS_D, BLOCK)
    return A.to(tl.float32), Dv, _channel_vector(bias_ptr, d, md, HAS_BIAS, BLOCK)


@triton.jit
def _delta(dt_ptr, b, d, t, ok, m, bias, s_tb, s_td, s_tl, SOFTPLUS: tl.constexpr):
    """Step t's raw delta + bias and delta (0 where not ``ok``: the state stays), fp32 [BLOCK]."""
    raw = tl.load(dt_ptr + b * s_tb + d * s_td + t * s_tl, mask=m, other=0.0).to(tl.float32) + bias
    return raw, tl.where(ok, _softplus(raw) if SOFTPLUS else raw, 0.0)


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
    raw, dt = _delta(dt_ptr, b, d, t, ok, m, bias, s_tb, s_td, s_tl, SOFTPLUS)
    Bt = tl.load(B_ptr + b * s_Bb + n * s_Bn + t * s_Bl, mask=mn & ok, other=0.0).to(tl.float32)
    return u, raw, dt, Bt


@triton.jit
def _fwd_steps(
    h,
    t0,
    t_end,
    b,
    d,
    n,
    md,
    mn,
    A,
    Dv,
    bias,
    u_ptr,
    dt_ptr,
    z_ptr,
    out_ptr,
    B_ptr,
    C_ptr,
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
    s_Bb,
    s_Bn,
    s_Bl,
    s_Cb,
    s_Cn,
    s_Cl,
    HAS_Z: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    WRITE_Y: tl.constexpr,
    UNROLL: tl.constexpr,
    STAGES: tl.constexpr,
):
    """Steps t0 <= t < t_end from state h, writing y if ``WRITE_Y`` -> (the state after them, their sum of delta).
    The state and A are [NP, BLOCK] (transposed) and the chunk states are saved channels-contiguous: with 32
    channels per warp this forward measured 9-15% faster than with [BLOCK, NP] states (H200, session 13;
    benchmarks/results/2026-12-03-h200-s13.md)."""
    dt_sum = tl.zeros_like(bias)
    A2 = A * LOG2E  # exp(dt A) as exp2(dt A2): one multiply fewer per state and step
    for tb in tl.range(t0, t_end, UNROLL, num_stages=STAGES):
        for k in tl.static_range(UNROLL):  # unrolled: the steps' loads do not wait for the state
            t = tb + k
            ok = tl.full([1], t, tl.int32) < t_end  # a tensor (also under the interpreter)
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
            h = tl.math.exp2(dt[None, :] * A2) * h + (dt * u)[None, :] * Bt[:, None]
            dt_sum += dt
            if WRITE_Y:
                Ct = tl.load(C_ptr + b * s_Cb + n * s_Cn + t * s_Cl, mask=mn & ok, other=0.0).to(tl.float32)
                y = tl.sum(h * Ct[:, None], axis=0) + Dv * u
                if HAS_Z:
                    z = tl.load(z_ptr + b * s_zb + d * s_zd + t * s_zl, mask=m, other=0.0).to(tl.float32)
                    y = y * z * tl.sigmoid(z)
                tl.store(out_ptr + b * s_ob + d * s_od + t * s_ol, y.to(out_ptr.dtype.element_ty), mask=m)
    return h, dt_sum


@triton.jit
def _bwd_chunk(
    h,
    dh,
    dA,
    dD,
    dbias,
    t0,
    t_end,
    scratch,
    s_scr,
    part,
    b,
    d,
    n,
    md,
    mn,
    A,
    Dv,
    bias,
    u_ptr,
    dt_ptr,
    z_ptr,
    B_ptr,
    C_ptr,
    dout_ptr,
    du_ptr,
    ddt_ptr,
    dz_ptr,
    dB_ptr,
    dC_ptr,
    N,
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
    s_Bb,
    s_Bn,
    s_Bl,
    s_Cb,
    s_Cn,
    s_Cl,
    s_dub,
    s_dud,
    s_dul,
    s_dtb,
    s_dtd,
    s_dtl,
    s_dzb,
    s_dzd,
    s_dzl,
    HAS_Z: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    UNROLL: tl.constexpr,
    STAGES: tl.constexpr,
):
    """One chunk's gradients, from its start state h and the adjoint dh flowing into its last state from later
    steps: its states are recomputed into ``scratch`` (step s at ``scratch + s * s_scr``), then the adjoint runs
    backwards through them, writing du, d delta, dz and this block's dB, dC partials (rows ``part + t`` of a
    [., L, N] buffer) -> (the adjoint flowing into the chunk's start state, dA, dD, d bias accumulated)."""
    mdn = md[:, None] & mn[None, :]
    A2 = A * LOG2E  # exp(dt A) as exp2(dt A2)
    tl.store(scratch, h, mask=mdn)
    # recompute the chunk's states (the last one stays in h, not stored)
    for tb in tl.range(t0, t_end, UNROLL, num_stages=STAGES):
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
            h = tl.math.exp2(dt[:, None] * A2) * h + (dt * u)[:, None] * Bt[None, :]
            tl.store(scratch + (t - t0 + 1) * s_scr, h, mask=mdn & (tl.full([1], t + 1, tl.int32) < t_end))
    h_t = h  # the state after step t: carried down from the previous (later) step, one scratch read per step
    for i in tl.range(0, t_end - t0, UNROLL, num_stages=STAGES):  # then the adjoint, backwards through them
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
            h_prev = tl.load(scratch + (t - t0) * s_scr, mask=mdn & ok, other=0.0)
            if HAS_Z:
                z = tl.load(z_ptr + b * s_zb + d * s_zd + t * s_zl, mask=m, other=0.0).to(tl.float32)
                sz = tl.sigmoid(z)
                y = tl.sum(h_t * Ct[None, :], axis=1) + Dv * u
                dz = g * y * sz * (1.0 + z * (1.0 - sz))
                tl.store(dz_ptr + b * s_dzb + d * s_dzd + t * s_dzl, dz, mask=m)
                dy = g * z * sz
            else:
                dy = g
            dD += dy * u
            tl.store(dC_ptr + (part + t) * N + n, tl.sum(dy[:, None] * h_t, axis=0), mask=mn & ok)
            dh += dy[:, None] * Ct[None, :]  # now the whole adjoint of h_t
            a = tl.math.exp2(dt[:, None] * A2)
            ddt = tl.where(ok, tl.sum(dh * (h_prev * a * A + u[:, None] * Bt[None, :]), axis=1), 0.0)
            dA += dh * h_prev * a * dt[:, None]
            du = dy * Dv + dt * tl.sum(dh * Bt[None, :], axis=1)
            tl.store(dB_ptr + (part + t) * N + n, tl.sum(dh * (dt * u)[:, None], axis=0), mask=mn & ok)
            dh = dh * a
            h_t = h_prev
            if SOFTPLUS:
                ddt = ddt * tl.sigmoid(raw)
            dbias += ddt
            tl.store(du_ptr + b * s_dub + d * s_dud + t * s_dul, du, mask=m)
            tl.store(ddt_ptr + b * s_dtb + d * s_dtd + t * s_dtl, ddt, mask=m)
    return dh, dA, dD, dbias


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
    STAGES: tl.constexpr,
):
    """Sequential forward: one program per (batch row, channel block) walks all chunks."""
    b = tl.program_id(0)
    d = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    n = tl.arange(0, NP)
    md, mn = d < DIM, n < N
    mdn = mn[:, None] & md[None, :]  # [NP, BLOCK]: see _fwd_steps
    A, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, d, n, md, mn, s_Ad, s_An, HAS_D, HAS_BIAS, BLOCK)
    A = tl.trans(A)
    state = (b * DIM + d[None, :]) * N + n[:, None]  # [B, D, N] contiguous
    if HAS_H0:
        h = tl.load(h0_ptr + state, mask=mdn, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([NP, BLOCK], tl.float32)
    for c in range(0, n_chunks):
        tl.store(chk_ptr + ((b * n_chunks + c) * N + n[:, None]) * DIM + d[None, :], h, mask=mdn)
        h, _ = _fwd_steps(
            h,
            c * CH,
            tl.minimum(c * CH + CH, L),
            b,
            d,
            n,
            md,
            mn,
            A,
            Dv,
            bias,
            u_ptr,
            dt_ptr,
            z_ptr,
            out_ptr,
            B_ptr,
            C_ptr,
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
            s_Bb,
            s_Bn,
            s_Bl,
            s_Cb,
            s_Cn,
            s_Cl,
            HAS_Z,
            SOFTPLUS,
            True,
            UNROLL,
            STAGES,
        )
    tl.store(last_ptr + state, h, mask=mdn)


@triton.jit
def _fwd_chunk_kernel(
    u_ptr,
    dt_ptr,
    z_ptr,
    out_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    bias_ptr,
    chk_ptr,
    loc_ptr,
    dtsum_ptr,
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
    FINAL: tl.constexpr,
    BLOCK: tl.constexpr,
    NP: tl.constexpr,
    CH: tl.constexpr,
    UNROLL: tl.constexpr,
    STAGES: tl.constexpr,
):
    """Chunked forward, one program per (channel block, chunk, batch row). Not ``FINAL`` (phase 1): the chunk
    from a zero state -> its end state and sum of delta. ``FINAL`` (phase 3): from its true start state (in
    ``chk``) -> y."""
    c = tl.program_id(1)
    b = tl.program_id(2)
    d = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    n = tl.arange(0, NP)
    md, mn = d < DIM, n < N
    mdn = mn[:, None] & md[None, :]  # [NP, BLOCK]: see _fwd_steps
    A, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, d, n, md, mn, s_Ad, s_An, HAS_D, HAS_BIAS, BLOCK)
    A = tl.trans(A)
    row = ((b * n_chunks + c) * N + n[:, None]) * DIM + d[None, :]  # [B, n_chunks, N, D]
    if FINAL:
        h = tl.load(chk_ptr + row, mask=mdn, other=0.0)
    else:
        h = tl.zeros([NP, BLOCK], tl.float32)
    h, dt_sum = _fwd_steps(
        h,
        c * CH,
        tl.minimum(c * CH + CH, L),
        b,
        d,
        n,
        md,
        mn,
        A,
        Dv,
        bias,
        u_ptr,
        dt_ptr,
        z_ptr,
        out_ptr,
        B_ptr,
        C_ptr,
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
        s_Bb,
        s_Bn,
        s_Bl,
        s_Cb,
        s_Cn,
        s_Cl,
        HAS_Z,
        SOFTPLUS,
        FINAL,
        UNROLL,
        STAGES,
    )
    if not FINAL:
        tl.store(loc_ptr + row, h, mask=mdn)
        tl.store(dtsum_ptr + (b * n_chunks + c) * DIM + d, dt_sum, mask=md)


@triton.jit
def _chunk_pass_kernel(
    A_ptr,
    loc_ptr,
    dtsum_ptr,
    init_ptr,
    starts_ptr,
    end_ptr,
    DIM,
    N,
    n_chunks,
    s_Ad,
    s_An,
    s_xb,
    s_xd,
    s_xc,
    s_xn,
    HAS_INIT: tl.constexpr,
    REVERSE: tl.constexpr,
    BLOCK: tl.constexpr,
    NP: tl.constexpr,
):
    """Chains the chunks of a linear recurrence x_out = exp(A sum delta) x_in + loc, one program per (channel
    block, batch row): writes each chunk's incoming x (``starts``) and the last outgoing one (``end``). Forward
    in time for the state, in reverse (``REVERSE``) for the adjoint."""
    b = tl.program_id(1)
    d = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    n = tl.arange(0, NP)
    md, mn = d < DIM, n < N
    mdn = md[:, None] & mn[None, :]
    A = tl.load(A_ptr + d[:, None] * s_Ad + n[None, :] * s_An, mask=mdn, other=0.0).to(tl.float32)
    state = (b * DIM + d[:, None]) * N + n[None, :]
    if HAS_INIT:
        x = tl.load(init_ptr + state, mask=mdn, other=0.0).to(tl.float32)
    else:
        x = tl.zeros([BLOCK, NP], tl.float32)
    for i in range(0, n_chunks):
        if REVERSE:
            c = n_chunks - 1 - i
        else:
            c = i
        row = b * s_xb + d[:, None] * s_xd + c * s_xc + n[None, :] * s_xn  # any layout of [B, D, n_chunks, N]
        tl.store(starts_ptr + row, x, mask=mdn)
        dt_sum = tl.load(dtsum_ptr + (b * n_chunks + c) * DIM + d, mask=md, other=0.0)
        x = tl.exp(dt_sum[:, None] * A) * x + tl.load(loc_ptr + row, mask=mdn, other=0.0)
    tl.store(end_ptr + state, x, mask=mdn)


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
    s_dub,
    s_dud,
    s_dul,
    s_dtb,
    s_dtd,
    s_dtl,
    s_dzb,
    s_dzd,
    s_dzl,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr,
    BLOCK: tl.constexpr,
    NP: tl.constexpr,
    CH: tl.constexpr,
    UNROLL: tl.constexpr,
    STAGES: tl.constexpr,
):
    """Sequential backward: one program per (batch row, channel block) walks the chunks in reverse."""
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
    for ci in range(0, n_chunks):
        c = n_chunks - 1 - ci
        h = tl.load(chk_ptr + ((b * n_chunks + c) * N + n[None, :]) * DIM + d[:, None], mask=mdn, other=0.0)
        dh, dA, dD, dbias = _bwd_chunk(
            h,
            dh,
            dA,
            dD,
            dbias,
            c * CH,
            tl.minimum(c * CH + CH, L),
            scratch,
            N,
            (b * n_blocks + blk) * L,
            b,
            d,
            n,
            md,
            mn,
            A,
            Dv,
            bias,
            u_ptr,
            dt_ptr,
            z_ptr,
            B_ptr,
            C_ptr,
            dout_ptr,
            du_ptr,
            ddt_ptr,
            dz_ptr,
            dB_ptr,
            dC_ptr,
            N,
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
            s_Bb,
            s_Bn,
            s_Bl,
            s_Cb,
            s_Cn,
            s_Cl,
            s_dub,
            s_dud,
            s_dul,
            s_dtb,
            s_dtd,
            s_dtl,
            s_dzb,
            s_dzd,
            s_dzl,
            HAS_Z,
            SOFTPLUS,
            UNROLL,
            STAGES,
        )
    tl.store(dA_ptr + state, dA, mask=mdn)
    tl.store(dD_ptr + b * DIM + d, dD, mask=md)
    tl.store(dbias_ptr + b * DIM + d, dbias, mask=md)
    tl.store(dh0_ptr + state, dh, mask=mdn)


@triton.jit
def _bwd_chunk_local_kernel(
    dt_ptr,
    z_ptr,
    A_ptr,
    C_ptr,
    bias_ptr,
    dout_ptr,
    loc_ptr,
    dtsum_ptr,
    L,
    DIM,
    N,
    n_chunks,
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
    s_Cb,
    s_Cn,
    s_Cl,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    BLOCK: tl.constexpr,
    NP: tl.constexpr,
    CH: tl.constexpr,
    UNROLL: tl.constexpr,
    STAGES: tl.constexpr,
):
    """Chunked backward, phase 1, one program per (channel block, chunk, batch row): the adjoint
    g_t = a_{t+1} g_{t+1} + dy_t C_t through the chunk from zero -> a_{t0} g_{t0} (its share of the adjoint
    flowing into the previous chunk) and the chunk's sum of delta."""
    c = tl.program_id(1)
    b = tl.program_id(2)
    d = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    n = tl.arange(0, NP)
    md, mn = d < DIM, n < N
    mdn = md[:, None] & mn[None, :]
    A, _, bias = _channel_params(A_ptr, A_ptr, bias_ptr, d, n, md, mn, s_Ad, s_An, False, HAS_BIAS, BLOCK)
    t0 = c * CH
    t_end = tl.minimum(t0 + CH, L)
    g = tl.zeros([BLOCK, NP], tl.float32)
    dt_sum = tl.zeros([BLOCK], tl.float32)
    A2 = A * LOG2E
    for i in tl.range(0, t_end - t0, UNROLL, num_stages=STAGES):
        for k in tl.static_range(UNROLL):
            t = t_end - 1 - i - k
            ok = tl.full([1], t, tl.int32) >= t0
            m = md & ok
            _, dt = _delta(dt_ptr, b, d, t, ok, m, bias, s_tb, s_td, s_tl, SOFTPLUS)
            Ct = tl.load(C_ptr + b * s_Cb + n * s_Cn + t * s_Cl, mask=mn & ok, other=0.0).to(tl.float32)
            dy = tl.load(dout_ptr + b * s_gb + d * s_gd + t * s_gl, mask=m, other=0.0).to(tl.float32)
            if HAS_Z:
                z = tl.load(z_ptr + b * s_zb + d * s_zd + t * s_zl, mask=m, other=0.0).to(tl.float32)
                dy = dy * z * tl.sigmoid(z)
            g = (g + dy[:, None] * Ct[None, :]) * tl.math.exp2(dt[:, None] * A2)
            dt_sum += dt
    row = ((b * DIM + d[:, None]) * n_chunks + c) * N + n[None, :]
    tl.store(loc_ptr + row, g, mask=mdn)
    tl.store(dtsum_ptr + (b * n_chunks + c) * DIM + d, dt_sum, mask=md)


@triton.jit
def _bwd_chunked_kernel(
    u_ptr,
    dt_ptr,
    z_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    bias_ptr,
    chk_ptr,
    carry_ptr,
    dout_ptr,
    scratch_ptr,
    du_ptr,
    ddt_ptr,
    dz_ptr,
    dA_ptr,
    dD_ptr,
    dbias_ptr,
    dB_ptr,
    dC_ptr,
    L,
    DIM,
    N,
    n_chunks,
    n_blocks,
    n_tiles,
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
    s_dub,
    s_dud,
    s_dul,
    s_dtb,
    s_dtd,
    s_dtl,
    s_dzb,
    s_dzd,
    s_dzl,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    BLOCK: tl.constexpr,
    NP: tl.constexpr,
    CH: tl.constexpr,
    UNROLL: tl.constexpr,
    STAGES: tl.constexpr,
):
    """Chunked backward, phase 3: every chunk from its saved start state and its incoming adjoint (``carry``).
    A persistent grid: program p owns scratch slot p and takes tiles p, p + grid, ... (channel block fastest,
    then chunk, then batch row, so concurrent programs share their B, C loads); dA, dD, d bias partials are
    per (batch row, chunk)."""
    pid = tl.program_id(0)
    dl = tl.arange(0, BLOCK)
    n = tl.arange(0, NP)
    mn = n < N
    scratch = scratch_ptr + (pid * (CH + 1) * BLOCK + dl[:, None]) * NP + n[None, :]  # [slots, CH + 1, BLOCK, NP]
    for tile in range(pid, n_tiles, tl.num_programs(0)):
        blk = tile % n_blocks
        c = (tile // n_blocks) % n_chunks
        b = tile // (n_blocks * n_chunks)
        d = blk * BLOCK + dl
        md = d < DIM
        mdn = md[:, None] & mn[None, :]
        A, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, d, n, md, mn, s_Ad, s_An, HAS_D, HAS_BIAS, BLOCK)
        row = ((b * DIM + d[:, None]) * n_chunks + c) * N + n[None, :]
        dh, dA, dD, dbias = _bwd_chunk(
            tl.load(chk_ptr + ((b * n_chunks + c) * N + n[None, :]) * DIM + d[:, None], mask=mdn, other=0.0),
            tl.load(carry_ptr + row, mask=mdn, other=0.0),
            tl.zeros([BLOCK, NP], tl.float32),
            tl.zeros([BLOCK], tl.float32),
            tl.zeros([BLOCK], tl.float32),
            c * CH,
            tl.minimum(c * CH + CH, L),
            scratch,
            BLOCK * NP,
            (b * n_blocks + blk) * L,
            b,
            d,
            n,
            md,
            mn,
            A,
            Dv,
            bias,
            u_ptr,
            dt_ptr,
            z_ptr,
            B_ptr,
            C_ptr,
            dout_ptr,
            du_ptr,
            ddt_ptr,
            dz_ptr,
            dB_ptr,
            dC_ptr,
            N,
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
            s_Bb,
            s_Bn,
            s_Bl,
            s_Cb,
            s_Cn,
            s_Cl,
            s_dub,
            s_dud,
            s_dul,
            s_dtb,
            s_dtd,
            s_dtl,
            s_dzb,
            s_dzd,
            s_dzl,
            HAS_Z,
            SOFTPLUS,
            UNROLL,
            STAGES,
        )
        part = (b * n_chunks + c) * DIM + d  # [B, n_chunks, D] partials
        tl.store(dA_ptr + part[:, None] * N + n[None, :], dA, mask=mdn)
        tl.store(dD_ptr + part, dD, mask=md)
        tl.store(dbias_ptr + part, dbias, mask=md)


def _s3(t: Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _opt(t: Tensor | None, like: Tensor) -> Tensor:
    """Absent optional inputs travel through the custom ops as empty tensors."""
    return like.new_empty(0) if t is None else t


def _impl() -> tuple[str, int, int]:
    """The implementation ``IMPL`` names, with its channels per program and warps."""
    if IMPL not in IMPLS:
        raise ValueError(f"scan IMPL={IMPL!r} unknown; expected one of {IMPLS}")
    if CHUNK % UNROLL:
        raise ValueError(f"scan CHUNK={CHUNK} must be a multiple of UNROLL={UNROLL}")
    return (IMPL, BLOCK_D, NUM_WARPS) if IMPL == "sequential" else (IMPL, CHUNKED_BLOCK_D, CHUNKED_WARPS)


def _n_chunks(L: int) -> int:
    return max(1, -(-L // CHUNK))


def _bwd_slots(device: torch.device, n_tiles: int) -> int:
    """Programs of the chunked backward's persistent grid (each owns one scratch slot)."""
    if device.type != "cuda":
        return min(n_tiles, 3)  # interpreted: a few, so programs take several tiles
    return min(n_tiles, torch.cuda.get_device_properties(device).multi_processor_count * BWD_PROGRAMS_PER_SM)


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
    """-> out [B, D, L] (u's dtype and strides), last state [B, D, N] fp32, saved chunk states
    [B, n_chunks, N, D] fp32 (channels contiguous: see _fwd_steps)."""
    b, dim, L = u.shape
    N = A.shape[1]
    impl, block, warps = _impl()
    stages = SEQUENTIAL_FWD_STAGES
    if impl == "chunked":  # its forward has its own settings (measured best: 64 channels, one warp, 2 stages)
        block, warps, stages = CHUNKED_FWD_BLOCK_D, CHUNKED_FWD_WARPS, CHUNKED_FWD_STAGES
    n_chunks = _n_chunks(L)
    out = torch.empty_like(u)  # u's layout: [B, L, D] memory from the model stays [B, L, D] (no copy after)
    last = torch.empty(b, dim, N, device=u.device, dtype=torch.float32)
    chk = torch.empty(b, n_chunks, N, dim, device=u.device, dtype=torch.float32)
    has_z = z.numel() > 0
    zz = z if has_z else u
    h0c = h0.float().contiguous() if h0.numel() else last
    tensors = (u, delta, zz, out, A, B, C, D, delta_bias)
    strides = (*_s3(u), *_s3(delta), *_s3(zz), *_s3(out), A.stride(0), A.stride(1), *_s3(B), *_s3(C))
    flags = dict(
        HAS_D=D.numel() > 0,
        HAS_Z=has_z,
        HAS_BIAS=delta_bias.numel() > 0,
        SOFTPLUS=softplus,
        BLOCK=block,
        NP=triton.next_power_of_2(N),
        CH=CHUNK,
        UNROLL=UNROLL,
        STAGES=stages,
        num_warps=warps,
    )
    n_blocks = triton.cdiv(dim, block)
    if impl == "sequential":
        _fwd_kernel[(b, n_blocks)](
            *tensors, h0c, last, chk, L, dim, N, n_chunks, *strides, HAS_H0=h0.numel() > 0, **flags
        )
        return out, last, chk
    loc = torch.empty_like(chk)  # each chunk's end state from a zero start
    dt_sum = torch.empty(b, n_chunks, dim, device=u.device, dtype=torch.float32)
    grid = (n_blocks, n_chunks, b)
    _fwd_chunk_kernel[grid](*tensors, chk, loc, dt_sum, L, dim, N, n_chunks, *strides, FINAL=False, **flags)
    _chunk_pass_kernel[(n_blocks, b)](
        A,
        loc,
        dt_sum,
        h0c,
        chk,
        last,
        dim,
        N,
        n_chunks,
        A.stride(0),
        A.stride(1),
        *loc.permute(0, 3, 1, 2).stride(),  # [B, n_chunks, N, D] seen as [B, D, n_chunks, N]
        HAS_INIT=h0.numel() > 0,
        REVERSE=False,
        BLOCK=block,
        NP=flags["NP"],
        num_warps=warps,
    )
    _fwd_chunk_kernel[grid](*tensors, chk, loc, dt_sum, L, dim, N, n_chunks, *strides, FINAL=True, **flags)
    return out, last, chk


@_scan_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, h0, softplus):
    b, dim, L = u.shape
    N = A.shape[1]
    return (
        torch.empty_like(u),
        u.new_empty(b, dim, N, dtype=torch.float32),
        u.new_empty(b, _n_chunks(L), N, dim, dtype=torch.float32),
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
    """-> du, ddelta, dA, dB, dC, dD, dz, d delta_bias, d h0 (fp32; absent inputs get empty gradients).

    du, ddelta and dz have the strides of u, delta and z (so the stores are coalesced in the model's layout),
    dB and dC those of a [B, L, N] tensor."""
    b, dim, L = u.shape
    N = A.shape[1]
    impl, block, warps = _impl()
    n_chunks, n_blocks = chk.shape[1], triton.cdiv(dim, block)
    if n_chunks != _n_chunks(L):
        raise ValueError(f"scan CHUNK={CHUNK} changed between forward and backward ({n_chunks} saved chunks)")
    # the forward saves the chunk start states as [B, n_chunks, N, D] (channels contiguous, as its [N, channels]
    # state); the backward reads them so (one strided [BLOCK, N] tile per chunk) and keeps its own adjoints per
    # chunk as [B, D, n_chunks, N]
    f32 = dict(device=u.device, dtype=torch.float32)
    du, ddt = torch.empty_like(u, dtype=torch.float32), torch.empty_like(delta, dtype=torch.float32)
    has_z = z.numel() > 0
    dz = torch.empty_like(z, dtype=torch.float32) if has_z else du.new_empty(0)
    dh0 = torch.empty(b, dim, N, **f32)
    dB, dC = torch.empty(b, n_blocks, L, N, **f32), torch.empty(b, n_blocks, L, N, **f32)
    zz, dzz = (z, dz) if has_z else (u, du)
    has_dlast = dlast.numel() > 0
    strides = (
        *_s3(u),
        *_s3(delta),
        *_s3(zz),
        *_s3(dout),
        A.stride(0),
        A.stride(1),
        *_s3(B),
        *_s3(C),
        *_s3(du),
        *_s3(ddt),
        *_s3(dzz),
    )
    flags = dict(
        HAS_D=D.numel() > 0,
        HAS_Z=has_z,
        HAS_BIAS=delta_bias.numel() > 0,
        SOFTPLUS=softplus,
        BLOCK=block,
        NP=triton.next_power_of_2(N),
        CH=CHUNK,
        UNROLL=UNROLL,
        STAGES=BWD_STAGES,
        num_warps=warps,
        **({"maxnreg": BWD_MAXNREG} if BWD_MAXNREG and u.is_cuda else {}),
    )
    if impl == "sequential":
        dA, dD, dbias = torch.empty(b, dim, N, **f32), torch.empty(b, dim, **f32), torch.empty(b, dim, **f32)
        scratch = torch.empty(b, dim, CHUNK + 1, N, **f32)
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
            dlast if has_dlast else dh0,
            scratch,
            du,
            ddt,
            dzz,
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
            *strides,
            HAS_DLAST=has_dlast,
            **flags,
        )
        sum_dims = (0,)
    else:
        loc = torch.empty(b, dim, n_chunks, N, **f32)  # each chunk's share of the adjoint into the previous one
        carry = torch.empty_like(loc)  # the adjoint flowing into each chunk's last state from later chunks
        dt_sum = torch.empty(b, n_chunks, dim, **f32)
        dA = torch.empty(b, n_chunks, dim, N, **f32)
        dD, dbias = torch.empty(b, n_chunks, dim, **f32), torch.empty(b, n_chunks, dim, **f32)
        _bwd_chunk_local_kernel[(n_blocks, n_chunks, b)](
            delta,
            zz,
            A,
            C,
            delta_bias,
            dout,
            loc,
            dt_sum,
            L,
            dim,
            N,
            n_chunks,
            *_s3(delta),
            *_s3(zz),
            *_s3(dout),
            A.stride(0),
            A.stride(1),
            *_s3(C),
            **{k: v for k, v in flags.items() if k != "HAS_D"},
        )
        _chunk_pass_kernel[(n_blocks, b)](
            A,
            loc,
            dt_sum,
            dlast if has_dlast else dh0,
            carry,
            dh0,
            dim,
            N,
            n_chunks,
            A.stride(0),
            A.stride(1),
            *loc.stride(),  # [B, D, n_chunks, N]
            HAS_INIT=has_dlast,
            REVERSE=True,
            BLOCK=block,
            NP=flags["NP"],
            num_warps=warps,
        )
        n_tiles = n_blocks * n_chunks * b
        slots = _bwd_slots(u.device, n_tiles)
        scratch = torch.empty(slots, CHUNK + 1, block, flags["NP"], **f32)
        _bwd_chunked_kernel[(slots,)](
            u,
            delta,
            zz,
            A,
            B,
            C,
            D,
            delta_bias,
            chk,
            carry,
            dout,
            scratch,
            du,
            ddt,
            dzz,
            dA,
            dD,
            dbias,
            dB,
            dC,
            L,
            dim,
            N,
            n_chunks,
            n_blocks,
            n_tiles,
            *strides,
            **flags,
        )
        sum_dims = (0, 1)
    # absent inputs get distinct empty gradients (custom-op outputs must not alias)
    return [
        du,
        ddt,
        dA.sum(sum_dims),
        dB.sum(1).transpose(1, 2),
        dC.sum(1).transpose(1, 2),
        dD.sum(sum_dims) if D.numel() else du.new_empty(0),
        dz,
        dbias.sum(sum_dims) if delta_bias.numel() else du.new_empty(0),
        dh0,
    ]


@_scan_bwd.register_fake
def _(dout, dlast, u, delta, A, B, C, D, z, delta_bias, chk, softplus):
    b, dim, L = u.shape
    N = A.shape[1]

    def f(*shape):
        return u.new_empty(*shape, dtype=torch.float32)

    return [
        torch.empty_like(u, dtype=torch.float32),
        torch.empty_like(delta, dtype=torch.float32),
        f(dim, N),
        f(b, L, N).transpose(1, 2),
        f(b, L, N).transpose(1, 2),
        f(dim) if D.numel() else f(0),
        torch.empty_like(z, dtype=torch.float32) if z.numel() else f(0),
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
