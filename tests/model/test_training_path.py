"""``torch.compile(fullgraph=True)``, as the trainer compiles (``hymba.train.step.compile_model``), of the
training step of rows 1, 6 and 13 against eager (logits, loss and every gradient, at init_std 0.2): on CPU with
the reference scan and, interpreted, the Triton scan's custom op; on CUDA with the Triton scan under flex and
sdpa attention and bf16 autocast."""

import importlib.util
import os

import pytest
import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None
if HAS_TRITON and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are defined, as tests/kernels do

from hymba import HymbaLM  # noqa: E402
from hymba.presets import row_config  # noqa: E402
from hymba.train.step import compile_model  # noqa: E402

SMALL = dict(d_model=16, n_layers=2, head_dim=8, window=4, n_meta_tokens=2, vocab_size=50, init_std=0.2)


def _loss_and_grads(m, ids, autocast=False, run=None):
    """One training forward + backward of ``m`` (through ``run``, e.g. its compiled form): output, grads."""
    m.zero_grad(set_to_none=True)
    with torch.autocast(ids.device.type, torch.bfloat16, enabled=autocast):
        out = (m if run is None else run)(ids[:, :-1], labels=ids[:, 1:])
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


def _check_compiled(row, device, scan, attn, autocast, T, rtol, atol, small=SMALL):
    torch._dynamo.reset()
    cfg = row_config(row, "tiny", **small, scan_backend=scan, attn_backend=attn)
    m = HymbaLM(cfg).to(device)
    ids = torch.randint(0, 50, (2, T + 1), device=device)
    eager, g_eager = _loss_and_grads(m, ids, autocast)
    compiled, g_comp = _loss_and_grads(m, ids, autocast, compile_model(m, fullgraph=True))  # fullgraph: no break
    torch.testing.assert_close(compiled.logits, eager.logits, rtol=rtol, atol=atol)
    torch.testing.assert_close(compiled.loss, eager.loss, rtol=rtol, atol=atol)
    assert g_comp.keys() == g_eager.keys()
    for name, g in g_eager.items():
        torch.testing.assert_close(g_comp[name], g, rtol=rtol, atol=atol * max(1.0, float(g.abs().max())), msg=name)


@pytest.mark.parametrize("row", [1, 6, 13])
def test_compiled_fullgraph_matches_eager_on_cpu(row):
    _check_compiled(row, "cpu", "ref", "sdpa", False, T=8, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_compiled_fullgraph_through_the_triton_scan_custom_op_on_cpu():
    """Row 13 with the Triton scan (interpreted on CPU): the custom op and its fake traces without a break."""
    if torch.cuda.is_available():
        pytest.skip("the CUDA variant below covers it")
    _check_compiled(13, "cpu", "triton", "sdpa", False, T=8, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("attn", ["flex", "sdpa"])
@pytest.mark.parametrize("row", [1, 6, 13])
def test_compiled_fullgraph_matches_eager_on_cuda_with_triton(row, attn, monkeypatch):
    """fp32 without TF32 (at init_std 0.2 bf16 roundings of fused vs unfused ops move single logits by 0.1-0.3,
    which would hide a real error); head dims of 16, the smallest flex compiles (row 13's V head dim is
    d_inner / n_heads = 256 / 16)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    small = {**SMALL, "d_model": 128, "head_dim": 16}
    _check_compiled(row, "cuda", "triton", attn, False, T=200, rtol=1e-3, atol=1e-4, small=small)


def test_training_scan_reads_channels_contiguous(monkeypatch):
    """In a training step (autograd on: PyTorch's conv runs, not the Triton one) every per-step input of the
    scan has its channels innermost: the kernels load one step's channels at a time and write du in u's
    layout, so a [B, D, L]-contiguous u made those loads and stores strided by L."""
    import hymba.model.ssm as ssm

    seen = []

    def spy(u, delta, A, B, C, D, z, delta_bias, **kw):
        seen.append({"u": u, "delta": delta, "B": B, "C": C, "z": z})
        return real(u, delta, A, B, C, D, z, delta_bias, **kw)

    real = ssm.selective_scan
    monkeypatch.setattr(ssm, "selective_scan", spy)
    cfg = row_config(13, "tiny", **SMALL, scan_backend="ref", attn_backend="sdpa")
    ids = torch.randint(0, 50, (2, 9))
    _loss_and_grads(HymbaLM(cfg), ids)
    assert len(seen) == SMALL["n_layers"]
    for call in seen:
        for name, t in call.items():  # [B, D or N, L] views: dim 1 (channels / states) has stride 1
            assert t.stride(1) == 1, f"{name} {tuple(t.shape)} strides {t.stride()}"
