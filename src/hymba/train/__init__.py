"""Training: the optimiser step (:mod:`hymba.train.step`: AdamW groups, schedule, CUDA-graphed steps), the
training loop, evaluation, checkpoints, loading a run back, and data-parallel / sharded training under
torchrun (:mod:`hymba.train.parallel`)."""

from hymba.train.checkpoint import latest_checkpoint, load_checkpoint, load_run, save_checkpoint
from hymba.train.step import GraphedStep, TrainingDiverged, build_optimizer, lr_at, no_decay
from hymba.train.trainer import TrainResult, evaluate, train

__all__ = [
    "GraphedStep",
    "TrainResult",
    "TrainingDiverged",
    "build_optimizer",
    "evaluate",
    "latest_checkpoint",
    "load_checkpoint",
    "load_run",
    "lr_at",
    "no_decay",
    "save_checkpoint",
    "train",
]
