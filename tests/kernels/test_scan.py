import pytest
import torch

from hymba.kernels.scan import selective_scan, selective_state_update
from hymba.kernels.scan.ref import selective_scan_quadratic, selective_scan_ref, selective_state_update_ref


def _inputs(b, d, L, n, dtype=torch.float64, device="cpu"):
    g = dict(dtype=dtype, device=device)
    return dict(
        u=torch.randn(b, d, L, **g),
        delta=torch.randn(b, d, L, **g) * 0.5,
        A=-torch.exp(torch.randn(d, n, **g)),
        B=torch.randn(b, n, L, **g),
        C=torch.randn(b, n, L, **g),
        D=torch.randn(d, **g),
        z=torch.randn(b, d, L, **g),
        delta_bias=torch.randn(d, **g) * 0.1,
    )


@pytest.mark.parametrize("block", [None, 1, 7], ids=lambda v: f"block{v}")
@pytest.mark.parametrize("b,d,L,n", [(1, 3, 1, 2), (2, 5, 63, 4), (2, 8, 100, 16)], ids=lambda v: str(v))
def test_ref_matches_quadratic_oracle_outputs_state_and_grads(b, d, L, n, block, monkeypatch):
    """Blocks of 1 and 7 steps (and the whole sequence in one block, the default at these sizes), from a
    nonzero initial state whose gradient is checked too."""
    from hymba.kernels.scan import ref

    if block is not None:
        monkeypatch.setattr(ref, "BLOCK_ELEMENTS", block * b * d * n)
        assert ref._block_steps(b, d, n, L) == min(block, L)
        assert ref._block_steps(b, d, n, L, torch.device("cuda")) == L  # one block on a GPU: launches bound it
    x = _inputs(b, d, L, n)
    x["initial_state"] = torch.randn(b, d, n, dtype=torch.float64)
    for t in x.values():
        t.requires_grad_(True)
    y1, h1 = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    y2, h2 = selective_scan_quadratic(**x, delta_softplus=True, return_last_state=True, chunk_size=7)
    torch.testing.assert_close(y1, y2, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(h1, h2, rtol=1e-9, atol=1e-9)
    w = torch.randn_like(y1)
    g1 = torch.autograd.grad((y1 * w).sum() + h1.sum(), list(x.values()))
    g2 = torch.autograd.grad((y2 * w).sum() + h2.sum(), list(x.values()))
    for name, a, b_ in zip(x, g1, g2):
        torch.testing.assert_close(a, b_, rtol=1e-8, atol=1e-8, msg=f"grad of {name}")


def test_ref_without_gradient_equals_ref_with_it(monkeypatch):
    """Without a gradient the scan keeps one block of states at a time (another code path)."""
    from hymba.kernels.scan import ref

    monkeypatch.setattr(ref, "BLOCK_ELEMENTS", 3 * 2 * 4 * 3)  # blocks of 3 steps
    x = _inputs(2, 4, 20, 3)
    x["delta"].requires_grad_(True)
    y1, h1 = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    with torch.no_grad():
        y2, h2 = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    assert y1.grad_fn is not None and y2.grad_fn is None
    torch.testing.assert_close(y2, y1.detach(), rtol=0, atol=0)
    torch.testing.assert_close(h2, h1.detach(), rtol=0, atol=0)


def test_initial_state_continues_a_split_sequence():
    x = _inputs(2, 4, 30, 3)
    y_full, h_full = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    first = {k: (v[..., :12] if v.ndim == 3 else v) for k, v in x.items()}
    rest = {k: (v[..., 12:] if v.ndim == 3 else v) for k, v in x.items()}
    y1, h1 = selective_scan_ref(**first, delta_softplus=True, return_last_state=True)
    y2, h2 = selective_scan_ref(**rest, delta_softplus=True, return_last_state=True, initial_state=h1)
    torch.testing.assert_close(torch.cat([y1, y2], -1), y_full)
    torch.testing.assert_close(h2, h_full)


def test_state_update_steps_equal_the_scan():
    b, d, L, n = 2, 6, 9, 4
    x = _inputs(b, d, L, n)
    y_scan, h_scan = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    state = torch.zeros(b, d, n, dtype=torch.float64)
    ys = []
    for t in range(L):
        ys.append(
            selective_state_update_ref(
                state,
                x["u"][..., t],
                x["delta"][..., t],
                x["A"],
                x["B"][..., t],
                x["C"][..., t],
                x["D"],
                x["z"][..., t],
                x["delta_bias"],
                True,
            )
        )
    torch.testing.assert_close(torch.stack(ys, -1), y_scan)
    torch.testing.assert_close(state, h_scan)


def test_fp32_state_for_low_precision_inputs():
    """bf16 inputs, fp32 state: against the fp64 scan of the same (bf16-rounded) inputs the state agrees to
    fp32 precision and the output to one bf16 rounding; a bf16 state would drift far more over 200 steps."""
    x16 = {k: v.bfloat16() for k, v in _inputs(2, 4, 200, 4).items()}
    x16["delta"] = x16["delta"] - 3  # slow decay: the state integrates many steps
    y16, h16 = selective_scan_ref(**x16, delta_softplus=True, return_last_state=True)
    y64, h64 = selective_scan_ref(
        **{k: v.double() for k, v in x16.items()}, delta_softplus=True, return_last_state=True
    )
    assert y16.dtype == torch.bfloat16 and h16.dtype == torch.float32
    torch.testing.assert_close(h16.double(), h64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y16.double(), y64, rtol=2**-7, atol=1e-3)  # bf16 has an 8-bit significand


def test_requested_backend_missing_is_an_error_not_a_fallback():
    x = {k: v.float() for k, v in _inputs(1, 2, 3, 2).items()}
    with pytest.raises(RuntimeError, match="mamba_ssm"):
        selective_scan(**x, backend="mamba_ssm")
    with pytest.raises(ValueError, match="unknown"):
        selective_scan(**x, backend="fast")


@pytest.mark.gpu
def test_mamba_ssm_backend_matches_ref():
    pytest.importorskip("mamba_ssm")
    x = {k: v.float() for k, v in _inputs(2, 64, 200, 16, device="cuda").items()}
    for t in x.values():
        t.requires_grad_(True)
    y1, h1 = selective_scan(**x, delta_softplus=True, return_last_state=True, backend="mamba_ssm")
    y2, h2 = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    torch.testing.assert_close(y1, y2, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(h1.float(), h2, rtol=1e-3, atol=1e-3)
    g1 = torch.autograd.grad(y1.sum(), list(x.values()))
    g2 = torch.autograd.grad(y2.sum(), list(x.values()))
    for name, a, b_ in zip(x, g1, g2):
        torch.testing.assert_close(a, b_, rtol=1e-2, atol=1e-2, msg=f"grad of {name}")
    state = torch.zeros(2, 64, 16, device="cuda")
    state2 = state.clone()
    args = [
        x["u"][..., 0].detach(),
        x["delta"][..., 0].detach(),
        x["A"].detach(),
        x["B"][..., 0].detach(),
        x["C"][..., 0].detach(),
        x["D"].detach(),
        x["z"][..., 0].detach(),
        x["delta_bias"].detach(),
        True,
    ]
    torch.testing.assert_close(
        selective_state_update(state, *args, backend="mamba_ssm"),
        selective_state_update_ref(state2, *args),
        rtol=1e-3,
        atol=1e-3,
    )


@pytest.mark.parametrize("bias,silu,padded", [(True, True, False), (False, False, True), (True, True, True)])
@pytest.mark.parametrize("b,S,d,K", [(2, 1, 5, 4), (3, 37, 67, 4), (2, 9, 7, 2)], ids=lambda v: str(v))
def test_shifted_conv_equals_conv1d_values_and_gradients(b, S, d, K, bias, silu, padded):
    """The conv as K shifted multiply-adds (what torch.compile can fuse) against PyTorch's conv1d: outputs and
    the gradients of x, weight and bias, with left padding (rows whose first steps are not valid)."""
    from hymba.kernels.scan.ref import causal_conv1d_ref, causal_conv1d_shifted

    torch.manual_seed(4)
    x = torch.randn(b, S, d, dtype=torch.float64)
    w = torch.randn(d, 1, K, dtype=torch.float64)
    bb = torch.randn(d, dtype=torch.float64) if bias else None
    valid = torch.arange(S)[None] >= torch.arange(b)[:, None] * 2 if padded else None
    grads = {}
    for f in (causal_conv1d_ref, causal_conv1d_shifted):
        ins = [t.detach().clone().requires_grad_(True) for t in (x, w, bb) if t is not None]
        u = f(ins[0], ins[1], ins[2] if bias else None, valid, silu)
        assert u.shape == (b, S, d) and u.is_contiguous()
        g = torch.randn(u.shape, dtype=u.dtype, generator=torch.Generator().manual_seed(5))
        grads[f.__name__] = (u, *torch.autograd.grad(u, ins, g))
    for got, want in zip(grads["causal_conv1d_shifted"], grads["causal_conv1d_ref"]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    if padded:  # padding enters no output
        assert (grads["causal_conv1d_shifted"][0][~valid] == 0).all()


def test_shifted_conv_computes_in_x_dtype_as_autocast_does_for_conv1d():
    from hymba.kernels.scan.ref import causal_conv1d_ref, causal_conv1d_shifted

    torch.manual_seed(6)
    x, w, bb = torch.randn(2, 20, 8).bfloat16(), torch.randn(8, 1, 4), torch.randn(8)
    u = causal_conv1d_shifted(x, w, bb)
    assert u.dtype == torch.bfloat16
    want = causal_conv1d_ref(x.float(), w.bfloat16().float(), bb.bfloat16().float())
    torch.testing.assert_close(u.float(), want, rtol=2e-2, atol=2e-2)
