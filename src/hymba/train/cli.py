"""``hymba train [--config FILE.toml] --out DIR [--set section.field=value ...] [--resume]``.

Without ``--config`` it trains the ``tiny`` base model on the built-in Shakespeare corpus.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hymba.cli import UsageError
from hymba.config import RunConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None,
                   help="run config (TOML with [model], [data], [train]); default: tiny model, built-in corpus")
    p.add_argument("--out", type=Path, required=True,
                   help="run directory: resolved config, git revision, logs, metrics, checkpoints, final weights")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one config field, e.g. --set data.source=corpus.txt --set train.max_steps=100 "
                        "(repeatable; values are TOML: 3, 1e-3, true, [0, 5], \"text\")")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")


def run(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from hymba.train.trainer import TrainingDiverged, train

    cfg = RunConfig.load(args.config, args.overrides)
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a directory")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        with logging_redirect_tqdm():
            result = train(cfg, args.out, resume=args.resume)
    except TrainingDiverged as e:
        print(f"hymba train: error: {e}", file=sys.stderr)
        return 1
    mfu = f"  mfu {result.mfu:.1%}" if result.mfu is not None else ""
    print(f"val_loss {result.val_loss:.4f}  val_ppl {result.val_ppl:.2f}  val_acc {result.val_acc:.4f}  "
          f"train {result.train_tokens_per_s:,.0f} tokens/s{mfu}  ({result.steps} steps, {result.n_params:,} params)"
          f"  -> {result.out_dir}")
    return 0
