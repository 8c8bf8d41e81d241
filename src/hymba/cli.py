"""The `hymba` command line. Each subcommand lives beside the code it drives and registers itself here.

A subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Bad input (``ValueError``,
``FileNotFoundError``, ``UsageError``) and a download that cannot reach the network (``ConnectionError``)
become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import sys

# name -> (module, help)
COMMANDS = {
    "train": ("hymba.train.cli", "train one model on a corpus and evaluate it"),
    "ablate": ("hymba.ablation.cli", "run the paper's 13-row design-roadmap ablation"),
    "report": ("hymba.ablation.report_cli", "regenerate the ablation table and plots from saved results"),
    "eval": ("hymba.eval.cli", "evaluate a checkpoint with lm-evaluation-harness"),
    "generate": ("hymba.eval.generate_cli", "sample text from a trained checkpoint"),
    "cache-size": ("hymba.bench.cli_cache", "KV-cache and SSM-state size of a model config"),
    "bench": ("hymba.bench.cli_bench", "generation throughput, paper protocol"),
}


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def parse_device(name: str, flag: str = "--device"):
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N`` as a ``torch.device``; any other name, or
    a CUDA device this machine does not have, is a :class:`UsageError` naming ``flag``."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise UsageError(f"{flag} {name}: unknown device; expected auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{flag} {name}: CUDA is not available here; use {flag} cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def _version() -> str:
    try:
        return importlib.metadata.version("hymba")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        from hymba import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``hymba`` parser with every subcommand (one whose module is not in this build is marked missing)."""
    parser = argparse.ArgumentParser(prog="hymba", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        p.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(p)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            p.set_defaults(_missing=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "_missing", False):
        print(f"hymba {args.command}: not available in this build", file=sys.stderr)
        return 2
    from hymba.malloc import keep_freed_memory

    keep_freed_memory()  # big CPU activations are reused, not page-faulted in every step
    for name in ("huggingface_hub", "datasets"):
        # these print through their own stderr handler; a subcommand's root handler would print each line again
        logging.getLogger(name).propagate = False
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError, ConnectionError) as e:
        print(f"hymba {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hymba {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # run the imported module, not this __main__ copy: subcommands raise hymba.cli.UsageError
    from hymba.cli import main as _main

    sys.exit(_main())
