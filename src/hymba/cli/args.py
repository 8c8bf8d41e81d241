"""Arguments several subcommands share: ``--device``, ``--set``, and which model config (``--config`` or ``--row`` at
``--preset``) for the benchmark subcommands; ``--scan-impl`` and ``--global-attn`` for the benchmark scripts."""

from __future__ import annotations

import argparse

import torch

from hymba.config import ModelConfig
from hymba.errors import UsageError
from hymba.runtime import DeviceError, resolve_device

DEFAULT_ROW = 13


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N (default: %(default)s)"
    )


def add_set_arg(p: argparse.ArgumentParser, help: str) -> None:
    """``--set SECTION.FIELD=VALUE`` (repeatable), collected in ``args.overrides``."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE", help=help)


def add_scan_impl_arg(p: argparse.ArgumentParser) -> None:
    """``--scan-impl NAME``: the Triton scan's implementation (:func:`hymba.kernels.scan.triton_impl`), set as the
    flag is parsed; an unknown name is a usage error naming the choices."""

    def impl(name: str) -> str:
        from hymba.kernels.scan import triton_impl

        try:
            return triton_impl(name)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    p.add_argument("--scan-impl", type=impl, help="the Triton scan's implementation: sequential or chunked")


def add_global_attn_arg(p: argparse.ArgumentParser) -> None:
    """``--global-attn NAME``: what attention backend ``auto`` runs a global layer of the plain layout on, on CUDA
    (:data:`hymba.kernels.attention.GLOBAL_CAUSAL`), set as the flag is parsed; an unknown name is a usage error
    naming the choices."""
    from hymba.kernels import attention

    def choice(name: str) -> str:
        if name not in attention.GLOBAL_CAUSALS:
            raise argparse.ArgumentTypeError(f"{name!r}: expected one of {', '.join(attention.GLOBAL_CAUSALS)}")
        attention.GLOBAL_CAUSAL = name
        return name

    p.add_argument(
        "--global-attn",
        type=choice,
        default=attention.GLOBAL_CAUSAL,
        help="what `auto` runs global layers on, on CUDA: sdpa (its causal kernel) or flex "
        "(hymba.kernels.attention.GLOBAL_CAUSAL; default: %(default)s)",
    )


def parse_device(name: str, flag: str = "--device") -> torch.device:
    """:func:`hymba.runtime.resolve_device` of a flag's value; a name it refuses is a :class:`UsageError`
    naming ``flag`` (``--device tpu: unknown device; ...``)."""
    try:
        return resolve_device(name, key=flag)
    except DeviceError as e:
        hint = f"; use {flag} cpu or auto" if e.fallback else ""
        raise UsageError(f"{flag} {name}: {e.problem}{hint}") from None


def add_model_args(p: argparse.ArgumentParser) -> None:
    from hymba.presets import SCALES

    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--config",
        help="model config TOML with a [model] table (e.g. configs/models/hymba-1.5b.toml); default: --row at --preset",
    )
    g.add_argument(
        "--row",
        type=int,
        default=DEFAULT_ROW,
        help="ablation row of roadmap.toml at the scale --preset (default: %(default)s, the full Hymba)",
    )
    p.add_argument(
        "--preset", default="tiny", metavar="{" + ",".join(SCALES) + "}", help="scale for --row (default: %(default)s)"
    )


def model_config_from_args(args: argparse.Namespace) -> tuple[ModelConfig, str]:
    from hymba.bench import load_model_config
    from hymba.presets import ROW_NAMES, SCALES, row_config

    if args.config:
        return load_model_config(args.config), args.config
    if args.row not in ROW_NAMES:
        raise UsageError(f"--row {args.row}: no such ablation row; rows are {min(ROW_NAMES)}..{max(ROW_NAMES)}")
    if args.preset not in SCALES:
        raise UsageError(f"--preset {args.preset}: unknown scale; expected one of {', '.join(SCALES)}")
    return row_config(args.row, args.preset), f"row {args.row} ({args.preset})"
