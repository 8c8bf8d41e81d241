"""``hymba report DIR``: rebuild the ablation table (CSV, Markdown, JSON) and plots from ``DIR/results.json``."""

from __future__ import annotations

import argparse
from pathlib import Path

from hymba.errors import UsageError
from hymba.rundir import RunDir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="an ablation output directory (holding results.json)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="tables only")


def run(args: argparse.Namespace) -> int:
    from hymba.ablation.report import print_report, write_report

    if not args.dir.is_dir():
        raise FileNotFoundError(f"no such directory: {args.dir}")
    if RunDir(args.dir).is_train_run():
        raise UsageError(
            f"{args.dir} is a training run (`hymba train`), not an ablation directory; "
            f"`hymba report` reads the output of `hymba ablate --out DIR`"
        )
    table, files = write_report(args.dir, plots=args.plots)
    print_report(table, files)
    return 0
