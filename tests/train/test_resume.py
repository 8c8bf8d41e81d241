"""Checkpoints: resume continues bit for bit from the checkpoint; damaged checkpoints and misuse are clear
errors or fall back to an intact checkpoint."""

import json
import logging
import os
import shutil
import stat

import pytest
import torch

from hymba.train import train
from hymba.train.checkpoint import latest_checkpoint


def _metrics(out):
    """(steps of the loss lines, number of final lines) of metrics.jsonl."""
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in recs if "loss" in r], sum(bool(r.get("final")) for r in recs)


@pytest.fixture
def optimizer_steps(monkeypatch):
    """Counts AdamW steps taken."""
    count = []
    step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: (count.append(1), step(self, *a, **k))[1])
    return count


def test_resume_equals_an_uninterrupted_run(small_run, tmp_path, caplog, optimizer_steps, copy_run_until):
    cfg = small_run(max_steps=6, ckpt_every=3, grad_accum=2)
    full = train(cfg, tmp_path / "full")
    # as if killed -9 after the log of step 6: metrics.jsonl runs past the checkpoint (step 3)
    copy_run_until(tmp_path / "full", tmp_path / "resumed", step=3)
    optimizer_steps.clear()
    with caplog.at_level(logging.INFO, logger="hymba"):
        resumed = train(cfg, tmp_path / "resumed", resume=True)
    assert f"resumed from {tmp_path / 'resumed' / 'checkpoints' / 'step_0000003'} at step 3" in caplog.messages
    assert len(optimizer_steps) == 3  # only the remaining steps ran
    assert resumed.steps == 6
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.val_loss == full.val_loss
    # the lines logged after the checkpoint were dropped and logged again: every step once, one final line
    assert _metrics(tmp_path / "resumed") == _metrics(tmp_path / "full") == ([1, 2, 3, 4, 5, 6], 1)


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(small_run, tmp_path, caplog, optimizer_steps):
    cfg = small_run(max_steps=6, ckpt_every=3)
    full = train(cfg, tmp_path / "full")
    shutil.copytree(tmp_path / "full", tmp_path / "run", ignore=shutil.ignore_patterns("results.json"))
    ckpts = tmp_path / "run" / "checkpoints"
    weights = ckpts / "step_0000006" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, e.g. by a full disk
    optimizer_steps.clear()
    with caplog.at_level(logging.WARNING, logger="hymba"):
        resumed = train(cfg, tmp_path / "run", resume=True)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"checkpoint {ckpts / 'step_0000006'} is corrupted: model.safetensors does not match its SHA-256 in "
        f"manifest.json; resuming from the newest intact checkpoint, {ckpts / 'step_0000003'}, instead"
    ]
    assert len(optimizer_steps) == 3 and resumed.val_loss == full.val_loss


def test_resume_that_only_evaluates_writes_valid_json(small_run, tmp_path, copy_run_until):
    cfg = small_run(max_steps=3)
    train(cfg, tmp_path / "full")
    # killed after the last checkpoint, before the final evaluation: nothing left to train, only to evaluate
    copy_run_until(tmp_path / "full", tmp_path / "run", step=3)
    result = train(cfg, tmp_path / "run", resume=True)
    assert result.steps == 3 and result.train_tokens_per_s is None
    text = (tmp_path / "run" / "results.json").read_text()
    saved = json.loads(text, parse_constant=lambda c: pytest.fail(f"results.json holds {c}"))
    assert saved["train_tokens_per_s"] is None and saved["val_loss"] == result.val_loss
    assert _metrics(tmp_path / "run") == ([1, 2, 3], 1)
    # now it is finished: resuming again changes nothing
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(ValueError, match=r"nothing to resume: .* finished at step 3 \(train.max_steps=3\)"):
        train(cfg, tmp_path / "run", resume=True)
    assert {p: p.read_bytes() for p in before} == before


def test_checkpoints_and_run_files_respect_the_umask(small_run, tmp_path):
    old = os.umask(0o027)
    try:
        train(small_run(max_steps=1), tmp_path / "run")
    finally:
        os.umask(old)
    out = tmp_path / "run"
    ckpt = out / "checkpoints" / "step_0000001"
    for p in (
        out / "config.json",
        out / "model.safetensors",
        out / "checkpoints" / "latest",
        ckpt / "model.safetensors",
        ckpt / "state.pt",
    ):
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o750


def test_corrupted_checkpoint_is_a_clear_error(small_run, tmp_path):
    cfg = small_run(max_steps=2)
    train(cfg, tmp_path / "run")
    (tmp_path / "run" / "results.json").unlink()  # killed before the final evaluation
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
    with pytest.raises(FileNotFoundError, match="cannot resume: .*run does not exist"):
        train(cfg, tmp_path / "run", resume=True)
    assert not (tmp_path / "run").exists()
    (tmp_path / "stale").mkdir()  # a run killed before its first checkpoint
    (tmp_path / "stale" / "config.json").write_text(json.dumps(cfg.to_dict()))
    with pytest.raises(FileNotFoundError, match="no checkpoint under .*stale/checkpoints"):
        train(cfg, tmp_path / "stale", resume=True)
    train(cfg, tmp_path / "run")
    with pytest.raises(ValueError, match=r"is not empty \(checkpoints, config.json, .*\); pass --resume"):
        train(cfg, tmp_path / "run")
    cfg.model = cfg.model.replace(d_model=48)
    with pytest.raises(ValueError, match=r"config changed \(model.d_model: 32 -> 48\)"):
        train(cfg, tmp_path / "run", resume=True)
