"""`hymba cache-size`: KV-cache and SSM-state MB of a model config, as the paper counts (8K tokens, FP16), with
its parameters and Attn:Mamba ratio (the paper's count: ``HymbaLM.attn_mamba_ratio``)."""

from __future__ import annotations

import argparse

import torch

from hymba.ablation.runner import format_ratio
from hymba.bench import cache_size
from hymba.cli.args import add_model_args, model_config_from_args
from hymba.runtime import DTYPES


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--seq-len", type=int, default=8192, help="tokens in the cache (default: %(default)s)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="cache dtype (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    cfg, name = model_config_from_args(args)
    r = cache_size(cfg, args.seq_len, DTYPES[args.dtype])
    from hymba.model import HymbaLM

    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = HymbaLM(cfg)
    params = model.param_breakdown()["total"]
    print(
        f"{name}: KV cache {r['kv_mb']:.2f} MB ({r['kv_layers']} KV layers), SSM state {r['ssm_mb']:.2f} MB "
        f"at {args.seq_len} tokens, {args.dtype} (MB = 1e6 bytes); {params / 1e6:.1f}M parameters, "
        f"Attn:Mamba {format_ratio(*model.attn_mamba_ratio())}"
    )
    return 0
