"""``hymba eval DIR --tasks piqa,arc_easy,...``: lm-evaluation-harness on trained checkpoints.

DIR is a training run (``hymba train``) or a checkpoint in NVIDIA's released layout: results go to
``DIR/lm_eval.json`` (``hymba.eval.harness``). Or DIR is an ablation (``hymba ablate --out DIR``): every finished
row's checkpoint is evaluated the same way (rows already scored on the same tasks are skipped, so a stopped run
resumes), and the ablation report is rewritten with a Commonsense column (``hymba.ablation.evaluate``). Needs
the ``eval`` extra.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hymba.cli.args import add_device_arg, parse_device
from hymba.errors import UsageError
from hymba.eval.harness import DEFAULT_DTYPE, DEFAULT_SEED, evaluate_checkpoint
from hymba.rundir import RunDir
from hymba.runtime import TORCH_DTYPE_NAMES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run_dir",
        type=Path,
        help="run directory written by `hymba train` (weights + config + tokenizer), a released checkpoint "
        "directory (e.g. a download of nvidia/Hymba-1.5B-Base), "
        "or an ablation directory (`hymba ablate --out`): every finished row, then the report",
    )
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names, e.g. piqa,arc_easy,hellaswag")
    p.add_argument(
        "--include-path",
        action="append",
        default=[],
        help="extra folder of task YAML files (repeatable), e.g. local offline tasks",
    )
    p.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: each task's own)")
    p.add_argument(
        "--limit",
        type=float,
        default=None,
        help="documents per task (int) or fraction (< 1), for smoke runs (default: all)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="requests scored per forward pass (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=None, help="longest input in tokens (default: training length)")
    add_device_arg(p)
    p.add_argument(
        "--dtype", default=DEFAULT_DTYPE, choices=list(TORCH_DTYPE_NAMES), help="weights' dtype (default: %(default)s)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help="harness seeds: few-shot sampling, sampled generation (default: %(default)s)",
    )
    p.add_argument("--output", type=Path, default=None, help=f"results file (default: RUN_DIR/{RunDir.LM_EVAL})")


def run(args: argparse.Namespace) -> int:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise UsageError("--tasks is empty; give comma-separated task names")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size={args.batch_size} must be >= 1")
    parse_device(args.device)  # an unknown or absent device is a usage error before anything loads
    kwargs = dict(
        include_path=args.include_path,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        batch_size=args.batch_size,
        max_length=args.max_length,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
    )
    if RunDir(args.run_dir).is_ablation():
        from hymba.ablation.evaluate import evaluate_ablation

        if args.output is not None:
            raise UsageError(
                "--output applies to one run directory; an ablation writes "
                f"{RunDir.row_run_name('<id>')}/{RunDir.LM_EVAL}"
            )
        evaluate_ablation(Path(args.run_dir), tasks, **kwargs)
        return 0
    summary = evaluate_checkpoint(args.run_dir, tasks, output=args.output, **kwargs)
    width = max(len(t) for t in summary["tasks"]) if summary["tasks"] else 4
    for name, row in summary["tasks"].items():
        norm = f"  acc_norm {row['acc_norm']:.4f}" if "acc_norm" in row else ""
        print(f"{name:<{width}}  acc {row['acc']:.4f}{norm}")
    if summary["mean_acc"] is not None:
        print(f"{'mean':<{width}}  acc {summary['mean_acc']:.4f}")
    print(f"wrote {args.output or RunDir(args.run_dir).lm_eval}")
    return 0
