"""``hymba eval DIR --tasks piqa,arc_easy,...``: lm-evaluation-harness on trained checkpoints.

DIR is a training run (``hymba train``): results go to ``DIR/lm_eval.json`` (see :func:`summarize`). Or DIR
is an ablation (``hymba ablate --out DIR``): every finished row's checkpoint is evaluated the same way (rows
already scored on the same tasks are skipped, so a stopped run resumes), and the ablation report is rewritten
with a Commonsense column. Needs the ``eval`` extra.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from hymba.cli import UsageError, parse_device
from hymba.io import atomic_write

RESULTS_FILE = "lm_eval.json"
DEFAULT_DTYPE, DEFAULT_SEED = "float32", 1234


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="run directory written by `hymba train` (weights + config + tokenizer), "
                   "or an ablation directory (`hymba ablate --out`): every finished row, then the report")
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names, e.g. piqa,arc_easy,hellaswag")
    p.add_argument("--include-path", action="append", default=[],
                   help="extra folder of task YAML files (repeatable), e.g. local offline tasks")
    p.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: each task's own)")
    p.add_argument("--limit", type=float, default=None, help="documents per task (int) or fraction (< 1), for smoke runs (default: all)")
    p.add_argument("--batch-size", type=int, default=8, help="requests scored per forward pass (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=None, help="longest input in tokens (default: training length)")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when available), cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--dtype", default=DEFAULT_DTYPE, choices=["float32", "bfloat16", "float16"],
                   help="weights' dtype (default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help="harness seeds: few-shot sampling, sampled generation (default: %(default)s)")
    p.add_argument("--output", type=Path, default=None, help=f"results file (default: RUN_DIR/{RESULTS_FILE})")


def request_record(tasks: list[str], *, num_fewshot: int | None = None, limit: float | None = None,
                   include_path: list[str] | None = None, max_length: int | None = None, dtype: str = DEFAULT_DTYPE,
                   seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """What was asked of the harness, as ``lm_eval.json`` records it: every setting that changes the scores
    (a rerun with an equal record may reuse them). ``limit`` >= 1 counts documents."""
    return {"requested_tasks": list(tasks), "num_fewshot": num_fewshot,
            "limit": int(limit) if limit is not None and limit >= 1 else limit,
            "include_path": [str(Path(p).resolve()) for p in include_path or []], "max_length": max_length,
            "dtype": dtype, "seed": seed}


def read_summary(path: Path) -> dict[str, Any]:
    """An ``lm_eval.json`` written earlier; a damaged one is an error naming it (and is left as it is)."""
    try:
        return json.loads(Path(path).read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it and rerun `hymba eval`") from None


def summarize(results: dict[str, Any], *, checkpoint: str, request: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The ``lm_eval.json`` record: per task ``acc`` (and ``acc_norm``, stderrs, document count when the
    task reports them), ``mean_acc`` (the unweighted mean of ``acc`` over the tasks that report it; a group's
    own aggregate is not counted beside its subtasks), and the :func:`request_record`."""
    groups = {g for g, subtasks in results.get("group_subtasks", {}).items() if subtasks}
    per_task: dict[str, dict[str, float]] = {}
    for name, metrics in results["results"].items():
        if name in groups:
            continue
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
        "tasks": per_task,
        "mean_acc": sum(accs) / len(accs) if accs else None,
        **request,
        "lm_eval_version": lm_eval.__version__,
        "seconds": seconds,
    }


