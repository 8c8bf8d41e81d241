"""The selective scan alone, forward and forward + backward, on one GPU, per scan backend, in one process.

Every backend of the scan registry that can run here: our Triton kernels (each implementation ``--impl`` names:
``sequential``, one program per batch row x channel block; ``chunked``, parallel over time chunks with state
passing), mamba_ssm when installed, and the plain-PyTorch reference with --ref; at the shapes of issue 14 and
of a Hymba-1.5B prefill chunk (``--shapes 2``).

    python benchmarks/scan_kernel.py                                   # ms fwd, ms fwd+bwd, peak GB; JSON lines
    python benchmarks/scan_kernel.py --impl sequential,chunked --sweep # also each implementation's settings
    python benchmarks/scan_kernel.py --set CHUNKED_BLOCK_D=32          # another default, everywhere

Each Triton row also carries ``max_rel_err``: the largest difference of its output and gradients from the first
implementation listed (over that tensor's largest value), a guard against a kernel wrong only on the GPU.
"""

from __future__ import annotations

import argparse
import itertools
import json

import _hymba_path  # noqa: F401  (a plain clone: src/ on the path)
import torch

from hymba.kernels import BackendUnavailable
from hymba.kernels.scan import BACKENDS, resolve, selective_scan
from hymba.kernels.scan import triton as scan_triton

# (batch, channels, length, state): issue 14's two, and one Hymba-1.5B prefill chunk (8 rows x 8K)
SHAPES = [(16, 1024, 512, 16), (8, 2048, 2048, 16), (8, 3200, 8192, 16)]
# settings each implementation reads at call time, and the values --sweep tries (the defaults are timed first)
SETTINGS = {
    "sequential": {"BLOCK_D": (16, 32, 64), "NUM_WARPS": (1, 4), "UNROLL": (1, 4, 8)},
    "chunked": {"CHUNKED_BLOCK_D": (8, 16, 32), "CHUNKED_WARPS": (1, 2, 4), "CHUNK": (32, 64, 128)},
}
EXTRA_SWEEPS = {
    "chunked": [{"BWD_PROGRAMS_PER_SM": v} for v in (8, 32)]
    + [{"UNROLL": v} for v in (2, 8)]
    + [{"CHUNKED_FWD_BLOCK_D": bd, "CHUNKED_FWD_WARPS": w} for bd, w in ((32, 1), (64, 2), (128, 4))]
    + [{"CHUNKED_FWD_STAGES": v} for v in (1, 3)]
    + [{"BWD_STAGES": 2}]
    + [{"BWD_MAXNREG": v} for v in (0, 168)]
}


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


def _ms(fn, reps: int) -> float:
    fn()  # compile / autotune
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def time_ms(backend: str, x: dict, reps: int = 10) -> dict:
    """ms of the forward alone, of forward + backward, and the peak GB above the inputs of the latter."""

    def fwd():
        with torch.no_grad():
            selective_scan(**x, delta_softplus=True, backend=backend)

    def step():
        y = selective_scan(**x, delta_softplus=True, backend=backend)
        y.backward(torch.ones_like(y))

    ms_fwd = _ms(fwd, reps)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    ms = _ms(step, reps)
    gb = (torch.cuda.max_memory_allocated() - base) / 1e9
    return {"ms_fwd": round(ms_fwd, 3), "ms_fwd_bwd": round(ms, 3), "peak_gb": round(gb, 3)}


def outputs(x: dict) -> list[torch.Tensor]:
    """The Triton scan's output and every gradient (of a fixed random weighting of the output)."""
    y = scan_triton.selective_scan_triton(**x, delta_softplus=True)
    w = torch.randn(y.shape, generator=torch.Generator(device=y.device).manual_seed(0), device=y.device)
    return [y.detach().float(), *(g.float() for g in torch.autograd.grad((y.float() * w).sum(), list(x.values())))]


def max_rel_err(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    return max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in zip(got, want))


def runs_here(backend: str) -> bool:
    try:
        return resolve(backend, "cuda") == backend
    except BackendUnavailable:
        return False


def settings(impl: str) -> dict:
    names = [*SETTINGS[impl], *{k for e in EXTRA_SWEEPS.get(impl, []) for k in e}, "CHUNK", "UNROLL", "BWD_STAGES"]
    return {k: getattr(scan_triton, k) for k in dict.fromkeys(names)}


def sweep(impl: str):
    """Setting dicts to try: the grid of SETTINGS (CHUNK a multiple of UNROLL), then the extra one-offs."""
    grid = SETTINGS[impl]
    for values in itertools.product(*grid.values()):
        yield dict(zip(grid, values))
    yield from EXTRA_SWEEPS.get(impl, [])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impl", default="sequential,chunked", help="Triton implementations, comma-separated")
    p.add_argument("--sweep", action="store_true", help="also time each implementation's settings (SETTINGS)")
    p.add_argument("--shapes", default="0,1", help="indices into SHAPES, comma-separated")
    p.add_argument("--ref", action="store_true", help="also time the plain-PyTorch reference (slow, GBs)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a scan setting (repeatable)")
    args = p.parse_args()
    for item in args.set:
        name, _, value = item.partition("=")
        if not isinstance(getattr(scan_triton, name, None), int) or not value.isdigit():
            p.error(f"--set {item!r}: expected NAME=INT with NAME an integer setting of hymba.kernels.scan.triton")
        setattr(scan_triton, name, int(value))
    impls = args.impl.split(",")
    for impl in impls:
        if impl not in scan_triton.IMPLS:
            p.error(f"--impl {impl!r} unknown; expected some of {scan_triton.IMPLS}")
    backends = [b for b in BACKENDS if b != "auto" and (b != "ref" or args.ref) and runs_here(b)]
    default_impl, defaults = scan_triton.IMPL, {k: getattr(scan_triton, k) for i in impls for k in settings(i)}
    for shape in (SHAPES[int(i)] for i in args.shapes.split(",")):
        x = inputs(*shape)
        want = None
        for be in backends:
            for impl in impls if be == "triton" else [None]:
                row = {"shape": shape, "backend": be}
                if impl:
                    scan_triton.IMPL = impl
                    got = outputs(x)
                    want = want or got
                    row.update(impl=impl, **settings(impl), max_rel_err=float(f"{max_rel_err(got, want):.2e}"))
                print(json.dumps({**row, **time_ms(be, x)}), flush=True)
        if args.sweep:
            for impl in impls:
                scan_triton.IMPL = impl
                for change in sweep(impl):
                    for k, v in change.items():
                        setattr(scan_triton, k, v)
                    if scan_triton.CHUNK % scan_triton.UNROLL == 0:
                        row = {"shape": shape, "backend": "triton", "impl": impl, "sweep": True, **settings(impl)}
                        print(json.dumps({**row, **time_ms("triton", x, reps=5)}), flush=True)
                    for k, v in defaults.items():
                        setattr(scan_triton, k, v)
        scan_triton.IMPL = default_impl


if __name__ == "__main__":
    main()
