"""The decode step's kernels alone, at a model TOML's shapes and batch, each with the bytes it must read and the
fraction of copy bandwidth (measured in the same run) that its time gives:

- attention over each cache kind (a global cache of prompt + new tokens, a sliding-window ring), through our
  Triton split kernel; ``--sweep`` also times its settings (``BLOCK_N``, ``NUM_WARPS``, ``NUM_STAGES``,
  ``PROGRAMS_PER_SM`` of :mod:`hymba.kernels.attention.triton_decode`, their ``SHORT_`` twins for a ring),
  the defaults first;
- every matmul of a layer's step at M = batch rows, as the model lays them out, and the alternatives worth a
  layout change: the FFN's gate and up as one matmul, the LM head padded to a multiple of 64 rows (a padded
  weight, or the logits written into padded rows as the model's decode step does).

Each kernel is timed from a CUDA graph of many calls (no launch gaps, as in the graphed decode step), over
enough distinct weight copies that the L2 cache holds none of them. One JSON line per measurement.

    python benchmarks/decode_kernels.py                                   # Hymba-1.5B, batch 128, 8K prompt
    python benchmarks/decode_kernels.py --sweep --what attention
"""

from __future__ import annotations

import argparse
import itertools
import json

import _hymba_path  # noqa: F401  (a plain clone: src/ on the path)
import torch
import torch.nn.functional as F

from hymba.bench import copy_bandwidth, load_model_config
from hymba.kernels.attention import MaskSpec
from hymba.kernels.attention import triton_decode as dec

SWEEP = {"BLOCK_N": (64, 128), "NUM_WARPS": (2, 4, 8), "NUM_STAGES": (2, 3, 4), "PROGRAMS_PER_SM": (4, 8, 16)}
L2_BYTES = 256 * 2**20  # weight copies rotate past this many bytes (the H200's L2 is 50 MB)


