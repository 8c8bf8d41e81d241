"""The Triton selective scan against the plain-PyTorch reference: outputs, last state, every gradient.

On CPU the kernels run under ``TRITON_INTERPRET=1`` (slow, so tiny shapes and an 8-step chunk that puts
chunk boundaries inside them); on CUDA compiled, at real shapes, per dtype."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are defined
pytest.importorskip("triton")

from hymba.kernels.scan import selective_scan  # noqa: E402
from hymba.kernels.scan import triton as scan_triton  # noqa: E402
from hymba.kernels.scan.ref import selective_scan_ref  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"


def _inputs(b, d, L, n, dtype=torch.float32, layout="bdl"):
    g = dict(dtype=torch.float32, device=DEVICE)
    x = dict(
        u=torch.randn(b, d, L, **g),
        delta=torch.randn(b, d, L, **g) * 0.5 - 1,
        A=-torch.exp(torch.randn(d, n, **g)),
        B=torch.randn(b, n, L, **g),
        C=torch.randn(b, n, L, **g),
        D=torch.randn(d, **g),
        z=torch.randn(b, d, L, **g),
        delta_bias=torch.randn(d, **g) * 0.1,
    )
    if layout == "bld":  # as the model passes them: [B, L, D] tensors transposed, no copies
        for k in ("u", "delta", "z"):
            x[k] = x[k].transpose(1, 2).contiguous().transpose(1, 2)
        for k in ("B", "C"):
            x[k] = x[k].transpose(1, 2).contiguous().transpose(1, 2)
    return {k: (v.to(dtype) if k in ("u", "delta", "B", "C", "z") else v).requires_grad_(True) for k, v in x.items()}


def _compare(x, rtol, atol, **kw):
    y1, h1 = selective_scan_ref(**x, delta_softplus=True, return_last_state=True, **kw)
    y2, h2 = scan_triton.selective_scan_triton(**x, delta_softplus=True, return_last_state=True, **kw)
    assert y2.dtype == y1.dtype and h2.dtype == torch.float32
    torch.testing.assert_close(y2.float(), y1.float(), rtol=rtol, atol=atol)
    torch.testing.assert_close(h2, h1, rtol=rtol, atol=atol)
    w, wh = torch.randn_like(y1.float()), torch.randn_like(h1)
    leaves = [v for v in [*x.values(), *kw.values()] if v is not None and v.requires_grad]
    g1 = torch.autograd.grad((y1.float() * w).sum() + (h1 * wh).sum(), leaves)
    g2 = torch.autograd.grad((y2.float() * w).sum() + (h2 * wh).sum(), leaves)
    names = [k for k, v in [*x.items(), *kw.items()] if v is not None and v.requires_grad]
    for name, a, b in zip(names, g1, g2):
        assert b.dtype == a.dtype, name
        torch.testing.assert_close(
            b.float(), a.float(), rtol=rtol, atol=atol * max(1.0, float(a.abs().max())), msg=f"grad of {name}"
        )


@pytest.fixture(params=scan_triton.IMPLS)
def small_chunks(request, monkeypatch):
    """Each implementation in turn; interpreted, an 8-step chunk puts chunk boundaries in tiny lengths."""
    monkeypatch.setattr(scan_triton, "IMPL", request.param)
    if INTERPRETED:
        monkeypatch.setattr(scan_triton, "CHUNK", 8)
    return request.param


# lengths around the chunk boundary (8 interpreted, 64 compiled), unrolled 4 steps at a time (tails) or not
CASES = [(L, 4) for L in ((1, 7, 8, 9, 19, 37) if INTERPRETED else (1, 63, 64, 65, 512, 2049))] + [(19, 1), (67, 1)]


@pytest.mark.parametrize("L,unroll", CASES[:-1] if INTERPRETED else CASES)
def test_outputs_state_and_gradients_match_the_reference(L, unroll, small_chunks, monkeypatch):
    monkeypatch.setattr(scan_triton, "UNROLL", unroll)
    monkeypatch.setattr(scan_triton, "CHUNKED_BLOCK_D", 4)  # 5 channels: two blocks, the second masked
    monkeypatch.setattr(scan_triton, "CHUNKED_FWD_BLOCK_D", 4)
    torch.manual_seed(L)
    _compare(_inputs(2, 5, L, 4), rtol=1e-4, atol=1e-4)


def test_model_layout_optional_parts_and_initial_state(small_chunks):
    torch.manual_seed(1)
    x = _inputs(2, 3, 11, 3, layout="bld")  # N = 3 is not a power of two: padded and masked
    _compare(x, rtol=1e-4, atol=1e-4)
    x = {k: v for k, v in _inputs(1, 3, 10, 4).items() if k not in ("D", "z", "delta_bias")}
    h0 = torch.randn(1, 3, 4, device=DEVICE, requires_grad=True)
    _compare(x, rtol=1e-4, atol=1e-4, initial_state=h0)


@pytest.mark.parametrize("other", scan_triton.IMPLS)
def test_any_backward_serves_any_forward(small_chunks, other, monkeypatch):
    """All implementations save the same chunk start states, so switching ``IMPL`` between the passes holds."""
    torch.manual_seed(3)
    x = _inputs(2, 5, 19, 4)
    y1 = selective_scan_ref(**x, delta_softplus=True)
    y2 = scan_triton.selective_scan_triton(**x, delta_softplus=True)
    monkeypatch.setattr(scan_triton, "IMPL", other)
    w = torch.randn_like(y1)
    for name, a, b in zip(
        x, torch.autograd.grad((y1 * w).sum(), list(x.values())), torch.autograd.grad((y2 * w).sum(), list(x.values()))
    ):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * max(1.0, float(a.abs().max())), msg=f"grad of {name}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_keep_an_fp32_state(dtype, small_chunks):
    torch.manual_seed(2)
    x = _inputs(2, 4, 9 if INTERPRETED else 300, 4, dtype=dtype)
    y1, h1 = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    y2, h2 = scan_triton.selective_scan_triton(**x, delta_softplus=True, return_last_state=True)
    assert y2.dtype == dtype and h2.dtype == torch.float32
    torch.testing.assert_close(h2, h1, rtol=1e-4, atol=1e-4)  # the same fp32 arithmetic on the same inputs
    torch.testing.assert_close(y2.float(), y1.float(), rtol=1e-2, atol=1e-2)  # one rounding of the output


def test_gradients_are_deterministic(small_chunks):
    x = _inputs(2, 40, 17, 4)  # two channel blocks: dB/dC reduced across programs
    y = scan_triton.selective_scan_triton(**x, delta_softplus=True)
    w = torch.randn_like(y)
    g1 = torch.autograd.grad((y * w).sum(), list(x.values()), retain_graph=True)
    g2 = torch.autograd.grad((y * w).sum(), list(x.values()))
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


def test_custom_ops_fake_implementations_match_shapes_and_strides(small_chunks):
    """What torch.compile traces with: the fake outputs' shapes, dtypes and strides (du in u's, dB in [B, L, N]'s)."""
    x = {k: v.detach() for k, v in _inputs(2, 5, 11, 4, layout="bld").items()}
    args = (*x.values(), torch.randn(2, 5, 4, device=DEVICE), True)
    torch.library.opcheck(scan_triton._scan_fwd, args, test_utils=("test_schema", "test_faketensor"))
    out, last, chk = scan_triton._scan_fwd(*args)
    bwd_args = (torch.randn_like(out), torch.randn_like(last), *x.values(), chk, True)
    torch.library.opcheck(scan_triton._scan_bwd, bwd_args, test_utils=("test_schema", "test_faketensor"))


