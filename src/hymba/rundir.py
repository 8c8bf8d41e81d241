"""The run-directory layout: every file name ``hymba train`` and ``hymba ablate`` write, and what kind of
directory a path is. Every module that reads or writes a run directory asks :class:`RunDir`.

A training run (``hymba train --out DIR``, ``hymba.train.train``)::

    DIR/config.json, config.toml     the resolved run config (what ``--resume``, ``eval`` and ``generate`` read)
    DIR/run.json                     git revision, command line, versions; one entry per resume
    DIR/train.log, metrics.jsonl     the log, and one JSON object per logged step (a final line at the end)
    DIR/tensorboard/                 with ``train.tensorboard=true``
    DIR/checkpoints/step_NNNNNNN/    checkpoints (``hymba.train.checkpoint``); ``checkpoints/latest`` names the newest
    DIR/model.safetensors            the final weights, with ``tokenizer.json`` and ``results.json`` (final metrics)
    DIR/lm_eval.json                 ``hymba eval``'s scores
    DIR/.lock                        held by the process writing to DIR

A checkpoint in NVIDIA's released layout (``HymbaLM.save_pretrained``, a download of nvidia/Hymba-1.5B-Base;
``hymba.model.pretrained``) shares ``config.json`` (HymbaConfig fields instead of the run config),
``model.safetensors`` (official tensor names) and ``tokenizer.json``; sharded weights are listed in
``model.safetensors.index.json``.

An ablation (``hymba ablate --out DIR``, ``hymba.ablation``)::

    DIR/results.json, results.csv    one record per row (``hymba.ablation.store``, the source of truth)
    DIR/table.{csv,md,json}, *.png   the report (``hymba.ablation.report``)
    DIR/recall_curves.json           the recall sweeps' learning curves (row, learning rate, seed)
    DIR/rows/<id>/train/             the row's training run (a training run directory, as above)
    DIR/rows/<id>/error.txt          the traceback of a failed row
    DIR/.lock
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from hymba.io import LOCK_FILE


@dataclass(frozen=True)
class RunDir:
    """The files of the run directory at ``path`` (a training run, or an ablation holding one per row)."""

    path: Path

    # a training run
    CONFIG_JSON: ClassVar[str] = "config.json"
    CONFIG_TOML: ClassVar[str] = "config.toml"
    RUN_JSON: ClassVar[str] = "run.json"
    TRAIN_LOG: ClassVar[str] = "train.log"
    METRICS: ClassVar[str] = "metrics.jsonl"
    TENSORBOARD: ClassVar[str] = "tensorboard"
    TOKENIZER: ClassVar[str] = "tokenizer.json"
    WEIGHTS: ClassVar[str] = "model.safetensors"  # also the weights' name inside a checkpoint
    WEIGHTS_INDEX: ClassVar[str] = "model.safetensors.index.json"  # sharded weights (the released layout)
    RESULTS: ClassVar[str] = "results.json"  # a training run's final metrics; an ablation's row records
    LM_EVAL: ClassVar[str] = "lm_eval.json"
    CHECKPOINTS: ClassVar[str] = "checkpoints"
    CHECKPOINT_GLOB: ClassVar[str] = "step_*"
    LATEST: ClassVar[str] = "latest"
    LOCK: ClassVar[str] = LOCK_FILE
    # an ablation
    RESULTS_CSV: ClassVar[str] = "results.csv"
    ROWS: ClassVar[str] = "rows"
    ROW_RUN: ClassVar[str] = "train"
    ROW_ERROR: ClassVar[str] = "error.txt"
    TABLES: ClassVar[dict[str, str]] = {"csv": "table.csv", "md": "table.md", "json": "table.json"}
    PLOTS: ClassVar[dict[str, str]] = {"efficiency": "efficiency.png", "quality": "quality.png"}
    RECALL_CURVES: ClassVar[str] = "recall_curves.json"  # every row's MQAR learning curves, per learning rate

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # ---- a training run -----------------------------------------------------------------------------------
    @property
    def config_json(self) -> Path:
        return self.path / self.CONFIG_JSON

    @property
    def config_toml(self) -> Path:
        return self.path / self.CONFIG_TOML

    @property
    def run_json(self) -> Path:
        return self.path / self.RUN_JSON

    @property
    def train_log(self) -> Path:
        return self.path / self.TRAIN_LOG

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def tensorboard(self) -> Path:
        return self.path / self.TENSORBOARD

    @property
    def tokenizer(self) -> Path:
        return self.path / self.TOKENIZER

    @property
    def weights(self) -> Path:
        return self.path / self.WEIGHTS

    @property
    def results(self) -> Path:
        return self.path / self.RESULTS

    @property
    def lm_eval(self) -> Path:
        return self.path / self.LM_EVAL

    @property
    def lock(self) -> Path:
        return self.path / self.LOCK

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def latest(self) -> Path:
        """The file naming the newest checkpoint."""
        return self.checkpoints / self.LATEST

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:07d}"

    # ---- an ablation --------------------------------------------------------------------------------------
    @property
    def results_csv(self) -> Path:
        return self.path / self.RESULTS_CSV

    def row_dir(self, row: int) -> Path:
        return self.path / self.ROWS / str(row)

    def row_run(self, row: int) -> RunDir:
        """The training run directory (weights, config, tokenizer) of ``row``."""
        return RunDir(self.row_dir(row) / self.ROW_RUN)

    @classmethod
    def row_run_name(cls, row: int) -> str:
        """:meth:`row_run` relative to the ablation directory, as a row's record stores it."""
        return f"{cls.ROWS}/{row}/{cls.ROW_RUN}"

    def row_error(self, row: int) -> Path:
        return self.row_dir(row) / self.ROW_ERROR

    # ---- what kind of directory ---------------------------------------------------------------------------
    def is_ablation(self) -> bool:
        """``hymba ablate --out`` wrote here (it has ``rows/``, made before the first row's files)."""
        return (self.path / self.ROWS).is_dir()

    def is_train_run(self) -> bool:
        """``hymba train --out`` wrote here: a saved ``config.json`` and no ablation rows."""
        return not self.is_ablation() and self.config_json.is_file()

    def leftovers(self) -> list[str]:
        """The names in the directory other than its lock file, sorted: what a fresh run would find in its way
        (a run killed early leaves its config and metrics); empty for an absent directory."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.name != self.LOCK)


__all__ = ["RunDir"]
