"""Glue around the scan in one training step (forward + backward) of a roadmap row: how many copy, cast, cat
and contiguous ops it runs and, on CUDA, their device time, from torch.profiler. One JSON line per row.

    python benchmarks/glue_profile.py --rows 13 --device cpu --d-model 128 --n-layers 2 --scan ref
    python benchmarks/glue_profile.py --rows 1,6,13 --device cuda --scan triton --attn flex --batch 16 --seq 512
    python benchmarks/glue_profile.py --rows 6,13 --device cuda --scan triton --probe --batch 128 --seq 256

``--probe``: the row at the preset's MQAR recall-probe size (``[scales.<preset>.recall]``), MQAR vocabulary.
``--top N``: also the N ops with the most device time of their own.

bf16 autocast on CUDA (as the trainer), fp32 on CPU unless ``--bf16``.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

from hymba.config import scale_settings
from hymba.eval.mqar import probe_config
from hymba.model import HymbaLM
from hymba.presets import row_config

GLUE = ("aten::copy_", "aten::_to_copy", "aten::cat", "aten::contiguous", "aten::clone", "aten::pad")


def step(model: HymbaLM, ids: torch.Tensor, autocast: bool) -> None:
    with torch.autocast(ids.device.type, torch.bfloat16, enabled=autocast):
        out = model(ids[:, :-1], labels=ids[:, 1:])
    out.loss.backward()


def profile_row(row: int, args) -> dict:
    kw = {}
    if args.d_model:
        kw.update(d_model=args.d_model)
    if args.n_layers:
        kw.update(n_layers=args.n_layers)
    cfg = row_config(row, args.preset, vocab_size=args.vocab, scan_backend=args.scan, attn_backend=args.attn, **kw)
    vocab = args.vocab
    if args.probe:
        settings = scale_settings(args.preset)["recall"]
        cfg = probe_config(cfg, settings)
        vocab = cfg.vocab_size
    dev = torch.device(args.device)
    model = HymbaLM(cfg).to(dev)
    ids = torch.randint(0, vocab, (args.batch, args.seq + 1), device=dev)
    autocast = dev.type == "cuda" or args.bf16
    for _ in range(2):  # warm-up: kernels compiled, caches filled
        step(model, ids, autocast)
    model.zero_grad(set_to_none=True)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        step(model, ids, autocast)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    counts, device_ms = Counter(), Counter()
    for e in prof.key_averages():
        if e.key in GLUE:
            counts[e.key] = e.count
            device_ms[e.key] = getattr(e, "device_time_total", 0.0) / 1e3
    total = sum(getattr(e, "self_device_time_total", 0.0) for e in prof.key_averages()) / 1e3
    own = sorted(prof.key_averages(), key=lambda e: -getattr(e, "self_device_time_total", 0.0))[: args.top]
    top = [{"name": e.key[:100], "ms": round(e.self_device_time_total / 1e3, 3), "calls": e.count} for e in own]
    return {
        "row": row,
        "preset": args.preset,
        "scan": args.scan,
        "attn": args.attn,
        "device": str(dev),
        "counts": dict(counts),
        "device_ms": {k: round(v, 3) for k, v in device_ms.items()} if dev.type == "cuda" else None,
        "device_total_ms": round(total, 3) if dev.type == "cuda" else None,
        **({"top": top} if args.top and dev.type == "cuda" else {}),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="13")
    p.add_argument("--preset", default="seed")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--scan", default="ref")
    p.add_argument("--attn", default="sdpa")
    p.add_argument("--d-model", type=int, default=0, help="override the preset's d_model (0: keep)")
    p.add_argument("--n-layers", type=int, default=0, help="override the preset's n_layers (0: keep)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on CPU too")
    p.add_argument("--probe", action="store_true", help="the row at the preset's MQAR recall-probe size")
    p.add_argument("--top", type=int, default=0, help="also list the N ops with the most own device time")
    args = p.parse_args()
    for row in map(int, args.rows.split(",")):
        print(json.dumps(profile_row(row, args)), flush=True)


if __name__ == "__main__":
    main()
