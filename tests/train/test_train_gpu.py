"""The trainer's CUDA path: bf16 autocast, MFU, evaluation on the GPU (skipped without CUDA)."""

import math

import pytest

from hymba.train import train

pytestmark = pytest.mark.gpu


def test_bf16_training_on_cuda_reports_mfu_and_learns(small_run, tmp_path):
    r = train(small_run(device="cuda", precision="auto", max_steps=30, lr=3e-3), tmp_path / "run")
    assert r.mfu is not None and 0 < r.mfu < 1
    assert math.isfinite(r.val_loss) and r.val_loss < math.log(r.vocab_size)
    assert next(r.model.parameters()).is_cuda


def test_cuda_and_cpu_runs_agree_roughly(small_run, tmp_path):
    cpu = train(small_run(device="cpu", max_steps=20), tmp_path / "cpu")
    gpu = train(small_run(device="cuda", precision="fp32", max_steps=20), tmp_path / "gpu")
    assert abs(cpu.val_loss - gpu.val_loss) < 0.05
