"""Arguments shared by the benchmark subcommands: which model config, which dtype."""

from __future__ import annotations

import argparse

import torch

from hymba.config import ModelConfig

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--config", help="model config TOML with a [model] table (e.g. configs/models/hymba-1.5b.toml)")
    g.add_argument("--row", type=int, help="ablation row 1..13 (with --preset)")
    p.add_argument("--preset", default="tiny", help="scale for --row: tiny, seed or paper (default tiny)")


def model_config_from_args(args: argparse.Namespace) -> tuple[ModelConfig, str]:
    from hymba.bench import load_model_config
    from hymba.presets import row_config

    if args.config:
        return load_model_config(args.config), args.config
    row = args.row or 13
    return row_config(row, args.preset), f"row {row} ({args.preset})"
