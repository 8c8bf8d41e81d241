"""`hymba bench`: generation throughput with the paper's protocol (random weights are fine for timing), per
decode mode, against the memory-bandwidth floor measured in the same run."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from hymba.bench import DECODE_MODES, generation_benchmark
from hymba.cli.args import add_device_arg, add_model_args, model_config_from_args, parse_device
from hymba.errors import UsageError
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
    p.add_argument(
        "--ssm-state-dtype",
        choices=("fp32", "model"),
        default="fp32",
        help="the SSM state's dtype in the cache: fp32, or the weights' dtype as the released code keeps it "
        "(half the state's bytes per step, rounded after every token) (default: %(default)s)",
    )
    modes = p.add_mutually_exclusive_group()
    modes.add_argument("--eager", action="store_true", help="decode step by step in Python, not from a CUDA graph")
    modes.add_argument(
        "--decode",
        default=None,
        metavar="MODE[,MODE...]",
        help=f"decode modes to time from one prefill, of {', '.join(DECODE_MODES)} (default: cuda_graph on CUDA, "
        "eager on CPU)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    cfg, name = model_config_from_args(args)
    dev = parse_device(args.device)
    gpu = dev.type == "cuda"
    dtype = DTYPES[args.dtype or ("bf16" if gpu else "fp32")]
    model = HymbaLM(cfg).to(device=dev, dtype=dtype)

    def pick(value, on_gpu, on_cpu):
        return value if value is not None else (on_gpu if gpu else on_cpu)

    modes = ("eager",) if args.eager else None
    if args.decode is not None:
        modes = tuple(m.strip() for m in args.decode.split(","))
        bad = [m for m in modes if m not in DECODE_MODES]
        if bad or not modes:
            raise UsageError(
                f"--decode {args.decode}: unknown mode {bad[0] if bad else ''!r}; modes are {DECODE_MODES}"
            )
        if not gpu and modes != ("eager",):
            raise UsageError(f"--decode {args.decode}: only eager decoding runs on {dev}; CUDA graphs need CUDA")

    def report(r: dict) -> None:
        if args.json:
            print(json.dumps({"model": name, "device": str(dev), "dtype": str(dtype).removeprefix("torch."), **r}))
        else:
            print(
                f"{name} on {dev}: {r['tokens_per_s']:.1f} generated tok/s (batch {r['batch_used']}, prompt "
                f"{r['prompt_len']}, {r['new_tokens']} new, {r['decode']} decode; prefill {r['prefill_s']:.2f}s); "
                f"{r['step_ms']:.2f} ms/step for {r['step_gb']:.2f} GB: {100 * r['hbm_fraction']:.0f}% of the "
                f"{r['copy_bw_gbs']:.0f} GB/s copy bandwidth"
            )
        sys.stdout.flush()

    generation_benchmark(
        model,
        prompt_len=pick(args.prompt_len, 8192, 256),
        batch=pick(args.batch, 128, 4),
        new_tokens=pick(args.new_tokens, 64, 16),
        device=dev,
        modes=modes,
        on_result=report,
        ssm_dtype=torch.float32 if args.ssm_state_dtype == "fp32" else dtype,
    )
    return 0