def evaluate_checkpoint(run_dir: Path, tasks: list[str], *, include_path: list[str] | None = None,
                        num_fewshot: int | None = None, limit: float | None = None, batch_size: int = 8,
                        max_length: int | None = None, device: str = "auto", dtype: str = DEFAULT_DTYPE,
                        seed: int = DEFAULT_SEED, output: Path | None = None) -> dict[str, Any]:
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
    request = request_record(tasks, num_fewshot=num_fewshot, limit=limit, include_path=include_path,
                             max_length=max_length, dtype=dtype, seed=seed)
    t0 = time.perf_counter()
    lm = HymbaLMEval(str(run_dir), batch_size=batch_size, max_length=max_length, device=device, dtype=dtype)
    tm = TaskManager(include_path=request["include_path"] or None)
    missing = [t for t in tasks if not tm.match_tasks([t])]
    if missing:
        raise UsageError(f"unknown lm-eval task(s): {', '.join(missing)} (local tasks need --include-path)")
    try:
        results = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=request["limit"],
                                          task_manager=tm,
                                          log_samples=False, random_seed=seed, numpy_random_seed=seed,
                                          torch_random_seed=seed, fewshot_random_seed=seed)
    except ConnectionError as e:  # no network (or HF_DATASETS_OFFLINE=1) and the task's data not cached
        raise ConnectionError(f"--tasks {','.join(tasks)}: cannot download the task data "
                              f"({str(e).splitlines()[0]}); check the network, or use local tasks "
                              f"(--include-path)") from None
    summary = summarize(results, checkpoint=str(run_dir), request=request, seconds=time.perf_counter() - t0)
    out = Path(output) if output is not None else run_dir / RESULTS_FILE
    atomic_write(out, json.dumps(summary, indent=2) + "\n")
    return summary


def _acc(v: float | None) -> str:
    return "n/a (no task reports acc)" if v is None else f"{v:.4f}"


def evaluate_ablation(out_dir: Path, tasks: list[str], *, echo=print, **kwargs: Any) -> dict[int, dict[str, Any]]:
    """:func:`evaluate_checkpoint` on every finished row of an ablation directory (a row already scored on the
    same tasks and settings is kept), then the report with its Commonsense column. Returns the summaries."""
    from hymba.ablation.report import print_report, row_run_dir, write_report
    from hymba.ablation.store import read_results

    results = read_results(out_dir)
    rows = sorted(int(k) for k, rec in results["rows"].items() if rec.get("status") == "done")
    if not rows:
        raise UsageError(f"{out_dir} holds no finished ablation rows to evaluate")
    request = request_record(tasks, **{k: v for k, v in kwargs.items() if k not in ("batch_size", "device")})
    summaries = {}
    for row in rows:
        run_dir, head = row_run_dir(out_dir, row), f"row {row}"
        earlier = run_dir / RESULTS_FILE
        if earlier.is_file():
            prev = read_summary(earlier)
            if all(prev.get(k) == v for k, v in request.items()):
                echo(f"{head}: evaluated earlier, mean acc {_acc(prev['mean_acc'])}")
                summaries[row] = prev
                continue
        summaries[row] = evaluate_checkpoint(run_dir, tasks, **kwargs)
        echo(f"{head}: mean acc {_acc(summaries[row]['mean_acc'])} ({summaries[row]['seconds']:.0f}s)")
    print_report(*write_report(out_dir), echo=echo)
    return summaries


def run(args: argparse.Namespace) -> int:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise UsageError("--tasks is empty; give comma-separated task names")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size={args.batch_size} must be >= 1")
    parse_device(args.device)  # an unknown or absent device is a usage error before anything loads
    kwargs = dict(include_path=args.include_path, num_fewshot=args.num_fewshot, limit=args.limit,
                  batch_size=args.batch_size, max_length=args.max_length, device=args.device, dtype=args.dtype,
                  seed=args.seed)
    if (Path(args.run_dir) / "rows").is_dir() and (Path(args.run_dir) / "results.json").is_file():  # an ablation
        if args.output is not None:
            raise UsageError("--output applies to one run directory; an ablation writes rows/<id>/train/lm_eval.json")
        evaluate_ablation(Path(args.run_dir), tasks, **kwargs)
        return 0
    summary = evaluate_checkpoint(args.run_dir, tasks, output=args.output, **kwargs)
    width = max(len(t) for t in summary["tasks"]) if summary["tasks"] else 4
    for name, row in summary["tasks"].items():
        norm = f"  acc_norm {row['acc_norm']:.4f}" if "acc_norm" in row else ""
        print(f"{name:<{width}}  acc {row['acc']:.4f}{norm}")
    if summary["mean_acc"] is not None:
        print(f"{'mean':<{width}}  acc {summary['mean_acc']:.4f}")
    print(f"wrote {args.output or Path(args.run_dir) / RESULTS_FILE}")
    return 0
