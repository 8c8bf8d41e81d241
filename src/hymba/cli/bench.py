"""`hymba bench`: generation throughput with the paper's protocol (random weights are fine for timing)."""

from __future__ import annotations

import argparse
import json

from hymba.bench import generation_throughput
from hymba.cli.args import add_device_arg, add_model_args, model_config_from_args, parse_device
from hymba.model import HymbaLM
from hymba.runtime import DTYPES


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (default: 8192 on CUDA, 256 on CPU)")
    p.add_argument(
        "--batch", type=int, default=None, help="start batch, halved on out-of-memory (default: 128 on CUDA, 4 on CPU)"
    )
    p.add_argument(
        "--new-tokens", type=int, default=None, help="generated tokens per prompt (default: 64 on CUDA, 16 on CPU)"
    )
    add_device_arg(p)
    p.add_argument(
        "--dtype", choices=sorted(DTYPES), default=None, help="weights' dtype (default: bf16 on CUDA, fp32 on CPU)"
    )
    p.add_argument("--eager", action="store_true", help="decode step by step in Python, not from a CUDA graph")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    cfg, name = model_config_from_args(args)
    dev = parse_device(args.device)
    gpu = dev.type == "cuda"
    dtype = DTYPES[args.dtype or ("bf16" if gpu else "fp32")]
    model = HymbaLM(cfg).to(device=dev, dtype=dtype)

    def pick(value, on_gpu, on_cpu):
        return value if value is not None else (on_gpu if gpu else on_cpu)

    r = generation_throughput(
        model,
        prompt_len=pick(args.prompt_len, 8192, 256),
        batch=pick(args.batch, 128, 4),
        new_tokens=pick(args.new_tokens, 64, 16),
        device=dev,
        cuda_graph=False if args.eager else None,
    )
    if args.json:
        print(json.dumps({"model": name, "device": str(dev), **r}))
    else:
        print(
            f"{name} on {dev}: {r['tokens_per_s']:.1f} generated tok/s (batch {r['batch_used']}, prompt "
            f"{r['prompt_len']}, {r['new_tokens']} new, {r['decode']} decode; prefill {r['prefill_s']:.2f}s)"
        )
    return 0
