"""Training checkpoints and the final weights, written atomically; loading a run directory back.

A checkpoint is a directory ``<out>/checkpoints/step_NNNNNNN/`` with ``model.safetensors`` (weights),
``state.pt`` (optimizer, step, data-loader and RNG state) and ``manifest.json`` (the SHA-256 of both files).
It is assembled in a temporary directory and renamed into place, and ``<out>/checkpoints/latest`` names the
newest one (replaced atomically too), so an interrupted save never leaves a half-written checkpoint behind;
the manifest turns later corruption into a clear error instead of garbage weights.

:func:`load_run` gives back what a training run directory (``hymba train``, ``hymba.train.train``) holds, for
evaluation and generation: ``config.json`` (the resolved :class:`~hymba.config.RunConfig`), ``tokenizer.json``,
and the final ``model.safetensors`` when present, otherwise the latest verified checkpoint (an interrupted
run). The evaluation length defaults to the training sequence length ``train.seq_len``. File names:
:class:`hymba.rundir.RunDir`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hymba.config import DataConfig, RunConfig, TrainConfig
from hymba.data.tokenizer import TextTokenizer
from hymba.io import atomic_path, atomic_write, fsync_path, json_dumps, umask_mode
from hymba.model import HymbaLM
from hymba.model.pretrained import DEFAULT_MAX_POSITIONS, is_pretrained_dir, read_config
from hymba.rundir import RunDir
from hymba.runtime import resolve_dtype

log = logging.getLogger(__name__)

# inside a checkpoint directory, beside its weights (RunDir.WEIGHTS)
STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_state(model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The model's state dict (or ``state``, one gathered for it, e.g. from FSDP shards) for safetensors: CPU,
    contiguous, a tied output head stored once (as ``embed.weight``; ``hymba.eval`` restores the alias)."""
    state = {k: v.detach().cpu().contiguous() for k, v in (model.state_dict() if state is None else state).items()}
    if getattr(getattr(model, "config", None), "tie_embeddings", False):
        state.pop("lm_head.weight", None)
    return state


