"""Checkpoints: resume continues bit for bit; damaged checkpoints and misuse are clear errors."""

import shutil

import pytest
import torch

from hymba.train import train
from hymba.train.checkpoint import latest_checkpoint


def _copy_run_until(src, dst, step):
    """A run directory as if training had been interrupted right after checkpoint ``step``."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", "model.safetensors", "results.json"))
    (dst / "checkpoints").mkdir()
    name = f"step_{step:07d}"
    shutil.copytree(src / "checkpoints" / name, dst / "checkpoints" / name)


def test_resume_equals_an_uninterrupted_run(small_run, tmp_path):
    cfg = small_run(max_steps=6, ckpt_every=3, grad_accum=2)
    full = train(cfg, tmp_path / "full")
    _copy_run_until(tmp_path / "full", tmp_path / "resumed", step=3)
    resumed = train(cfg, tmp_path / "resumed", resume=True)
    assert resumed.steps == 6
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.val_loss == full.val_loss


def test_corrupted_checkpoint_is_a_clear_error(small_run, tmp_path):
    cfg = small_run(max_steps=2)
    train(cfg, tmp_path / "run")
    weights = latest_checkpoint(tmp_path / "run") / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"checkpoint .*step_0000002 is corrupted: model.safetensors"):
        train(cfg, tmp_path / "run", resume=True)
    weights.unlink()
    with pytest.raises(ValueError, match="incomplete or corrupted: model.safetensors is missing"):
        train(cfg, tmp_path / "run", resume=True)


def test_resume_needs_a_checkpoint_and_the_same_config(small_run, tmp_path):
    cfg = small_run(max_steps=2)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(cfg, tmp_path / "run", resume=True)
    train(cfg, tmp_path / "run")
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(cfg, tmp_path / "run")
    cfg.model = cfg.model.replace(d_model=48)
    with pytest.raises(ValueError, match=r"config changed \(model.d_model: 32 -> 48\)"):
        train(cfg, tmp_path / "run", resume=True)
