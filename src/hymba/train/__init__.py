"""Training: optimizer and schedule, the training loop, evaluation, checkpoints, loading a run back, and
data-parallel / sharded training under torchrun (:mod:`hymba.train.parallel`)."""

from hymba.train.checkpoint import latest_checkpoint, load_checkpoint, load_run, save_checkpoint
from hymba.train.trainer import TrainingDiverged, TrainResult, build_optimizer, evaluate, lr_at, no_decay, train

__all__ = [
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
