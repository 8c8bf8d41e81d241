"""The selective scan alone, forward + backward, on one GPU, per scan backend, in one process.

Every backend of the scan registry that can run here: our Triton kernel, mamba_ssm when installed, and the
plain-PyTorch reference with --ref; at the shapes of issue 14.

    python benchmarks/scan_kernel.py                 # ms per forward+backward and peak memory, JSON lines
    python benchmarks/scan_kernel.py --sweep         # also the Triton kernel's block / warp alternatives
"""

from __future__ import annotations

import argparse
import json

import torch

from hymba.kernels import BackendUnavailable
from hymba.kernels.scan import BACKENDS, resolve, selective_scan
from hymba.kernels.scan import triton as scan_triton

SHAPES = [(16, 1024, 512, 16), (8, 2048, 2048, 16)]  # (batch, channels, length, state)


def inputs(b, d, L, n, dtype=torch.bfloat16):
    g = dict(device="cuda")
    # the model's layout: [B, L, D] activations seen as [B, D, L]
    x = dict(
        u=torch.randn(b, L, d, **g).to(dtype).transpose(1, 2),
        delta=(torch.randn(b, L, d, **g) * 0.5 - 2).to(dtype).transpose(1, 2),
        A=-torch.exp(torch.randn(d, n, **g)),
        B=torch.randn(b, L, n, **g).to(dtype).transpose(1, 2),
        C=torch.randn(b, L, n, **g).to(dtype).transpose(1, 2),
        D=torch.randn(d, **g),
        z=torch.randn(b, L, d, **g).to(dtype).transpose(1, 2),
        delta_bias=torch.randn(d, **g) * 0.1,
    )
    return {k: v.requires_grad_(True) for k, v in x.items()}


def time_ms(backend: str, x: dict, reps: int = 10) -> tuple[float, float]:
    def step():
        y = selective_scan(**x, delta_softplus=True, backend=backend)
        y.backward(torch.ones_like(y))

    step()  # compile / autotune
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        step()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps, (torch.cuda.max_memory_allocated() - base) / 1e9


def runs_here(backend: str) -> bool:
    try:
        return resolve(backend, "cuda") == backend
    except BackendUnavailable:
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", action="store_true", help="also time BLOCK_D x NUM_WARPS x UNROLL alternatives of triton")
    p.add_argument("--ref", action="store_true", help="also time the plain-PyTorch reference (slow, GBs)")
    args = p.parse_args()
    backends = [b for b in BACKENDS if b != "auto" and (b != "ref" or args.ref) and runs_here(b)]
    for shape in SHAPES:
        x = inputs(*shape)
        for be in backends:
            ms, gb = time_ms(be, x)
            print(
                json.dumps(
                    {
                        "shape": shape,
                        "backend": be,
                        "ms_fwd_bwd": round(ms, 3),
                        "peak_gb": round(gb, 3),
                        "block_d": scan_triton.BLOCK_D if be == "triton" else None,
                        "num_warps": scan_triton.NUM_WARPS if be == "triton" else None,
                        "unroll": scan_triton.UNROLL if be == "triton" else None,
                    }
                ),
                flush=True,
            )
        if args.sweep:
            default = scan_triton.BLOCK_D, scan_triton.NUM_WARPS, scan_triton.UNROLL
            for block in (16, 32, 64):
                for warps in (1, 4):
                    for unroll in (1, 4, 8):
                        scan_triton.BLOCK_D, scan_triton.NUM_WARPS, scan_triton.UNROLL = block, warps, unroll
                        ms, gb = time_ms("triton", x, reps=5)
                        print(
                            json.dumps(
                                {
                                    "shape": shape,
                                    "backend": "triton",
                                    "ms_fwd_bwd": round(ms, 3),
                                    "block_d": block,
                                    "num_warps": warps,
                                    "unroll": unroll,
                                }
                            ),
                            flush=True,
                        )
            scan_triton.BLOCK_D, scan_triton.NUM_WARPS, scan_triton.UNROLL = default


if __name__ == "__main__":
    main()
