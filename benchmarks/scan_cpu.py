"""The plain-PyTorch selective scan (``selective_scan_ref``) on the CPU: forward and forward + backward, per block
size, in one process.

The reference recurrence runs in blocks of steps that hold about ``BLOCK_ELEMENTS`` (b, d, n) elements each
(``hymba.kernels.scan.ref``). This times the default against other block sizes and against one block for the
whole sequence (every decay, input and state tensor formed for all L steps at once), at the shapes CPU users
meet: the tiny preset's training step, the recall probes and a CPU prefill. Run with an older ``src`` on the
path (one without blocks, e.g. ``git worktree add /tmp/old 30db347`` and ``PYTHONPATH=/tmp/old/src``), it times
that code's scan alone at the same shapes.

    python benchmarks/scan_cpu.py                        # JSON lines: ms fwd, ms fwd+bwd, ratio to the default
    python benchmarks/scan_cpu.py --blocks 15,19 --threads 2 --shapes 1,2
"""

from __future__ import annotations

import argparse
import json
import time

import _hymba_path  # noqa: F401  (a plain clone: src/ on the path)
import torch

from hymba.kernels.scan import ref

# (batch, channels, length, state)
SHAPES = {
    "tiny train (B8 d_model 64)": (8, 128, 64, 16),
    "recall probe micro (B64 d_model 64)": (64, 128, 64, 16),
    "recall probe seed (B128 d_model 128)": (128, 256, 128, 16),
    "long sequence (B8 L512)": (8, 128, 512, 16),
    "test size": (4, 64, 32, 8),
}


def inputs(b, d, L, n):
    # the model's layout: [B, L, D] activations seen as [B, D, L] (hymba.model.ssm)
    x = dict(
        u=torch.randn(b, L, d).transpose(1, 2),
        delta=(torch.randn(b, L, d) * 0.5 - 2).transpose(1, 2),
        A=-torch.exp(torch.randn(d, n)),
        B=torch.randn(b, L, n).transpose(1, 2),
        C=torch.randn(b, L, n).transpose(1, 2),
        D=torch.randn(d),
        z=torch.randn(b, L, d).transpose(1, 2),
        delta_bias=torch.randn(d) * 0.1,
    )
    return {k: v.requires_grad_(True) for k, v in x.items()}


def timed(fn, reps: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", default="", help="log2 block sizes to time besides the default, e.g. 15,19")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--shapes", default="", help=f"indices into {list(SHAPES)} (default: all)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    blocked = hasattr(ref, "BLOCK_ELEMENTS")  # False: a checkout from before the blocks
    default = ref.BLOCK_ELEMENTS if blocked else None
    sizes = [("default", default)] + [(f"2^{e}", 1 << int(e)) for e in args.blocks.split(",") if e and blocked]
    names = list(SHAPES)
    for name in [names[int(i)] for i in args.shapes.split(",")] if args.shapes else names:
        b, d, L, n = SHAPES[name]
        sizes_here = sizes + ([("whole sequence", b * d * n * L)] if blocked else [])
        x = inputs(b, d, L, n)
        base = None
        for label, elements in sizes_here:
            if blocked:
                ref.BLOCK_ELEMENTS = elements

            def fwd():
                with torch.no_grad():
                    ref.selective_scan_ref(**x, delta_softplus=True)

            def fwd_bwd():
                ref.selective_scan_ref(**x, delta_softplus=True).sum().backward()

            ms_f, ms_fb = timed(fwd, args.reps), timed(fwd_bwd, args.reps)
            base = base or ms_fb
            steps = ref._block_steps(b, d, n, L) if blocked else None
            row = {"shape": name, "b_d_L_n": [b, d, L, n], "block": label if blocked else "none", "block_steps": steps}
            row.update(ms_fwd=round(ms_f, 2), ms_fwd_bwd=round(ms_fb, 2), vs_default=round(ms_fb / base, 2))
            print(json.dumps(row), flush=True)
        if blocked:
            ref.BLOCK_ELEMENTS = default
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
