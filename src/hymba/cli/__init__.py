"""The `hymba` command line: train, run the paper's ablation, evaluate, generate, benchmark.

Each subcommand is one module of this package, named after the command (``hymba.cli.<command>``, ``-``
spelled ``_``), holding only argument parsing and printing: ``add_arguments(parser)`` and
``run(args) -> int``, calling the library for the work. Bad input (``ValueError``, ``FileNotFoundError``,
``hymba.errors.UsageError``) and a download that cannot reach the network (``ConnectionError``) become one
line on stderr and exit code 2, never a traceback. No library module imports this package.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import sys

from hymba.errors import UsageError

# name -> (module, help)
COMMANDS = {
    "train": ("hymba.cli.train", "train one model on a corpus and evaluate it"),
    "ablate": ("hymba.cli.ablate", "run the paper's 13-row design-roadmap ablation"),
    "report": ("hymba.cli.report", "regenerate the ablation table and plots from saved results"),
    "eval": ("hymba.cli.eval", "evaluate a checkpoint with lm-evaluation-harness"),
    "generate": ("hymba.cli.generate", "sample text from a trained checkpoint"),
    "cache-size": ("hymba.cli.cache_size", "KV-cache and SSM-state size of a model config"),
    "bench": ("hymba.cli.bench", "generation throughput, paper protocol"),
}


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
    from hymba.runtime import keep_freed_memory

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


__all__ = ["COMMANDS", "build_parser", "main"]
