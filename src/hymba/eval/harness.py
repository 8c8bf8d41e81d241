"""lm-evaluation-harness on a trained checkpoint, and the summary it leaves beside it (``lm_eval.json``).

:func:`evaluate_checkpoint` runs the harness on a training run directory (``hymba train``) through the adapter
(``hymba.eval.lm_eval_adapter``) and writes :func:`summarize`'s record to ``RUN_DIR/lm_eval.json``
(``hymba.rundir.RunDir.lm_eval``); :func:`read_summary` reads one back. ``hymba eval`` (``hymba.cli.eval``)
is its command line; ``hymba.ablation.evaluate`` scores every row of an ablation with it. Running it needs the
``eval`` extra; importing this module does not.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from hymba.errors import UsageError
from hymba.io import atomic_write
from hymba.rundir import RunDir

DEFAULT_DTYPE, DEFAULT_SEED = "float32", 1234


def request_record(
    tasks: list[str],
    *,
    num_fewshot: int | None = None,
    limit: float | None = None,
    include_path: list[str] | None = None,
    max_length: int | None = None,
    dtype: str = DEFAULT_DTYPE,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """What was asked of the harness, as ``lm_eval.json`` records it: every setting that changes the scores
    (a rerun with an equal record may reuse them). ``limit`` >= 1 counts documents."""
    return {
        "requested_tasks": list(tasks),
        "num_fewshot": num_fewshot,
        "limit": int(limit) if limit is not None and limit >= 1 else limit,
        "include_path": [str(Path(p).resolve()) for p in include_path or []],
        "max_length": max_length,
        "dtype": dtype,
        "seed": seed,
    }


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


def evaluate_checkpoint(
    run_dir: Path,
    tasks: list[str],
    *,
    include_path: list[str] | None = None,
    num_fewshot: int | None = None,
    limit: float | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    device: str = "auto",
    dtype: str = DEFAULT_DTYPE,
    seed: int = DEFAULT_SEED,
    output: Path | None = None,
) -> dict[str, Any]:
    """Run the harness on ``run_dir`` and write the summary (default ``run_dir/lm_eval.json``). An unknown task
    is a :class:`~hymba.errors.UsageError`; task data that cannot be downloaded a ``ConnectionError``."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from hymba.eval.lm_eval_adapter import HymbaLMEval

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    for p in include_path or []:
        if not Path(p).is_dir():
            raise FileNotFoundError(f"--include-path {p} is not a directory")
    request = request_record(
        tasks,
        num_fewshot=num_fewshot,
        limit=limit,
        include_path=include_path,
        max_length=max_length,
        dtype=dtype,
        seed=seed,
    )
    t0 = time.perf_counter()
    lm = HymbaLMEval(str(run_dir), batch_size=batch_size, max_length=max_length, device=device, dtype=dtype)
    tm = TaskManager(include_path=request["include_path"] or None)
    missing = [t for t in tasks if not tm.match_tasks([t])]
    if missing:
        raise UsageError(f"unknown lm-eval task(s): {', '.join(missing)} (local tasks need --include-path)")
    try:
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=tasks,
            num_fewshot=num_fewshot,
            limit=request["limit"],
            task_manager=tm,
            log_samples=False,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    except ConnectionError as e:  # no network (or HF_DATASETS_OFFLINE=1) and the task's data not cached
        raise ConnectionError(
            f"--tasks {','.join(tasks)}: cannot download the task data "
            f"({str(e).splitlines()[0]}); check the network, or use local tasks "
            f"(--include-path)"
        ) from None
    summary = summarize(results, checkpoint=str(run_dir), request=request, seconds=time.perf_counter() - t0)
    out = Path(output) if output is not None else RunDir(run_dir).lm_eval
    atomic_write(out, json.dumps(summary, indent=2) + "\n")
    return summary


__all__ = ["DEFAULT_DTYPE", "DEFAULT_SEED", "evaluate_checkpoint", "read_summary", "request_record", "summarize"]
