"""The trainer's CUDA path: bf16 autocast, MFU, evaluation on the GPU (skipped without CUDA)."""

import math

import pytest
import torch

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


def test_cuda_graph_steps_train_as_plain_steps_and_resume_from_them(small_run, tmp_path, copy_run_until):
    """``train.cuda_graphs``: each step replayed as one CUDA graph gives the plain steps' weights (fp32: the same
    kernels), and a run resumed from a plain run's checkpoint continues with graphs as the plain run does (the
    loaded learning rate back on the device, so the schedule still reaches the graph)."""
    plain = train(small_run(device="cuda", precision="fp32", max_steps=8, ckpt_every=4), tmp_path / "plain")
    graphed = train(small_run(device="cuda", precision="fp32", max_steps=8, cuda_graphs=True), tmp_path / "graphed")
    for (name, p), q in zip(plain.model.named_parameters(), graphed.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
    copy_run_until(tmp_path / "plain", tmp_path / "resumed", step=4)
    resumed = train(
        small_run(device="cuda", precision="fp32", max_steps=8, cuda_graphs=True), tmp_path / "resumed", resume=True
    )
    assert resumed.steps == 8
    for (name, p), q in zip(plain.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
