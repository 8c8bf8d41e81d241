"""Start a training run from existing weights (``train.init``, ``hymba train --init DIR``).

DIR is a directory in NVIDIA's released layout (``HymbaLM.from_pretrained``) or a ``hymba train`` run: the new
run takes its model config (all but the kernel backends, which stay the run config's), its weights and its
tokenizer (``data.tokenizer`` and the special tokens become the directory's, so the corpus is tokenized the way
the model was trained). The corpus source, schedule, checkpoints, metrics and ``--resume`` are a fresh run's;
a resumed run continues from its own checkpoints and does not read DIR's weights again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from hymba.config import RunConfig
from hymba.rundir import RunDir
from hymba.train.checkpoint import load_run

log = logging.getLogger(__name__)


def resolve_init(run_cfg: RunConfig) -> tuple[RunConfig, dict[str, torch.Tensor]]:
    """``run_cfg`` with the model and tokenizer of ``train.init``, and that directory's weights (a state dict
    of our names, on CPU, fp32). A missing or unreadable directory is an error naming ``train.init``."""
    path = Path(run_cfg.train.init).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"train.init={run_cfg.train.init!r}: {path} is not a checkpoint directory")
    try:
        model, tokenizer, cfg = load_run(path)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"train.init={run_cfg.train.init!r}: {e}") from None
    m = run_cfg.model
    model_cfg = cfg.model.replace(attn_backend=m.attn_backend, scan_backend=m.scan_backend)
    data = run_cfg.data.replace(
        tokenizer=str(RunDir(path.resolve()).tokenizer),
        pad_token=cfg.data.pad_token,
        bos_token=cfg.data.bos_token,
        eos_token=cfg.data.eos_token,
    )
    log.info(
        "train.init %s: model config, weights and tokenizer (%d tokens) from there; the run config's [model] "
        "is used only for the kernel backends",
        path,
        tokenizer.vocab_size,
    )
    return RunConfig(model=model_cfg, data=data, train=run_cfg.train), model.state_dict()


__all__ = ["resolve_init"]
