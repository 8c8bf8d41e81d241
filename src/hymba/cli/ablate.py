"""``hymba ablate [--preset auto|tiny|seed|paper] [--rows 1,5] [--out DIR] [--set ...] [--gpus 0,1] [--recall-only]``.

Trains and measures the paper's design-roadmap rows one after another (or, with ``--gpus``, concurrently, one
worker process per GPU), saving each finished row at once; rerunning the same command resumes. Ends with the
table beside the paper's numbers and the files written. The hidden ``--cpu-workers N`` runs the concurrent
path with N CPU worker processes: how the tests exercise it without GPUs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hymba.ablation.settings import PRESETS
from hymba.cli.args import add_set_arg
from hymba.rundir import RunDir


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of workers (a positive integer or auto)") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        default="auto",
        metavar="{" + ",".join(PRESETS) + "}",
        help="scale of roadmap.toml: auto = seed on a GPU, tiny on CPU (default: %(default)s)",
    )
    p.add_argument("--rows", default=None, help="rows to run, in this order, e.g. 13,1,5 or 1-4 (default: all rows)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default runs/ablation-<preset>)")
    add_set_arg(
        p,
        "override a setting of the scale: model.*, data.*, train.*, bench.*, recall.* "
        "(e.g. --set train.max_steps=50; repeatable)",
    )
    p.add_argument("--force", action="store_true", help="redo rows that are already finished")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--recall",
        dest="recall",
        action="store_true",
        default=None,
        help="measure MQAR recall per row (default: on for GPU runs, off on CPU)",
    )
    g.add_argument("--no-recall", dest="recall", action="store_false", help="do not measure MQAR recall")
    p.add_argument(
        "--recall-workers",
        type=_workers,
        default="auto",
        metavar="N",
        help="run N recall runs (row, learning rate, seed) at a time in parallel processes, after every row "
        "is trained and timed (small probes leave most of a GPU idle); 1 = inline, row by row; default auto: "
        "1 on CPU, on a GPU up to 6 as its free memory allows",
    )
    p.add_argument(
        "--recall-only",
        action="store_true",
        help="measure only the Recall column (the MQAR probe trains its own models): no language-model "
        "training; a later run without it trains the rows and keeps their recall",
    )

    p.add_argument(
        "--gpus",
        default=None,
        metavar="IDS",
        help="train rows concurrently, one worker process per GPU: ids like 0,1,3 or auto (every visible GPU); "
        "recall follows once every row is trained (default: one row after another in this process)",
    )
    p.add_argument("--cpu-workers", type=int, default=0, help=argparse.SUPPRESS)  # the tests' stand-in for --gpus


def run(args: argparse.Namespace) -> int:
    from hymba.ablation.report import print_report
    from hymba.ablation.runner import run_ablation

    result = run_ablation(
        args.preset,
        args.rows,
        args.out,
        args.overrides,
        force=args.force,
        recall=args.recall,
        recall_workers=args.recall_workers,
        gpus=args.gpus,
        cpu_workers=args.cpu_workers,
        recall_only=args.recall_only,
    )
    out = result.out_dir
    print_report(result.table, result.files)
    if result.failed:
        print(
            f"hymba ablate: {len(result.failed)} row(s) failed: {', '.join(map(str, result.failed))} "
            f"(see {RunDir(out).row_error('<id>')}); rerun to retry them",
            file=sys.stderr,
        )
        return 1
    return 0