def save_weights(
    model: nn.Module,
    path: Path,
    metadata: dict[str, str] | None = None,
    state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Atomically write the model's weights (or ``state``, see :func:`weights_state`) as safetensors."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(weights_state(model, state), tmp, metadata=metadata)


def load_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights written by :func:`save_weights` (strict: every parameter must match)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise ValueError(f"cannot read weights {path}: {e}") from e
    if "embed.weight" in state:
        state.setdefault("lm_head.weight", state["embed.weight"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"weights {path} do not fit the model: {str(e).splitlines()[0]}") from e


def list_checkpoints(out_dir: Path) -> list[Path]:
    root = RunDir(out_dir).checkpoints
    return sorted(p for p in root.glob(RunDir.CHECKPOINT_GLOB) if p.is_dir()) if root.is_dir() else []


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The checkpoint ``latest`` names, else the highest step present, else ``None``."""
    rd = RunDir(out_dir)
    root, latest = rd.checkpoints, rd.latest
    if latest.is_file():
        path = root / latest.read_text().strip()
        if path.is_dir():
            return path
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def save_checkpoint(
    out_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | dict[str, Any],
    state: dict[str, Any],
    keep: int = 2,
    weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it and keep only the newest ``keep``.

    ``optimizer`` is the optimizer or its state dict, ``weights`` the model's state dict where it is not
    ``model.state_dict()``: both as one process holds them (``hymba.train.parallel.full_state`` gathers them
    from a sharded run), so that any number of processes can resume.
    """
    rd = RunDir(out_dir)
    root, final = rd.checkpoints, rd.checkpoint(step)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
    optim_state = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
    try:
        umask_mode(tmp, directory=True)
        save_weights(model, tmp / RunDir.WEIGHTS, metadata={"step": str(step)}, state=weights)
        torch.save({"step": step, "optimizer": optim_state, **state}, tmp / STATE_FILE)
        fsync_path(tmp / STATE_FILE)
        manifest = {"step": step, "sha256": {n: _sha256(tmp / n) for n in (RunDir.WEIGHTS, STATE_FILE)}}
        (tmp / MANIFEST_FILE).write_text(json_dumps(manifest, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write(rd.latest, (final.name + "\n").encode())
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Verify a checkpoint against its manifest, load weights (and optimizer state) in place and return the
    saved state (``step``, ``data``, ``rng``, ...). A missing or damaged file raises ``ValueError``."""
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ValueError(f"checkpoint {path} is incomplete or corrupted: {MANIFEST_FILE} is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
        expected = manifest["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"checkpoint {path} is corrupted: unreadable {MANIFEST_FILE}") from e
    for name, digest in expected.items():
        f = path / name
        if not f.is_file():
            raise ValueError(f"checkpoint {path} is incomplete or corrupted: {name} is missing")
        if _sha256(f) != digest:
            raise ValueError(f"checkpoint {path} is corrupted: {name} does not match its SHA-256 in {MANIFEST_FILE}")
    load_weights(model, path / RunDir.WEIGHTS)
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    if optimizer is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except ValueError as e:  # e.g. a run begun before the FFN's gate and up weights were stacked
            raise ValueError(f"checkpoint {path}: its optimizer state does not fit the model's parameters ({e})") from e
    return state


def load_newest_checkpoint(
    out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> tuple[Path, dict[str, Any]]:
    """Load the newest checkpoint of ``out_dir`` that verifies (:func:`load_checkpoint`) and return its path
    and state. A damaged newest one (e.g. truncated by a full disk) is passed over for the next older one,
    with a warning naming both; if none verifies, the newest one's error is raised."""
    latest = latest_checkpoint(out_dir)
    if latest is None:
        raise FileNotFoundError(
            f"cannot resume: no checkpoint under {RunDir(out_dir).checkpoints} (the run stopped "
            "before its first one); delete the directory or choose another --out to start over"
        )
    error = None
    for path in [latest] + [p for p in reversed(list_checkpoints(out_dir)) if p != latest]:
        try:
            state = load_checkpoint(path, model, optimizer)
        except ValueError as e:
            error = error or e
            continue
        if error is not None:
            log.warning("%s; resuming from the newest intact checkpoint, %s, instead", error, path)
        return path, state
    raise error


def load_run(
    run_dir: Path | str, device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.float32
) -> tuple[HymbaLM, TextTokenizer, RunConfig]:
    """``(model in eval mode, tokenizer, resolved run config)`` of a run directory, or of a directory in the
    released layout (:func:`load_pretrained_run`)."""
    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    if is_pretrained_dir(run_dir):
        return load_pretrained_run(run_dir, device, dtype)
    for path in (rd.config_json, rd.tokenizer):
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a training run directory: {path.name} is missing")
    try:
        raw = json.loads(rd.config_json.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{rd.config_json} is corrupt (not valid JSON: {e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{rd.config_json} is corrupt (not a JSON object)")
    cfg = RunConfig.from_dict(raw, where=str(rd.config_json))
    d = cfg.data
    tokenizer = TextTokenizer.from_file(rd.tokenizer, d.pad_token, d.bos_token, d.eos_token)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ValueError(
            f"{run_dir}: tokenizer has {tokenizer.vocab_size} tokens, model.vocab_size is only {cfg.model.vocab_size}"
        )
    model = HymbaLM(cfg.model)
    if rd.weights.is_file():
        load_weights(model, rd.weights)
    else:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise FileNotFoundError(
                f"{run_dir} has neither {RunDir.WEIGHTS} nor a checkpoint under {RunDir.CHECKPOINTS}/"
            )
        load_checkpoint(ckpt, model)
    return model.to(device=device, dtype=resolve_dtype(dtype)).eval(), tokenizer, cfg


def load_pretrained_run(
    path: Path | str, device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.float32
) -> tuple[HymbaLM, TextTokenizer, RunConfig]:
    """What :func:`load_run` gives for a released-layout directory (``HymbaLM.from_pretrained``): the model,
    its ``tokenizer.json`` with the special tokens ``config.json``'s ``pad/bos/eos_token_id`` name (prompts start
    with BOS when the tokenizer's own post-processor adds it, as the released Llama-style one does), and a
    run config holding the model config, those tokens and ``train.seq_len`` = ``max_position_embeddings``
    (the length generation and evaluation default to)."""
    path = Path(path)
    rd = RunDir(path)
    raw = read_config(path)
    if not rd.tokenizer.is_file():
        raise FileNotFoundError(f"{path} has no {RunDir.TOKENIZER} (the released directories ship one)")
    tok = TextTokenizer.read(rd.tokenizer)
    names = {}
    for key, fallback in (("pad_token_id", "<|pad|>"), ("bos_token_id", "<|bos|>"), ("eos_token_id", "<|eos|>")):
        token_id = raw.get(key)
        name = tok.id_to_token(token_id) if isinstance(token_id, int) else None
        if key == "eos_token_id" and name is None:
            raise ValueError(f"{rd.config_json}: eos_token_id={token_id!r} is not a token of {rd.tokenizer}")
        names[key] = name or fallback
    bos = tok.token_to_id(names["bos_token_id"])
    # a Llama-style tokenizer.json adds BOS through its post-processor: prompts then start with it
    prompt_bos = (
        bos is not None and tok.encode("a").ids[:1] == [bos] != tok.encode("a", add_special_tokens=False).ids[:1]
    )
    model = HymbaLM.from_pretrained(path, device=device, dtype=dtype)
    tokenizer = TextTokenizer(
        tok, names["pad_token_id"], names["bos_token_id"], names["eos_token_id"], str(path), prompt_bos=prompt_bos
    )
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"{path}: tokenizer has {tokenizer.vocab_size} tokens, vocab_size is only {model.config.vocab_size}"
        )
    data = DataConfig(
        tokenizer=str(rd.tokenizer),
        pad_token=names["pad_token_id"],
        bos_token=names["bos_token_id"],
        eos_token=names["eos_token_id"],
    )
    seq_len = raw.get("max_position_embeddings") or DEFAULT_MAX_POSITIONS
    return model, tokenizer, RunConfig(model=model.config, data=data, train=TrainConfig(seq_len=seq_len))
