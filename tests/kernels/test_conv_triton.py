"""The Triton causal conv over a sequence (Mamba-1's conv1d) against PyTorch's conv1d: outputs and the
gradients of x, weight and bias per dtype at odd shapes (lengths around the time block, channels not a
multiple of the channel block), the model's strided input (a slice of the input projection), left padding,
bias and SiLU off; the dispatch (the Triton conv without autograd, PyTorch's with it unless ``TRAIN_CONV``
names ours); and the Triton scan keeping the [B, L, D] layout.

On CPU the kernels run under ``TRITON_INTERPRET=1`` at tiny shapes; on CUDA compiled, at real ones too."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are defined
pytest.importorskip("triton")

from hymba.kernels.scan import causal_conv1d, selective_scan  # noqa: E402
from hymba.kernels.scan.ref import causal_conv1d_ref, selective_scan_ref  # noqa: E402
from hymba.kernels.scan.triton_conv import BLOCK_T, causal_conv1d_triton  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# (B, S, D, K): S = 1, the time block -1/+1, D not a multiple of the 128-channel block, K 2 and 4
CASES = [(2, 1, 5, 4), (1, BLOCK_T - 1, 130, 4), (2, BLOCK_T + 1, 7, 2), (3, 37, 67, 4)]
CASES += [] if INTERPRETED else [(8, 2048, 3200, 4), (4, 1000, 1000, 3)]


@pytest.fixture(autouse=True)
def _exact_fp32():
    # cuDNN convolutions default to TF32 on CUDA; the fp32 comparisons below are fp32 against fp32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = True


def tol(dtype):
    """The reference rounds the conv output to the dtype before SiLU, the kernel once after it."""
    return {torch.float32: (1e-5, 1e-5), torch.bfloat16: (3e-2, 2e-2), torch.float16: (4e-3, 4e-3)}[dtype]


def _inputs(b, s, d, k, dtype, strided):
    g = dict(device=DEVICE, dtype=dtype)
    if strided:  # x as the block passes it: columns of the wider input projection
        x = torch.randn(b, s, 3 * d + 5, **g)[..., d + 5 : 2 * d + 5]
    else:
        x = torch.randn(b, s, d, **g)
    w = torch.randn(d, 1, k, **g) * 0.5
    bias = torch.randn(d, **g) * 0.1
    return x, w, bias


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).split(".")[-1])
@pytest.mark.parametrize("b,s,d,k", CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("strided", [False, True], ids=["contig", "strided"])
def test_conv_matches_pytorch(b, s, d, k, dtype, strided):
    torch.manual_seed(b * 1000 + s + d + k)
    x, w, bias = _inputs(b, s, d, k, dtype, strided)
    got = causal_conv1d_triton(x, w, bias)
    want = causal_conv1d_ref(x, w, bias)
    assert got.shape == (b, s, d) and got.dtype == dtype and got.is_contiguous()
    atol, rtol = tol(dtype)
    torch.testing.assert_close(got.float(), want.float(), atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda t: str(t).split(".")[-1])
def test_conv_left_padding_bias_and_silu_off(dtype):
    torch.manual_seed(0)
    b, s, d, k = 3, 37, 67, 4
    x, w, bias = _inputs(b, s, d, k, dtype, strided=True)
    valid = torch.ones(b, s, dtype=torch.bool, device=DEVICE)
    valid[1, :5] = False
    valid[2, :36] = False  # one real token
    atol, rtol = tol(dtype)
    for bb, silu in ((bias, True), (None, False), (bias, False)):
        got = causal_conv1d_triton(x, w, bb, valid, silu)
        want = causal_conv1d_ref(x, w, bb, valid, silu)
        torch.testing.assert_close(got.float(), want.float(), atol=atol, rtol=rtol)
    got = causal_conv1d_triton(x, w, bias, valid)
    assert (got[~valid] == 0).all()  # padding has no output
    # a padded row's real tokens see exactly what the unpadded row sees: padding never enters the conv
    alone = causal_conv1d_triton(x[1:2, 5:].contiguous(), w, bias)
    torch.testing.assert_close(got[1:2, 5:].float(), alone.float(), atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).split(".")[-1])
@pytest.mark.parametrize("b,s,d,k", CASES[1:], ids=lambda v: str(v))
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
def test_conv_gradients_match_pytorch(b, s, d, k, dtype, padded):
    """dx, dweight and dbias against autograd through PyTorch's conv1d, for the model's strided x and an
    upstream gradient with a transposed layout (as the scan's du arrives)."""
    torch.manual_seed(b * 1000 + s + d + k + 7)
    x, w, bias = _inputs(b, s, d, k, dtype, strided=True)
    valid = None
    if padded:
        valid = torch.ones(b, s, dtype=torch.bool, device=DEVICE)
        valid[0, : s // 2] = False
    dout = torch.randn(b, d, s, device=DEVICE, dtype=dtype).transpose(1, 2)
    grads = []
    for fn in (causal_conv1d_triton, causal_conv1d_ref):
        xx, ww, bb = (t.detach().clone().requires_grad_(True) for t in (x, w, bias))
        fn(xx, ww, bb, valid).backward(dout)
        grads.append((xx.grad, ww.grad, bb.grad))
    (gx, gw, gb), (rx, rw, rb) = grads
    assert gx.dtype == dtype and gw.shape == w.shape
    atol, rtol = tol(dtype)
    n = s * b  # weight and bias gradients are sums over B x S terms of the rounded gradient
    torch.testing.assert_close(gx.float(), rx.float(), atol=atol, rtol=rtol)
    scale = n**0.5  # rounding errors of B x S terms summed in another order
    torch.testing.assert_close(gw.float(), rw.float(), atol=atol * scale, rtol=rtol * 4)
    torch.testing.assert_close(gb.float(), rb.float(), atol=atol * scale, rtol=rtol * 4)
    if padded:
        assert (gx[~valid] == 0).all()


def test_dispatch_runs_triton_without_autograd_and_pytorch_with_it():
    torch.manual_seed(1)
    x, w, bias = _inputs(2, 9, 6, 4, torch.float32, strided=True)
    w.requires_grad_(True)
    with torch.no_grad():
        fast = causal_conv1d(x, w, bias, backend="triton")
    assert fast.is_contiguous()  # [B, S, D], channels innermost, as the scan reads it
    slow = causal_conv1d(x, w, bias, backend="triton")
    assert slow.is_contiguous() and slow.requires_grad  # PyTorch's conv1d, copied out of its [B, D, S] layout
    torch.testing.assert_close(fast, slow.detach(), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        ref = causal_conv1d(x, w, bias, backend="ref")
    assert ref.is_contiguous()


def test_train_conv_triton_puts_autograd_through_the_triton_kernels(monkeypatch):
    """``TRAIN_CONV = "triton"``: where a gradient is needed the conv is our custom op (its autograd node, not
    PyTorch's conv1d + copy), with PyTorch's conv's values and gradients."""
    import hymba.kernels.scan as scan

    torch.manual_seed(3)
    x, w, bias = _inputs(2, BLOCK_T + 3, 9, 4, torch.float32, strided=True)
    outs = {}
    for conv in ("ref", "triton"):
        monkeypatch.setattr(scan, "TRAIN_CONV", conv)
        xx, ww, bb = (t.detach().clone().requires_grad_(True) for t in (x, w, bias))
        u = causal_conv1d(xx, ww, bb, backend="triton")
        u.square().sum().backward()
        outs[conv] = (type(u.grad_fn).__name__, u.detach(), xx.grad, ww.grad, bb.grad)
    assert "causal_conv1d" in outs["triton"][0] and "causal_conv1d" not in outs["ref"][0]
    for got, want in zip(outs["triton"][1:], outs["ref"][1:]):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_train_conv_shift_puts_autograd_through_the_shifted_conv(monkeypatch):
    """``TRAIN_CONV = "shift"``: where a gradient is needed the conv is ``causal_conv1d_shifted``; without one,
    the Triton kernel still runs."""
    import hymba.kernels.scan as scan

    calls = []
    real = scan.causal_conv1d_shifted
    monkeypatch.setattr(scan, "causal_conv1d_shifted", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(scan, "TRAIN_CONV", "shift")
    torch.manual_seed(3)
    x, w, bias = _inputs(2, BLOCK_T + 3, 9, 4, torch.float32, strided=True)
    with torch.no_grad():
        causal_conv1d(x, w, bias, backend="triton")
    assert calls == []
    xx = x.detach().clone().requires_grad_(True)
    u = causal_conv1d(xx, w, bias, backend="triton")
    assert calls == [1]
    u.square().sum().backward()
    want = causal_conv1d_ref(x, w, bias)
    torch.testing.assert_close(u.detach(), want, atol=1e-5, rtol=1e-5)


def test_train_conv_auto_is_the_shifted_conv_under_compile_and_conv1d_in_eager(monkeypatch):
    import hymba.kernels.scan as scan

    calls = []
    real = scan.causal_conv1d_shifted
    monkeypatch.setattr(scan, "causal_conv1d_shifted", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(scan, "TRAIN_CONV", "auto")
    x, w, bias = _inputs(2, 9, 9, 4, torch.float32, strided=True)
    xx = x.detach().clone().requires_grad_(True)
    eager = causal_conv1d(xx, w, bias, backend="triton")
    assert calls == [] and "causal_conv1d" not in type(eager.grad_fn).__name__  # PyTorch's conv1d
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # as inside a torch.compile'd forward
    traced = causal_conv1d(xx, w, bias, backend="triton")
    assert calls == [1]
    torch.testing.assert_close(traced, eager, atol=1e-5, rtol=1e-5)


def test_triton_scan_keeps_the_model_layout():
    """u, delta, z as transposed views of [B, L, D] memory: the output has u's strides (no copy after the scan)
    and the reference's values."""
    torch.manual_seed(2)
    b, L, d, n = 2, 37, 67, 4
    g = dict(device=DEVICE)
    u, delta, z = (torch.randn(b, L, d, **g).transpose(1, 2) for _ in range(3))
    delta = delta * 0.5 - 1
    A = -torch.exp(torch.randn(d, n, **g))
    B, C = (torch.randn(b, L, n, **g).transpose(1, 2) for _ in range(2))
    D, bias = torch.randn(d, **g), torch.randn(d, **g) * 0.1
    args = (u, delta, A, B, C, D, z, bias)
    got, last = selective_scan(*args, delta_softplus=True, return_last_state=True, backend="triton")
    want, want_last = selective_scan_ref(*args, delta_softplus=True, return_last_state=True)
    assert got.stride() == u.stride()
    assert got.transpose(1, 2).is_contiguous()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(last, want_last, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("row", [1, 13])
def test_model_without_autograd_matches_the_reference_forward_and_prefill(row):
    """The no-grad forward (Triton conv, fused norms, the scan in the model's layout) against the reference
    model's forward with autograd (PyTorch's conv and norms), a padded prefill's logits and states, and the
    training gradients of the whole model."""
    from hymba import HymbaLM
    from hymba.presets import row_config

    small = dict(d_model=16, n_layers=2, head_dim=8, window=4, n_meta_tokens=2) if INTERPRETED else dict(window=16)
    cfg = row_config(row, "tiny", vocab_size=50, init_std=0.2, scan_backend="ref", attn_backend="sdpa", **small)
    torch.manual_seed(3)
    ref = HymbaLM(cfg).to(DEVICE)
    fast = HymbaLM(cfg.replace(scan_backend="triton")).to(DEVICE)
    fast.load_state_dict(ref.state_dict())
    T = 11 if INTERPRETED else 300
    ids = torch.randint(0, 50, (3, T), device=DEVICE)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    want = ref(ids, attention_mask=mask).logits  # with autograd: the reference path
    with torch.no_grad():
        got = fast(ids, attention_mask=mask).logits
        torch.testing.assert_close(got, want.detach(), rtol=1e-4, atol=1e-4)
        la, ca = ref.prefill(ids, attention_mask=mask)
        lb, cb = fast.prefill(ids, attention_mask=mask)
    torch.testing.assert_close(lb, la, rtol=1e-4, atol=1e-4)
    for i in ca.ssm:
        torch.testing.assert_close(cb.ssm[i], ca.ssm[i], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(cb.conv[i], ca.conv[i], rtol=1e-4, atol=1e-4)
    a, b = ref(ids[:, :-1], labels=ids[:, 1:]), fast(ids[:, :-1], labels=ids[:, 1:])
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_custom_ops_trace():
    """Schema and fake implementations (what torch.compile traces) agree with the kernels, strides included:
    the conv on a strided slice, the scan on [B, L, D] memory."""
    from hymba.kernels.scan import triton as scan_triton
    from hymba.kernels.scan import triton_conv

    x, w, bias = _inputs(2, 9, 6, 4, torch.float32, strided=True)
    valid = torch.ones(2, 9, dtype=torch.uint8, device=DEVICE)
    torch.library.opcheck(
        triton_conv._conv_fwd, (x, w, bias, valid, True), test_utils=("test_schema", "test_faketensor")
    )
    dout = torch.randn(2, 9, 6, device=DEVICE)
    torch.library.opcheck(
        triton_conv._conv_bwd, (dout, x, w, bias, valid, True), test_utils=("test_schema", "test_faketensor")
    )
    b, L, d, n = 2, 5, 6, 4
    u, delta, z = (torch.randn(b, L, d, device=DEVICE).transpose(1, 2) for _ in range(3))
    B, C = (torch.randn(b, n, L, device=DEVICE) for _ in range(2))
    A, D, bias = -torch.rand(d, n, device=DEVICE) - 0.5, torch.randn(d, device=DEVICE), torch.randn(d, device=DEVICE)
    args = (u, delta, A, B, C, D, z, bias, torch.empty(0, device=DEVICE), True)
    torch.library.opcheck(scan_triton._scan_fwd, args, test_utils=("test_schema", "test_faketensor"))


def test_train_conv_names_the_conv_each_setting_trains_with(monkeypatch):
    """What the trainer logs when it compiles (the choice is made inside the graph, where it cannot be said)."""
    import hymba.kernels.scan as scan

    for setting, eager, compiled in (("auto", "ref", "shift"), ("ref",) * 3, ("triton",) * 3, ("shift",) * 3):
        monkeypatch.setattr(scan, "TRAIN_CONV", setting)
        assert scan.train_conv("triton", DEVICE, compiled=False) == eager, setting
        assert scan.train_conv("triton", DEVICE, compiled=True) == compiled, setting
        assert scan.train_conv("ref", DEVICE, compiled=True) == "ref"  # the reference backend: conv1d always
