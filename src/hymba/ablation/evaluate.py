"""lm-evaluation-harness on every finished row of an ablation: the report's Commonsense column.

``hymba eval DIR`` on an ablation directory calls :func:`evaluate_ablation`: each finished row's checkpoint
(``rows/<id>/train``) is scored by ``hymba.eval.harness.evaluate_checkpoint`` into its ``lm_eval.json`` (a row
already scored on the same tasks and settings is kept, so a stopped run resumes), then the report is rewritten
with a Commonsense column (``hymba.ablation.report``). Needs the ``eval`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hymba.ablation.report import print_report, write_report
from hymba.ablation.store import read_results
from hymba.errors import UsageError
from hymba.eval.harness import evaluate_checkpoint, read_summary, request_record
from hymba.rundir import RunDir


def _acc(v: float | None) -> str:
    return "n/a (no task reports acc)" if v is None else f"{v:.4f}"


def evaluate_ablation(out_dir: Path, tasks: list[str], *, echo=print, **kwargs: Any) -> dict[int, dict[str, Any]]:
    """:func:`~hymba.eval.harness.evaluate_checkpoint` on every finished row of an ablation directory (a row
    already scored on the same tasks and settings is kept), then the report with its Commonsense column.
    ``kwargs`` are ``evaluate_checkpoint``'s settings (not ``output``). Returns the summaries."""
    results = read_results(out_dir)
    rows = sorted(int(k) for k, rec in results["rows"].items() if rec.get("status") == "done")
    if not rows:
        raise UsageError(f"{out_dir} holds no finished ablation rows to evaluate")
    request = request_record(tasks, **{k: v for k, v in kwargs.items() if k not in ("batch_size", "device")})
    summaries = {}
    for row in rows:
        run, head = RunDir(out_dir).row_run(row), f"row {row}"
        if run.lm_eval.is_file():
            prev = read_summary(run.lm_eval)
            if all(prev.get(k) == v for k, v in request.items()):
                echo(f"{head}: evaluated earlier, mean acc {_acc(prev['mean_acc'])}")
                summaries[row] = prev
                continue
        summaries[row] = evaluate_checkpoint(run.path, tasks, **kwargs)
        echo(f"{head}: mean acc {_acc(summaries[row]['mean_acc'])} ({summaries[row]['seconds']:.0f}s)")
    print_report(*write_report(out_dir), echo=echo)
    return summaries


__all__ = ["evaluate_ablation"]
