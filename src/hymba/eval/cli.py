"""``hymba eval RUN_DIR --tasks piqa,arc_easy,...``: lm-evaluation-harness on a trained checkpoint.

Results go to ``RUN_DIR/lm_eval.json`` (see :func:`summarize`), which the ablation report reads for its
Commonsense column. Needs the ``eval`` extra.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from hymba.cli import UsageError

RESULTS_FILE = "lm_eval.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="run directory written by `hymba train` (weights + config + tokenizer)")
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names, e.g. piqa,arc_easy,hellaswag")
    p.add_argument("--include-path", action="append", default=[],
                   help="extra folder of task YAML files (repeatable), e.g. local offline tasks")
    p.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: each task's own)")
    p.add_argument("--limit", type=float, default=None, help="documents per task (int) or fraction (< 1), for smoke runs")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=None, help="longest input in tokens (default: training length)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--seed", type=int, default=1234, help="harness seeds (few-shot sampling, sampled generation)")
    p.add_argument("--output", type=Path, default=None, help=f"results file (default: RUN_DIR/{RESULTS_FILE})")


def summarize(results: dict[str, Any], *, checkpoint: str, tasks: list[str], num_fewshot: int | None,
              limit: float | None, seconds: float) -> dict[str, Any]:
    """The ``lm_eval.json`` record: per task ``acc`` (and ``acc_norm``, stderrs, document count when the
    task reports them) and ``mean_acc``, the unweighted mean of ``acc`` over tasks that report it."""
    per_task: dict[str, dict[str, float]] = {}
    for name, metrics in results["results"].items():
        row = {}
        for key in ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr"):
            v = metrics.get(f"{key},none")
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                row[key] = float(v)
        if "acc" in row:
            n = results.get("n-samples", {}).get(name, {}).get("effective")
            if n is not None:
                row["n"] = int(n)
            per_task[name] = row
    accs = [r["acc"] for r in per_task.values()]
    import lm_eval

    return {
        "checkpoint": checkpoint,
        "requested_tasks": tasks,
        "tasks": per_task,
        "mean_acc": sum(accs) / len(accs) if accs else None,
        "num_fewshot": num_fewshot,
        "limit": limit,
        "lm_eval_version": lm_eval.__version__,
        "seconds": seconds,
    }


def evaluate_checkpoint(run_dir: Path, tasks: list[str], *, include_path: list[str] | None = None,
                        num_fewshot: int | None = None, limit: float | None = None, batch_size: int = 8,
                        max_length: int | None = None, device: str = "auto", dtype: str = "float32",
                        seed: int = 1234, output: Path | None = None) -> dict[str, Any]:
    """Run the harness on ``run_dir`` and write the summary (default ``run_dir/lm_eval.json``)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from hymba.eval.lm_eval_adapter import HymbaLMEval

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    for p in include_path or []:
        if not Path(p).is_dir():
            raise FileNotFoundError(f"--include-path {p} is not a directory")
    if limit is not None and limit >= 1:
        limit = int(limit)
    t0 = time.perf_counter()
    lm = HymbaLMEval(str(run_dir), batch_size=batch_size, max_length=max_length, device=device, dtype=dtype)
    tm = TaskManager(include_path=[str(Path(p).resolve()) for p in include_path] if include_path else None)
    missing = [t for t in tasks if not tm.match_tasks([t])]
    if missing:
        raise UsageError(f"unknown lm-eval task(s): {', '.join(missing)} (local tasks need --include-path)")
    results = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit, task_manager=tm,
                                      log_samples=False, random_seed=seed, numpy_random_seed=seed,
                                      torch_random_seed=seed, fewshot_random_seed=seed)
    summary = summarize(results, checkpoint=str(run_dir), tasks=tasks, num_fewshot=num_fewshot, limit=limit,
                        seconds=time.perf_counter() - t0)
    out = Path(output) if output is not None else run_dir / RESULTS_FILE
    out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run(args: argparse.Namespace) -> int:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise UsageError("--tasks is empty; give comma-separated task names")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size={args.batch_size} must be >= 1")
    summary = evaluate_checkpoint(args.run_dir, tasks, include_path=args.include_path, num_fewshot=args.num_fewshot,
                                  limit=args.limit, batch_size=args.batch_size, max_length=args.max_length,
                                  device=args.device, dtype=args.dtype, seed=args.seed, output=args.output)
    width = max(len(t) for t in summary["tasks"]) if summary["tasks"] else 4
    for name, row in summary["tasks"].items():
        norm = f"  acc_norm {row['acc_norm']:.4f}" if "acc_norm" in row else ""
        print(f"{name:<{width}}  acc {row['acc']:.4f}{norm}")
    if summary["mean_acc"] is not None:
        print(f"{'mean':<{width}}  acc {summary['mean_acc']:.4f}")
    print(f"wrote {args.output or Path(args.run_dir) / RESULTS_FILE}")
    return 0
