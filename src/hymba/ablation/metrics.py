"""The per-row metrics of the ablation as one table: what each is, who measures it, where it is shown.

The runner reads the ``train`` metrics off the training result, the store writes ``results.csv`` from the
table, and the report builds its columns (header, unit scale, decimals) from it. A new metric is one
:class:`RowMetric` line here (and, if it has a column, its key in :data:`REPORT_ORDER`), beside the code that
measures it when nothing measures it yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

Source = Literal["train", "model", "recall"]


@dataclass(frozen=True)
class RowMetric:
    """One value of a row's record (``results.json``).

    ``source``: who measures it: ``train`` (the ``hymba.train`` result's attribute of the same name, read by
    ``runner.train_row``), ``model`` (``runner.measure_row`` on the trained model) or ``recall``
    (``runner.recall_row``, MQAR). ``header``: the report's column, None for a record-only value; its cell is
    the value times ``scale`` (fractions to %, counts to millions), shown with ``decimals`` (0: with thousands
    separators); ``kind`` ``int`` and ``text`` cells are shown as they are. ``csv``: also in ``results.csv``.
    """

    key: str
    source: Source
    header: str | None = None
    scale: float = 1.0
    decimals: int | None = None
    kind: Literal["float", "int", "text"] = "float"
    csv: bool = True

    def cell(self, record: dict[str, Any], done: bool) -> Any:
        """The report's cell for one record: NaN (``int``: NA) for a failed row or a missing value."""
        v = record.get(self.key)
        if self.kind == "text":
            return v or ""
        if self.kind == "int":
            return int(v) if done and v is not None else pd.NA
        if not done or not isinstance(v, (int, float)) or isinstance(v, bool):
            return math.nan
        return float(v) * self.scale


# in results.csv's column order
ROW_METRICS: tuple[RowMetric, ...] = (
    RowMetric("params", "model", "Params (M)", scale=1e-6, decimals=3),
    RowMetric("attn_params", "model"),
    RowMetric("ssm_params", "model"),
    RowMetric("attn_mamba", "model", "Attn:Mamba", kind="text"),
    RowMetric("val_loss", "train"),
    RowMetric("val_ppl", "train", "Val PPL", decimals=2),
    RowMetric("val_acc", "train", "Token acc", scale=100.0, decimals=1),
    RowMetric("val_tokens", "train", csv=False),
    RowMetric("train_tokens_per_s", "train", "Train tok/s", decimals=0),
    RowMetric("mfu", "train"),
    RowMetric("steps", "train", "Steps", kind="int"),
    RowMetric("gen_tokens_per_s", "model", "Gen tok/s", decimals=0),
    RowMetric("gen_batch", "model"),
    RowMetric("gen_prompt_len", "model"),
    RowMetric("gen_new_tokens", "model"),
    RowMetric("kv_mb", "model", "KV cache MB", decimals=3),
    RowMetric("ssm_mb", "model", "SSM state MB", decimals=3),
    RowMetric("recall_acc", "recall", "Recall acc", scale=100.0, decimals=1),
    RowMetric("recall_best_lr", "recall"),  # the learning rate of the sweep the row is scored at
)
METRICS: dict[str, RowMetric] = {m.key: m for m in ROW_METRICS}

# the report's metric columns, in the order shown (between Configuration and Status)
REPORT_ORDER: tuple[str, ...] = (
    "params",
    "attn_mamba",
    "val_ppl",
    "val_acc",
    "recall_acc",
    "train_tokens_per_s",
    "gen_tokens_per_s",
    "kv_mb",
    "ssm_mb",
    "steps",
)
_shown = {m.key for m in ROW_METRICS if m.header}
if set(REPORT_ORDER) != _shown:  # a metric with a header but no place (or a place but no header)
    raise AssertionError(f"REPORT_ORDER and the metrics with a header differ: {sorted(set(REPORT_ORDER) ^ _shown)}")
REPORT_METRICS: tuple[RowMetric, ...] = tuple(METRICS[k] for k in REPORT_ORDER)


def train_metrics(result: Any) -> dict[str, Any]:
    """The ``train`` metrics of a training result (``hymba.train.TrainResult``), in table order."""
    return {m.key: getattr(result, m.key) for m in ROW_METRICS if m.source == "train"}


__all__ = ["METRICS", "REPORT_METRICS", "REPORT_ORDER", "ROW_METRICS", "RowMetric", "train_metrics"]
