"""Generation throughput (paper protocol: 8K prompt, batch 128 halved on OOM, bf16) and KV cache for model
configs and ablation rows, one JSON line per model and decode mode (CUDA graph against the eager steps it
replays, in the same run).

    python benchmarks/generation.py --configs configs/models/hymba-1.5b.toml --preset seed --rows 1,6,13
"""

from __future__ import annotations

import argparse
import json

import torch

from hymba import HymbaLM
from hymba.bench import cache_size, generation_throughput, load_model_config
from hymba.presets import row_config


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--configs", default="")
    p.add_argument("--preset", default="seed")
    p.add_argument("--rows", default="")
    p.add_argument("--prompt-len", type=int, default=8192)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--modes", default="graph,eager", help="decode modes to time: graph, eager")
    args = p.parse_args()
    jobs = [(f, load_model_config(f)) for f in filter(None, args.configs.split(","))]
    jobs += [(f"row {r} ({args.preset})", row_config(int(r), args.preset)) for r in filter(None, args.rows.split(","))]
    for name, cfg in jobs:
        size = cache_size(cfg)
        model = None
        for mode in args.modes.split(","):
            try:
                model = model or HymbaLM(cfg).to(device="cuda", dtype=torch.bfloat16)
                r = generation_throughput(model, prompt_len=args.prompt_len, batch=args.batch,
                                          new_tokens=args.new_tokens, device="cuda", cuda_graph=mode == "graph")
                r.update(kv_mb_8k_fp16=size["kv_mb"], ssm_mb=size["ssm_mb"])
            except Exception as e:
                r = {"decode": mode, "error": f"{type(e).__name__}: {e}"[:300]}
            print(json.dumps({"model": name, **r}), flush=True)
            torch.cuda.empty_cache()
        model = None
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
