"""An experiment for issue 14, not a backend: a chunk-parallel Mamba-1 selective scan in Triton, timed against
the sequential ``triton`` backend in one run. Each program loads T steps x BLOCK channels at once and runs the
recurrence as an associative scan over time inside the chunk; the backward recomputes the chunk the same way and
runs the adjoint as a reverse associative scan over (a_{t+1}, dy_t C_t), with a_t h_{t-1} taken as h_t - dt B u.

    python benchmarks/scan_chunked.py                        # CUDA: ms per forward+backward, JSON lines
    TRITON_INTERPRET=1 python benchmarks/scan_chunked.py --check   # CPU: against the reference, tiny shapes

Results: benchmarks/results/2026-12-02-h200-scan-chunked-experiment.jsonl (the session-6 note says what it shows).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

from hymba.kernels.scan import selective_scan
from hymba.kernels.scan.ref import selective_scan_ref
from hymba.kernels.scan.triton import _channel_params, _softplus

sys.path.insert(0, str(Path(__file__).parent))
from scan_kernel import inputs  # noqa: E402  (the same inputs as the backend benchmark)


@triton.jit
def _combine(a1, b1, a2, b2):
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _tile(ptr, b, t, d, s_b, s_d, s_l, m):
    return tl.load(ptr + b * s_b + t[:, None] * s_l + d[None, :] * s_d, mask=m, other=0.0).to(tl.float32)


@triton.jit
def _fwd(
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
    T: tl.constexpr,
):
    b = tl.program_id(0)
    d = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    n = tl.arange(0, NP)
    tt = tl.arange(0, T)
    md, mn = d < DIM, n < N
    mdn = md[:, None] & mn[None, :]
    A, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, d, n, md, mn, s_Ad, s_An, HAS_D, HAS_BIAS, BLOCK)
    state = (b * DIM + d[:, None]) * N + n[None, :]
    if HAS_H0:
        h = tl.load(h0_ptr + state, mask=mdn, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK, NP], tl.float32)
    for c in range(0, n_chunks):
        tl.store(chk_ptr + ((b * DIM + d[:, None]) * n_chunks + c) * N + n[None, :], h, mask=mdn)
        t = c * T + tt
        mt = t < L
        m2 = mt[:, None] & md[None, :]
        mtn = mt[:, None] & mn[None, :]
        u = _tile(u_ptr, b, t, d, s_ub, s_ud, s_ul, m2)
        raw = _tile(dt_ptr, b, t, d, s_tb, s_td, s_tl, m2) + bias[None, :]
        dt = tl.where(m2, _softplus(raw) if SOFTPLUS else raw, 0.0)
        Bt = _tile(B_ptr, b, t, n, s_Bb, s_Bn, s_Bl, mtn)  # [T, NP]
        Ct = _tile(C_ptr, b, t, n, s_Cb, s_Cn, s_Cl, mtn)
        a = tl.exp(dt[:, :, None] * A[None, :, :])  # [T, BLOCK, NP]
        bx = (dt * u)[:, :, None] * Bt[:, None, :]
        acum, hloc = tl.associative_scan((a, bx), 0, _combine)
        hs = acum * h[None, :, :] + hloc
        y = tl.sum(hs * Ct[:, None, :], axis=2) + Dv[None, :] * u
        if HAS_Z:
            z = _tile(z_ptr, b, t, d, s_zb, s_zd, s_zl, m2)
            y = y * z * tl.sigmoid(z)
        tl.store(out_ptr + b * s_ob + t[:, None] * s_ol + d[None, :] * s_od, y.to(out_ptr.dtype.element_ty), mask=m2)
        h = tl.sum(tl.where((tt == T - 1)[:, None, None], hs, 0.0), axis=0)
    tl.store(last_ptr + state, h, mask=mdn)


@triton.jit
def _bwd(
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
    T: tl.constexpr,
):
    b = tl.program_id(0)
    blk = tl.program_id(1)
    d = blk * BLOCK + tl.arange(0, BLOCK)
    n = tl.arange(0, NP)
    tt = tl.arange(0, T)
    md, mn = d < DIM, n < N
    mdn = md[:, None] & mn[None, :]
    A, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, d, n, md, mn, s_Ad, s_An, HAS_D, HAS_BIAS, BLOCK)
    state = (b * DIM + d[:, None]) * N + n[None, :]
    if HAS_DLAST:
        carry = tl.load(dlast_ptr + state, mask=mdn, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros([BLOCK, NP], tl.float32)
    dA = tl.zeros([BLOCK, NP], tl.float32)
    dD = tl.zeros([BLOCK], tl.float32)
    dbias = tl.zeros([BLOCK], tl.float32)
    part = (b * n_blocks + blk) * N
    for ci in range(0, n_chunks):
        c = n_chunks - 1 - ci
        t = c * T + tt
        mt = t < L
        m2 = mt[:, None] & md[None, :]
        mtn = mt[:, None] & mn[None, :]
        u = _tile(u_ptr, b, t, d, s_ub, s_ud, s_ul, m2)
        raw = _tile(dt_ptr, b, t, d, s_tb, s_td, s_tl, m2) + bias[None, :]
        dt = tl.where(m2, _softplus(raw) if SOFTPLUS else raw, 0.0)
        # a_{t+1} inside the chunk (1 at its last step: the carry from the next chunk is already a_{t+1} dh_{t+1})
        mnext = ((tt + 1) < T)[:, None] & ((t + 1) < L)[:, None] & md[None, :]
        raw_n = _tile(dt_ptr, b, t + 1, d, s_tb, s_td, s_tl, mnext) + bias[None, :]
        dt_n = tl.where(mnext, _softplus(raw_n) if SOFTPLUS else raw_n, 0.0)
        Bt = _tile(B_ptr, b, t, n, s_Bb, s_Bn, s_Bl, mtn)
        Ct = _tile(C_ptr, b, t, n, s_Cb, s_Cn, s_Cl, mtn)
        a = tl.exp(dt[:, :, None] * A[None, :, :])
        bx = (dt * u)[:, :, None] * Bt[:, None, :]
        h0 = tl.load(chk_ptr + ((b * DIM + d[:, None]) * n_chunks + c) * N + n[None, :], mask=mdn, other=0.0)
        acum, hloc = tl.associative_scan((a, bx), 0, _combine)
        hs = acum * h0[None, :, :] + hloc
        g = _tile(dout_ptr, b, t, d, s_gb, s_gd, s_gl, m2)
        if HAS_Z:
            z = _tile(z_ptr, b, t, d, s_zb, s_zd, s_zl, m2)
            sz = tl.sigmoid(z)
            y = tl.sum(hs * Ct[:, None, :], axis=2) + Dv[None, :] * u
            tl.store(dz_ptr + (b * DIM + d[None, :]) * L + t[:, None], g * y * sz * (1.0 + z * (1.0 - sz)), mask=m2)
            dy = g * z * sz
        else:
            dy = g
        alpha = tl.exp(dt_n[:, :, None] * A[None, :, :])
        gC = dy[:, :, None] * Ct[:, None, :]
        pcum, sloc = tl.associative_scan((alpha, gC), 0, _combine, reverse=True)
        dh = pcum * carry[None, :, :] + sloc  # total adjoint of h_t
        tl.store(dC_ptr + (part + n[None, :]) * L + t[:, None], tl.sum(dy[:, :, None] * hs, axis=1), mask=mtn)
        ah = hs - bx  # a_t * h_{t-1}
        ddt = tl.sum(dh * (ah * A[None, :, :] + u[:, :, None] * Bt[:, None, :]), axis=2)
        dA += tl.sum(dh * ah * dt[:, :, None], axis=0)
        du = dy * Dv[None, :] + dt * tl.sum(dh * Bt[:, None, :], axis=2)
        tl.store(dB_ptr + (part + n[None, :]) * L + t[:, None], tl.sum(dh * (dt * u)[:, :, None], axis=1), mask=mtn)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(m2, ddt, 0.0)
        dD += tl.sum(dy * u, axis=0)
        dbias += tl.sum(ddt, axis=0)
        tl.store(du_ptr + (b * DIM + d[None, :]) * L + t[:, None], du, mask=m2)
        tl.store(ddt_ptr + (b * DIM + d[None, :]) * L + t[:, None], ddt, mask=m2)
        carry = tl.sum(tl.where((tt == 0)[:, None, None], a * dh, 0.0), axis=0)
    tl.store(dA_ptr + state, dA, mask=mdn)
    tl.store(dD_ptr + b * DIM + d, dD, mask=md)
    tl.store(dbias_ptr + b * DIM + d, dbias, mask=md)
    tl.store(dh0_ptr + state, carry, mask=mdn)


def _s3(t):
    return t.stride(0), t.stride(1), t.stride(2)


class ChunkedScan(torch.autograd.Function):
    BLOCK, T, WARPS = 8, 32, 4

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus):
        b, dim, L = u.shape
        N = A.shape[1]
        T, BLK = ChunkedScan.T, ChunkedScan.BLOCK
        n_chunks = max(1, triton.cdiv(L, T))
        out = torch.empty(b, dim, L, device=u.device, dtype=u.dtype)
        last = torch.empty(b, dim, N, device=u.device, dtype=torch.float32)
        chk = torch.empty(b, dim, n_chunks, N, device=u.device, dtype=torch.float32)
        _fwd[(b, triton.cdiv(dim, BLK))](
            u,
            delta,
            z,
            out,
            A,
            B,
            C,
            D,
            delta_bias,
            last,
            last,
            chk,
            L,
            dim,
            N,
            n_chunks,
            *_s3(u),
            *_s3(delta),
            *_s3(z),
            *_s3(out),
            A.stride(0),
            A.stride(1),
            *_s3(B),
            *_s3(C),
            HAS_D=True,
            HAS_Z=True,
            HAS_BIAS=True,
            SOFTPLUS=softplus,
            HAS_H0=False,
            BLOCK=BLK,
            NP=triton.next_power_of_2(N),
            T=T,
            num_warps=ChunkedScan.WARPS,
        )
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, chk)
        ctx.softplus = softplus
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, chk = ctx.saved_tensors
        b, dim, L = u.shape
        N = A.shape[1]
        T, BLK = ChunkedScan.T, ChunkedScan.BLOCK
        n_chunks, n_blocks = chk.shape[2], triton.cdiv(dim, BLK)
        f32 = dict(device=u.device, dtype=torch.float32)
        du, ddt, dz = (torch.empty(b, dim, L, **f32) for _ in range(3))
        dA, dh0 = torch.empty(b, dim, N, **f32), torch.empty(b, dim, N, **f32)
        dD, dbias = torch.empty(b, dim, **f32), torch.empty(b, dim, **f32)
        dB, dC = torch.empty(b, n_blocks, N, L, **f32), torch.empty(b, n_blocks, N, L, **f32)
        has_dlast = dlast is not None
        dl = dlast.float().contiguous() if has_dlast else dh0
        _bwd[(b, n_blocks)](
            u,
            delta,
            z,
            A,
            B,
            C,
            D,
            delta_bias,
            chk,
            dout,
            dl,
            du,
            ddt,
            dz,
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
            *_s3(z),
            *_s3(dout),
            A.stride(0),
            A.stride(1),
            *_s3(B),
            *_s3(C),
            HAS_D=True,
            HAS_Z=True,
            HAS_BIAS=True,
            SOFTPLUS=ctx.softplus,
            HAS_DLAST=has_dlast,
            BLOCK=BLK,
            NP=triton.next_power_of_2(N),
            T=T,
            num_warps=ChunkedScan.WARPS,
        )
        return (
            du.to(u.dtype),
            ddt.to(delta.dtype),
            dA.sum(0),
            dB.sum(1).to(B.dtype),
            dC.sum(1).to(C.dtype),
            dD.sum(0),
            dz.to(z.dtype),
            dbias.sum(0),
            None,
        )


def chunked_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True):
    return ChunkedScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


SETTINGS = [(8, 32, 4), (16, 16, 4), (8, 16, 2), (16, 32, 8), (4, 64, 4), (8, 64, 8), (32, 16, 8)]  # block, T, warps


def time_ms(fn, reps: int = 10) -> float:
    fn()  # compile
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def check() -> None:
    """Outputs, last state and every gradient against the reference (fp32, odd lengths, several chunk sizes)."""
    for b, d, L, n, T in [(2, 8, 5, 4, 4), (1, 12, 37, 3, 8), (2, 16, 64, 16, 16), (1, 8, 1, 4, 4)]:
        ChunkedScan.T, ChunkedScan.BLOCK = T, 8
        g = torch.Generator().manual_seed(0)
        x = dict(
            u=torch.randn(b, L, d, generator=g).transpose(1, 2),
            delta=(torch.randn(b, L, d, generator=g) * 0.5 - 1).transpose(1, 2),
            A=-torch.exp(torch.randn(d, n, generator=g) * 0.5),
            B=torch.randn(b, L, n, generator=g).transpose(1, 2),
            C=torch.randn(b, L, n, generator=g).transpose(1, 2),
            D=torch.randn(d, generator=g),
            z=torch.randn(b, L, d, generator=g).transpose(1, 2),
            delta_bias=torch.randn(d, generator=g) * 0.1,
        )
        x = {k: v.requires_grad_(True) for k, v in x.items()}
        go, gl = torch.randn(b, d, L, generator=g), torch.randn(b, d, n, generator=g)
        y, last = chunked_scan(**x)
        grads = torch.autograd.grad((y * go).sum() + (last * gl).sum(), list(x.values()))
        yr, lr = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
        refs = torch.autograd.grad((yr * go).sum() + (lr * gl).sum(), list(x.values()))
        errs = [(y - yr).abs().max() / yr.abs().max(), (last - lr).abs().max() / lr.abs().max()]
        errs += [(a - r).abs().max() / (r.abs().max() + 1e-9) for a, r in zip(grads, refs)]
        worst = max(float(e.detach()) for e in errs)
        print(json.dumps(dict(shape=[b, d, L, n], T=T, worst_relative_error=worst)))
        assert worst < 1e-4, worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare against the reference instead of timing")
    if p.parse_args().check:
        return check()
    for shape in [(16, 1024, 512, 16), (8, 2048, 2048, 16)]:
        x = inputs(*shape)

        def sequential():
            y = selective_scan(**x, delta_softplus=True, backend="triton")
            y.backward(torch.ones_like(y))

        print(json.dumps(dict(shape=shape, kernel="triton-seq", ms=round(time_ms(sequential), 3))), flush=True)
        y0 = selective_scan(**x, delta_softplus=True, backend="triton")
        for blk, T, w in SETTINGS:
            ChunkedScan.BLOCK, ChunkedScan.T, ChunkedScan.WARPS = blk, T, w

            def both():
                y, _ = chunked_scan(**x)
                y.backward(torch.ones_like(y))

            err = (chunked_scan(**x)[0].float() - y0.float()).abs().max().item()
            row = dict(
                shape=shape,
                kernel="chunked",
                block=blk,
                T=T,
                warps=w,
                ms=round(time_ms(both), 3),
                fwd_ms=round(time_ms(lambda: chunked_scan(**x)), 3),
                max_err_vs_seq=err,
            )
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