def graph_us(fn, calls: int = 20, reps: int = 5) -> float:
    """Microseconds per call of ``fn`` (a device-only function), replayed from one CUDA graph of ``calls``."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(3):
            fn(i)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(calls):
            fn(i)
    g.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        g.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (reps * calls)


def attention_cases(c, batch: int, prompt_len: int, new: int) -> dict[str, dict]:
    """Inputs of one decode attention call per cache kind: q, k, v, spec, and the bytes K/V hold."""
    g = dict(device="cuda", dtype=torch.bfloat16)
    M, Hkv, H = c.n_meta_tokens, c.kv_heads, c.n_heads
    kinds = {"global": prompt_len + new}
    if c.swa_plan != "none" and c.window:
        kinds["swa"] = c.window
    out = {}
    for kind, slots in kinds.items():
        S = M + slots
        k = torch.randn(batch, Hkv, S, c.qk_head_dim, **g)
        v = torch.randn(batch, Hkv, S, c.value_head_dim, **g)
        pos = torch.arange(S, device="cuda").expand(batch, S).contiguous()
        meta = (torch.arange(S, device="cuda") < M)[None]
        valid = torch.ones(batch, S, dtype=torch.bool, device="cuda")
        q_pos = torch.full((batch, 1), S, dtype=torch.long, device="cuda")
        spec = MaskSpec(q_pos, pos, meta, valid, None if kind == "global" else c.window)
        q = torch.randn(batch, H, 1, c.qk_head_dim, **g)
        nbytes = k.numel() * 2 + v.numel() * 2 + pos.numel() * 8 + valid.numel()
        out[kind] = dict(q=q, k=k, v=v, spec=spec, bytes=nbytes, slots=S)
    return out


def matmul_cases(c, batch: int) -> dict[str, tuple[int, int]]:
    """(out, in) of each matmul of a layer's decode step, and the alternatives."""
    d, dk, dv = c.d_model, c.qk_head_dim, c.value_head_dim
    q, kv = c.n_heads * dk, c.kv_heads * (dk + dv)
    ssm = 2 * c.d_inner if c.ssm else 0
    cases = {"in_proj": (q + kv + ssm, d), "in_proj_kv_shared": (q + ssm, d)}
    cases["out_proj"] = (d, c.d_inner if c.ssm else c.attn_out_dim)
    cases |= {"ffn_gate": (c.ffn_dim, d), "ffn_up": (c.ffn_dim, d), "ffn_gate_up": (2 * c.ffn_dim, d)}
    cases["ffn_down"] = (d, c.ffn_dim)
    if c.ssm:
        cases |= {"x_proj": (c.ssm_dt_rank + 2 * c.d_state, c.d_inner), "dt_proj": (c.d_inner, c.ssm_dt_rank)}
    cases["lm_head"] = (c.vocab_size, d)
    cases["lm_head_pad64"] = (-(-c.vocab_size // 64) * 64, d)  # a padded weight
    cases["lm_head_out_pad64"] = cases["lm_head_pad64"]  # the vocabulary's rows, logits written padded
    return cases


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/models/hymba-1.5b.toml")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--prompt-len", type=int, default=8192)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--what", default="attention,matmul", help="attention, matmul (comma-separated)")
    p.add_argument("--sweep", action="store_true", help="also time the attention kernel's settings")
    p.add_argument("--kinds", default="global,swa", help="cache kinds --sweep covers (comma-separated)")
    a = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("decode_kernels.py times CUDA kernels: no CUDA device here")
    what = a.what.split(",")
    for w in what:
        if w not in ("attention", "matmul"):
            p.error(f"--what: unknown {w!r}; expected attention, matmul")
    for k in a.kinds.split(","):
        if k not in ("global", "swa"):
            p.error(f"--kinds: unknown {k!r}; expected global, swa")
    c = load_model_config(a.config)
    bw = copy_bandwidth("cuda")
    head = {"config": a.config, "batch": a.batch, "device": torch.cuda.get_device_name()}
    print(json.dumps({**head, "copy_bw_gbs": round(bw / 1e9, 1)}), flush=True)

    def report(row: dict, us: float, nbytes: int) -> None:
        gbs = nbytes / us / 1e3
        row |= {"us": round(us, 2), "gbs": round(gbs, 1), "of_copy_bw": round(gbs * 1e9 / bw, 3)}
        print(json.dumps({**head, **row}), flush=True)

    if "attention" in what:
        for kind, x in attention_cases(c, a.batch, a.prompt_len, a.new_tokens).items():

            def run(_, x=x):
                dec.attention_decode_triton(x["q"], x["k"], x["v"], x["spec"])

            # a short cache (a sliding-window ring) runs on the SHORT_ settings
            pre = "SHORT_" if x["slots"] <= dec.SHORT_SLOTS else ""
            names = [pre + k for k in SWEEP]
            defaults = {k: getattr(dec, k) for k in names}
            changes = [{}]
            if a.sweep and kind in a.kinds.split(","):
                changes += [{pre + k: v for k, v in zip(SWEEP, vals)} for vals in itertools.product(*SWEEP.values())]
            for change in changes:
                for k, v in change.items():
                    setattr(dec, k, v)
                n_splits = dec.n_splits_for(a.batch * c.kv_heads, x["slots"], torch.device("cuda"))
                try:
                    us = graph_us(run)
                except Exception as e:  # a setting Triton cannot compile (shared memory): report, go on
                    print(json.dumps({**head, "attention": kind, **change, "error": str(e)[:200]}), flush=True)
                    continue
                finally:
                    for k, v in defaults.items():
                        setattr(dec, k, v)
                row = {"attention": kind, "slots": x["slots"], **defaults, **change, "n_splits": n_splits}
                report(row, us, x["bytes"])
    if "matmul" in what:
        act = torch.randn(a.batch, c.d_model, device="cuda", dtype=torch.bfloat16)
        for name, (n_out, n_in) in matmul_cases(c, a.batch).items():
            x = torch.randn(a.batch, n_in, device="cuda", dtype=torch.bfloat16) if n_in != c.d_model else act
            nbytes = n_out * n_in * 2
            copies = max(2, -(-L2_BYTES // nbytes))
            ws = [torch.randn(n_out, n_in, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
            if name == "lm_head_out_pad64":  # the model's decode logits: an aligned buffer, the vocabulary a view
                ws = [w[: c.vocab_size] for w in ws]
                out = x.new_empty(a.batch, n_out)[:, : c.vocab_size]

                def fn(i, ws=ws, x=x, out=out):
                    torch.mm(x, ws[i % len(ws)].t(), out=out)
            else:

                def fn(i, ws=ws, x=x):
                    F.linear(x, ws[i % len(ws)])

            us = graph_us(fn, calls=max(20, copies))
            report({"matmul": name, "out": n_out, "in": n_in}, us, nbytes)
            del ws
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
