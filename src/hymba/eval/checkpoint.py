"""Loading a training run directory (``hymba train``, ``hymba.train.train``) for evaluation.

A run directory holds ``config.json`` (the resolved :class:`~hymba.config.RunConfig`), ``tokenizer.json``,
the final ``model.safetensors`` and ``checkpoints/step_*/``. The final weights are used when present,
otherwise the latest verified checkpoint (an interrupted run). The evaluation length defaults to the
training sequence length ``train.seq_len``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hymba.config import RunConfig
from hymba.data.tokenizer import TextTokenizer
from hymba.model import HymbaLM
from hymba.train.checkpoint import WEIGHTS_FILE, latest_checkpoint, load_checkpoint, load_weights

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"


def load_run(run_dir: Path | str, device: str | torch.device = "cpu") -> tuple[HymbaLM, TextTokenizer, RunConfig]:
    """``(model in eval mode, tokenizer, resolved run config)`` of a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    for name in (CONFIG_FILE, TOKENIZER_FILE):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir} is not a training run directory: {name} is missing")
    try:
        raw = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{run_dir / CONFIG_FILE} is corrupt (not valid JSON: {e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{run_dir / CONFIG_FILE} is corrupt (not a JSON object)")
    cfg = RunConfig.from_dict(raw, where=str(run_dir / CONFIG_FILE))
    d = cfg.data
    tokenizer = TextTokenizer.from_file(run_dir / TOKENIZER_FILE, d.pad_token, d.bos_token, d.eos_token)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ValueError(f"{run_dir}: tokenizer has {tokenizer.vocab_size} tokens, model.vocab_size is only "
                         f"{cfg.model.vocab_size}")
    model = HymbaLM(cfg.model)
    if (run_dir / WEIGHTS_FILE).is_file():
        load_weights(model, run_dir / WEIGHTS_FILE)
    else:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise FileNotFoundError(f"{run_dir} has neither {WEIGHTS_FILE} nor a checkpoint under checkpoints/")
        load_checkpoint(ckpt, model)
    return model.to(device).eval(), tokenizer, cfg
