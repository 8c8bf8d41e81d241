"""FlexAttention's forward alone at one prefill chunk of a model TOML (its heads, Q/K and V head dims, window and
meta tokens): each mask its layers use (sliding window, global causal), with flex's own tile choice, with the options
``hymba.kernels.attention.flex.fwd_kernel_options`` picks on this GPU, and with a few other tile settings.
One JSON line per (mask, options): milliseconds per call and the compile time.

    python benchmarks/flex_attention.py                            # Hymba-1.5B, 8 rows x (8192 + 128 meta)
    python benchmarks/flex_attention.py --rows 16 --prompt-len 512 --config configs/models/llama-3.2-1b.toml
"""

from __future__ import annotations

import argparse
import json
import time

import _hymba_path  # noqa: F401  (a plain clone: src/ on the path)
import torch

from hymba.bench import load_model_config
from hymba.kernels.attention import flex
from hymba.model.plan import layer_plans

OTHERS = [  # (BLOCK_M, BLOCK_N, warps, stages) beside flex's default and ours
    (64, 64, 4, 3),
    (128, 64, 8, 2),
    (64, 32, 4, 3),
]


def time_ms(fn, reps: int = 10) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/models/hymba-1.5b.toml")
    p.add_argument("--rows", type=int, default=8, help="batch rows of the chunk (the prefill chunk's)")
    p.add_argument("--prompt-len", type=int, default=8192)
    a = p.parse_args()
    if not torch.cuda.is_available():
        p.error("needs a CUDA device (FlexAttention's compiled kernels)")
    c = load_model_config(a.config)
    if not c.n_heads:
        p.error(f"{a.config}: the model has no attention heads")
    from torch.nn.attention.flex_attention import flex_attention

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    T, M = a.prompt_len + c.n_meta_tokens, c.n_meta_tokens
    g = dict(device="cuda", dtype=torch.bfloat16)
    q = torch.randn(a.rows, c.n_heads, T, c.qk_head_dim, **g)
    k = torch.randn(a.rows, c.kv_heads, T, c.qk_head_dim, **g)
    v = torch.randn(a.rows, c.kv_heads, T, c.value_head_dim, **g)
    ours = flex.fwd_kernel_options(c.qk_head_dim, c.value_head_dim, torch.cuda.get_device_capability())
    options = [("flex default", None), ("ours", ours)] if ours else [("flex default (ours)", None)]
    options += [
        (f"{bm}x{bn}, {w} warps, {s} stages", dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=s))
        for bm, bn, w, s in OTHERS
    ]
    compiled = torch.compile(flex_attention, dynamic=False)
    windows = {plan.window for plan in layer_plans(c) if plan.attention}
    for window in sorted(windows, key=lambda w: w is None):  # the model's sliding window (if any), then global
        bm = flex.block_mask(T, window, M, "cuda")
        for name, opts in options:
            t0 = time.perf_counter()
            try:
                run = lambda: compiled(q, k, v, block_mask=bm, enable_gqa=c.kv_heads != c.n_heads, kernel_options=opts)  # noqa: E731
                run()
                torch.cuda.synchronize()
                row = dict(ms=round(time_ms(run), 3), compile_s=round(time.perf_counter() - t0, 1))
            except Exception as e:  # a setting this GPU cannot compile (shared memory): reported, not fatal
                row = dict(error=repr(e)[:200])
            shape = dict(rows=a.rows, tokens=T, heads=c.n_heads, kv_heads=c.kv_heads)
            dims = dict(qk_dim=c.qk_head_dim, v_dim=c.value_head_dim, window=window, meta=M)
            print(json.dumps(dict(**shape, **dims, options=name, kernel_options=opts, **row)), flush=True)


if __name__ == "__main__":
    main()
