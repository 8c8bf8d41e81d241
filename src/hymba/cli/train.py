"""``hymba train [--config FILE.toml] --out DIR [--set section.field=value ...] [--resume]``.

Without ``--config`` it trains the ``tiny`` base model on the built-in Shakespeare corpus. ``--resume``
continues the run in ``--out`` with the run's own config (``--out/config.json``). Under ``torchrun`` every rank
runs this command and trains its part (``hymba.train.parallel``); rank 0 alone prints.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hymba.cli.args import add_set_arg
from hymba.config import RunConfig
from hymba.errors import UsageError
from hymba.rundir import RunDir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="run config (TOML with [model], [data], [train]); default: tiny model, built-in corpus",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="run directory: resolved config, git revision, logs, metrics, checkpoints, final weights",
    )
    add_set_arg(
        p,
        "override one config field, e.g. --set data.source=corpus.txt --set train.max_steps=100 "
        '(repeatable; values are TOML: 3, 1e-3, true, [0, 5], "text")',
    )
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from this checkpoint directory (a released Hymba download, e.g. nvidia/Hymba-1.5B-Base, or "
        "a `hymba train` run): its model, weights and tokenizer; the rest as for a fresh run (train.init; "
        "default: a freshly initialised model)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest intact checkpoint, with the run's own config "
        "(--out/config.json); --set changes train settings on top and is recorded in run.json; "
        "--config (with the same --set) must give the saved config, else it is an error",
    )


def run(args: argparse.Namespace) -> int:
    from hymba.train.parallel import RankZeroFailed, launch

    rank = launch().rank
    try:
        return _run(args, rank)
    except RankZeroFailed as e:  # a step only rank 0 performs failed there; rank 0 prints why
        return 2 if e.usage else 1
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError):
        if rank > 0:  # bad input fails every rank alike (the rest goes through rank 0): one message, from rank 0
            return 2
        raise


def _run(args: argparse.Namespace, rank: int) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from hymba.train.step import TrainingDiverged
    from hymba.train.trainer import TrainingInterrupted, config_diff, format_diff, saved_config, train

    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a directory")
    if args.resume and args.init is not None:
        raise UsageError("--init starts a fresh run; --resume continues the run in --out from its checkpoints")
    if args.resume:
        cfg = saved_config(args.out, args.overrides)
        if args.config is not None:
            diff = config_diff(cfg, RunConfig.load(args.config, args.overrides))
            if diff:
                raise UsageError(
                    f"--config {args.config} differs from the run's own config "
                    f"({format_diff(diff)}); "
                    f"--resume continues with {RunDir(args.out).config_json}: drop --config and change "
                    "train settings with --set"
                )
    else:
        cfg = RunConfig.load(args.config, args.overrides)
        if args.init is not None:
            cfg.train = cfg.train.replace(init=str(args.init))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        with logging_redirect_tqdm():
            result = train(cfg, args.out, resume=args.resume)
    except TrainingDiverged as e:
        if rank == 0:
            print(f"hymba train: error: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        if rank == 0:
            print(f"hymba train: interrupted by {e}", file=sys.stderr)
        return 128 + e.signum
    if rank > 0:
        return 0
    mfu = f"  mfu {result.mfu:.1%}" if result.mfu is not None else ""
    speed = "n/a" if result.train_tokens_per_s is None else f"{result.train_tokens_per_s:,.0f}"
    print(
        f"val_loss {result.val_loss:.4f}  val_ppl {result.val_ppl:.2f}  val_acc {result.val_acc:.4f}  "
        f"train {speed} tokens/s{mfu}  ({result.steps} steps, {result.n_params:,} params)"
        f"  -> {result.out_dir}"
    )
    return 0