def test_dispatch_by_name(small_chunks):
    x = {k: v.detach() for k, v in _inputs(1, 3, 5, 2).items()}
    torch.testing.assert_close(
        selective_scan(**x, delta_softplus=True, backend="triton"),
        selective_scan_ref(**x, delta_softplus=True),
        rtol=1e-4,
        atol=1e-4,
    )


def _model_pair(row: int, **kw):
    from hymba import HymbaLM
    from hymba.presets import row_config

    small = dict(d_model=16, n_layers=2, head_dim=8, window=4, n_meta_tokens=2) if INTERPRETED else dict(window=16)
    cfg = row_config(row, "tiny", vocab_size=50, init_std=0.2, scan_backend="ref", **small, **kw)
    ref = HymbaLM(cfg).to(DEVICE)
    fast = HymbaLM(cfg.replace(scan_backend="triton")).to(DEVICE)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


@pytest.mark.parametrize("row", [1, 13])
def test_whole_model_with_triton_matches_reference_logits_and_gradients(row, small_chunks):
    ref, fast = _model_pair(row)
    ids = torch.randint(0, 50, (2, 10 if INTERPRETED else 200), device=DEVICE)
    a, b = ref(ids[:, :-1], labels=ids[:, 1:]), fast(ids[:, :-1], labels=ids[:, 1:])
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-4, atol=1e-4)
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.gpu
@pytest.mark.parametrize("row", [1, 6, 13])
def test_compiled_fullgraph_matches_eager(row):
    ref, fast = _model_pair(row, attn_backend="sdpa")
    compiled = torch.compile(fast, fullgraph=True)
    ids = torch.randint(0, 50, (2, 200), device=DEVICE)
    a, b = fast(ids[:, :-1], labels=ids[:, 1:]), compiled(ids[:, :-1], labels=ids[:, 1:])
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-5)
