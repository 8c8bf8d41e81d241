"""The paper's design-roadmap table (Hymba, arXiv 2411.13676, first version's Table 1) as data.

Ablation models of about 300M parameters trained on 100B FineWeb tokens. Commonsense is the mean accuracy
over 8 tasks, Recall the mean over SWDE and FDA (both in %), Throughput the generation tokens/s on one A100
at 8K tokens and batch 128 (halved on out-of-memory), Cache the KV cache at 8K tokens in FP16 (MB).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields

import pandas as pd


@dataclass(frozen=True)
class PaperRow:
    id: int
    configuration: str
    attn_mamba: str  # parameter ratio Attn:Mamba, as printed
    commonsense: float
    recall: float
    throughput: float  # generated tokens/s
    cache_mb: float


PAPER_ROWS: tuple[PaperRow, ...] = (
    PaperRow(1, "Mamba heads only", "0:1", 42.98, 19.23, 4720.8, 1.87),
    PaperRow(2, "Mamba + 4 attn heads", "1:8.48", 44.20, 44.65, 3278.1, 99.09),
    PaperRow(3, "Mamba + 8 attn heads", "1:4.24", 44.95, 52.53, 1816.5, 197.39),
    PaperRow(4, "Mamba + 16 attn heads", "1:2.12", 45.08, 56.46, 656.6, 394.00),
    PaperRow(5, "4) + GQA", "1:3.64", 45.19, 49.90, 876.7, 148.24),
    PaperRow(6, "Attn heads only (Llama)", "1:0", 44.08, 39.98, 721.1, 414.72),
    PaperRow(7, "5) + all SWA", "1:3.64", 44.42, 29.78, 4485.09, 5.51),
    PaperRow(8, "5) + SWA + full attn in first/middle/last layer", "1:3.64", 44.56, 48.79, 2399.7, 41.19),
    PaperRow(9, "8) + cross-layer KV sharing", "1:5.23", 45.16, 48.04, 2756.5, 39.42),
    PaperRow(10, "6) + the same KV compression (SWA/global + KV sharing + GQA)", "1:0", 43.60, 28.18, 3710.0, 28.98),
    PaperRow(11, "9) with concat fusion instead of mean", "1:5.82", 44.56, 48.94, 1413.9, 39.42),
    PaperRow(12, "1) + meta tokens", "0:1", 44.01, 19.34, 4712.8, 1.87),
    PaperRow(13, "9) + meta tokens (= Hymba)", "1:5.23", 45.53, 51.79, 2695.8, 40.01),
)

# report column name -> PaperRow field
PAPER_COLUMNS = {
    "Paper Attn:Mamba": "attn_mamba",
    "Paper Commonsense": "commonsense",
    "Paper Recall": "recall",
    "Paper Throughput": "throughput",
    "Paper Cache MB": "cache_mb",
}


def paper_table() -> pd.DataFrame:
    """The paper's 13 rows, indexed by row id, with the ``PaperRow`` field names as columns."""
    names = [f.name for f in fields(PaperRow)]
    return pd.DataFrame([astuple(r) for r in PAPER_ROWS], columns=names).set_index("id")


__all__ = ["PAPER_COLUMNS", "PAPER_ROWS", "PaperRow", "paper_table"]
