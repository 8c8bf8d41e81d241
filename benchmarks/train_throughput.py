"""Training-step throughput of the ablation rows on one GPU: tokens/s, MFU and peak memory per row and per
kernel backend, measured side by side in one run (bf16 autocast, fused AdamW, warm-up excluded).

    python benchmarks/train_throughput.py --preset seed --rows 1,6,13 --backends ref/sdpa,mamba_ssm/flex
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from hymba import HymbaLM
from hymba.presets import row_config

PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


def peak_flops() -> float:
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), float("nan"))


def measure(row: int, preset: str, scan: str, attn: str, batch: int, seq: int, steps: int, warmup: int) -> dict:
    cfg = row_config(row, preset, vocab_size=8192, scan_backend=scan, attn_backend=attn)
    model = HymbaLM(cfg).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(ids[:, :-1], labels=ids[:, 1:]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tps = batch * seq * steps / dt
    return {"row": row, "preset": preset, "scan": scan, "attn": attn, "batch": batch, "seq": seq,
            "tokens_per_s": tps, "mfu": tps * model.flops_per_token(seq) / peak_flops(),
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9, "loss": float(loss),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="seed")
    p.add_argument("--rows", default=",".join(map(str, range(1, 14))))
    p.add_argument("--backends", default="mamba_ssm/flex", help="comma list of scan/attn pairs")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args()
    for row in map(int, args.rows.split(",")):
        for pair in args.backends.split(","):
            scan, attn = pair.split("/")
            try:
                r = measure(row, args.preset, scan, attn, args.batch, args.seq, args.steps, args.warmup)
            except Exception as e:  # one failing combination must not hide the others
                r = {"row": row, "scan": scan, "attn": attn, "error": f"{type(e).__name__}: {e}"[:300]}
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
