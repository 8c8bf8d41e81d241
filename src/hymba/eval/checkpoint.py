"""Loading a run directory for evaluation: model weights, resolved config and tokenizer.

A run directory holds (as training writes it)::

    config.json          the resolved run config: {"model": {ModelConfig fields}, "data": {...}, "train": {...}}
                         (a bare ModelConfig dict is accepted too)
    model.safetensors    the model's state dict
    tokenizer.json       a Hugging Face ``tokenizers`` tokenizer

The evaluation length defaults to ``train.seq_len`` (or ``data.seq_len``) when the config records it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hymba.config import ModelConfig
from hymba.model import HymbaLM

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|eos|>")


class TokenizerFile:
    """A ``tokenizers.Tokenizer`` with the three methods the lm-eval adapter needs."""

    def __init__(self, path: Path, eos_token: str | None = None):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))
        names = (eos_token,) if eos_token else EOS_NAMES
        ids = [self._tok.token_to_id(n) for n in names]
        found = [i for i in ids if i is not None]
        if not found:
            raise ValueError(f"{path}: no end-of-text token among {', '.join(names)}; set data.eos_token in config.json")
        self._eos = found[0]

    @property
    def eos_id(self) -> int:
        return self._eos

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)


def _seq_len(cfg: dict[str, Any]) -> int | None:
    for section in ("train", "data"):
        v = cfg.get(section, {}).get("seq_len") if isinstance(cfg.get(section), dict) else None
        if isinstance(v, int) and v > 0:
            return v
    return None


def load_for_eval(run_dir: Path, device: str | torch.device = "cpu") -> tuple[HymbaLM, TokenizerFile, int | None]:
    """``(model in eval mode, tokenizer, training sequence length or None)`` from a run directory."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir} is not a run directory: {name} is missing")
    cfg = json.loads((run_dir / CONFIG_FILE).read_text())
    model_cfg = ModelConfig.from_dict(cfg["model"] if "model" in cfg else cfg, where=f"{run_dir / CONFIG_FILE} model")
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    tokenizer = TokenizerFile(run_dir / TOKENIZER_FILE, eos_token=data.get("eos_token"))
    if tokenizer.vocab_size > model_cfg.vocab_size:
        raise ValueError(f"{run_dir}: tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size="
                         f"{model_cfg.vocab_size}")
    model = HymbaLM(model_cfg)
    state = load_file(str(run_dir / WEIGHTS_FILE), device="cpu")
    if model_cfg.tie_embeddings:
        # tied weights may be stored once under either name
        state.setdefault("lm_head.weight", state.get("embed.weight"))
        state.setdefault("embed.weight", state.get("lm_head.weight"))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), tokenizer, _seq_len(cfg)


def save_for_eval(run_dir: Path, model: HymbaLM, tokenizer_json: Path | str | None = None,
                  extra: dict[str, Any] | None = None) -> Path:
    """Write a run directory :func:`load_for_eval` reads (tests and hand-made checkpoints; training writes
    its own)."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"model": model.config.to_dict(), **(extra or {})}
    (run_dir / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)  # safetensors refuses shared storage
    save_file(state, str(run_dir / WEIGHTS_FILE))
    if tokenizer_json is not None:
        (run_dir / TOKENIZER_FILE).write_text(Path(tokenizer_json).read_text())
    return run_dir
