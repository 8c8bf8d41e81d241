"""The `hymba` command line. Each subcommand lives beside the code it drives and registers itself here.

A subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Bad input (``ValueError``,
``FileNotFoundError``, ``UsageError``) becomes one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hymba", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        p.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(p)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            p.set_defaults(_missing=True)
    args = parser.parse_args(argv)
    if getattr(args, "_missing", False):
        print(f"hymba {args.command}: not available in this build", file=sys.stderr)
        return 2
    from hymba.malloc import keep_freed_memory

    keep_freed_memory()  # big CPU activations are reused, not page-faulted in every step
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"hymba {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hymba {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # run the imported module, not this __main__ copy: subcommands raise hymba.cli.UsageError
    from hymba.cli import main as _main

    sys.exit(_main())
