"""The paper's 13-row design-roadmap ablation: a resumable runner, the report beside the paper's numbers."""

from hymba.ablation.evaluate import evaluate_ablation
from hymba.ablation.metrics import ROW_METRICS, RowMetric
from hymba.ablation.paper import PAPER_ROWS, PaperRow, paper_table
from hymba.ablation.report import build_table, correlations, spearman, write_report
from hymba.ablation.runner import AblationRun, format_ratio, run_ablation
from hymba.ablation.settings import AblationSettings, BenchSettings, parse_rows, resolve_preset
from hymba.ablation.store import ResultsError, ResultsStore, read_results

__all__ = [
    "AblationRun",
    "AblationSettings",
    "BenchSettings",
    "PAPER_ROWS",
    "PaperRow",
    "ROW_METRICS",
    "ResultsError",
    "ResultsStore",
    "RowMetric",
    "build_table",
    "correlations",
    "evaluate_ablation",
    "format_ratio",
    "paper_table",
    "parse_rows",
    "read_results",
    "resolve_preset",
    "run_ablation",
    "spearman",
    "write_report",
]
