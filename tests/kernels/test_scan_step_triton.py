"""The Triton decode step (conv update, state update) against the plain-PyTorch reference: outputs and the
states they update in place, per dtype, at odd shapes (channels not a multiple of the block, N and K not
powers of two), strided inputs as the model passes them, optional parts absent.

On CPU the kernels run under ``TRITON_INTERPRET=1`` at tiny shapes; on CUDA compiled, at real ones too."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are defined
pytest.importorskip("triton")

from hymba.kernels.scan import causal_conv1d_update, resolve_step, selective_state_update  # noqa: E402
from hymba.kernels.scan.ref import causal_conv1d_update_ref, selective_state_update_ref  # noqa: E402
from hymba.kernels.scan.triton_step import causal_conv1d_update_triton, selective_state_update_triton  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def tol(dtype):
    """Outputs in the input dtype: one rounding of a value computed in fp32 on both sides."""
    return {torch.float32: (1e-5, 1e-5), torch.bfloat16: (1.6e-2, 1e-2), torch.float16: (2e-3, 2e-3)}[dtype]


def _step_inputs(b, d, n, dtype, strided):
    g = dict(device=DEVICE)
    # x, delta, z as slices of one wider projection row (non-unit row stride), B and C as slices of x_proj's
    proj = torch.randn(b, 3 * d + 5, dtype=dtype, **g)
    xbc = torch.randn(b, 2 * n + 3, dtype=dtype, **g)
    if strided:
        x, delta, z = proj[:, :d], proj[:, d : 2 * d] * 0.5 - 1, proj[:, 2 * d + 5 :]
        B, C = xbc[:, 3 : 3 + n], xbc[:, 3 + n :]
    else:
        x, delta, z = (torch.randn(b, d, dtype=dtype, **g) for _ in range(3))
        B, C = (torch.randn(b, n, dtype=dtype, **g) for _ in range(2))
    return dict(
        x=x,
        delta=delta,
        A=-torch.exp(torch.randn(d, n, **g)),
        B=B,
        C=C,
        D=torch.randn(d, dtype=dtype, **g),
        z=z,
        delta_bias=torch.randn(d, dtype=dtype, **g) * 0.1,
    )


STEP_CASES = [(2, 5, 4), (3, 67, 3), (1, 1, 1)] + ([] if INTERPRETED else [(128, 3200, 16), (7, 1000, 13)])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).split(".")[-1])
@pytest.mark.parametrize("b,d,n", STEP_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("strided", [False, True], ids=["contig", "strided"])
def test_state_update_matches_the_reference(b, d, n, dtype, strided):
    torch.manual_seed(b * 100 + d + n)
    x = _step_inputs(b, d, n, dtype, strided)
    h0 = torch.randn(b, d, n, device=DEVICE)
    h_ref, h_tri = h0.clone(), h0.clone()
    y_ref = selective_state_update_ref(h_ref, **x, delta_softplus=True)
    y_tri = selective_state_update_triton(h_tri, **x, delta_softplus=True)
    assert y_tri.dtype == dtype and y_tri.shape == (b, d) and h_tri.dtype == torch.float32
    assert not torch.equal(h_tri, h0)  # updated in place
    torch.testing.assert_close(h_tri, h_ref, rtol=1e-5, atol=1e-5)
    rtol, atol = tol(dtype)
    torch.testing.assert_close(y_tri.float(), y_ref.float(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("b,d,n", STEP_CASES, ids=lambda v: str(v))
def test_state_update_in_a_bf16_state(b, d, n):
    """The released code keeps the state in the model's dtype: read, advanced in fp32, stored rounded."""
    torch.manual_seed(b + d + n)
    x = _step_inputs(b, d, n, torch.bfloat16, strided=True)
    h0 = torch.randn(b, d, n, device=DEVICE).to(torch.bfloat16)
    h_ref, h_tri = h0.clone(), h0.clone()
    y_ref = selective_state_update_ref(h_ref, **x, delta_softplus=True)
    y_tri = selective_state_update_triton(h_tri, **x, delta_softplus=True)
    assert h_tri.dtype == torch.bfloat16 and not torch.equal(h_tri, h0)
    rtol, atol = tol(torch.bfloat16)
    torch.testing.assert_close(h_tri.float(), h_ref.float(), rtol=rtol, atol=atol)
    torch.testing.assert_close(y_tri.float(), y_ref.float(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("absent", ["D", "z", "delta_bias"])
def test_state_update_without_optional_parts_and_without_softplus(absent):
    x = _step_inputs(2, 9, 5, torch.float32, strided=False)
    x[absent] = None
    x["delta"] = x["delta"].abs()  # a valid step size without softplus
    h_ref, h_tri = torch.randn(2, 9, 5, device=DEVICE), None
    h_tri = h_ref.clone()
    y_ref = selective_state_update_ref(h_ref, **x, delta_softplus=False)
    y_tri = selective_state_update_triton(h_tri, **x, delta_softplus=False)
    torch.testing.assert_close(h_tri, h_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y_tri, y_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).split(".")[-1])
@pytest.mark.parametrize(
    "b,d,k", [(2, 5, 4), (3, 300, 3), (1, 7, 2), (2, 3, 1)] + ([] if INTERPRETED else [(128, 3200, 4)])
)
def test_conv_update_matches_the_reference_and_shifts_the_state(b, d, k, dtype):
    torch.manual_seed(d + k)
    g = dict(device=DEVICE, dtype=dtype)
    state = torch.randn(b, d, k - 1, **g)
    proj = torch.randn(b, 2 * d, **g)
    x = proj[:, d:]  # a strided slice, as the model passes it
    weight, bias = torch.randn(d, 1, k, **g), torch.randn(d, **g)
    s_ref, s_tri = state.clone(), state.clone()
    y_ref = causal_conv1d_update_ref(s_ref, x, weight, bias)
    y_tri = causal_conv1d_update_triton(s_tri, x, weight, bias)
    # the state is a pure shift: exact in every dtype
    want = torch.cat([state, x[..., None]], -1)[..., 1:]
    assert torch.equal(s_tri, want) and torch.equal(s_ref, want)
    rtol, atol = tol(dtype)
    torch.testing.assert_close(y_tri.float(), y_ref.float(), rtol=rtol, atol=atol)
    # against the convolution itself: the last output of nn.functional.conv1d over the K inputs
    inputs = torch.cat([state, x[..., None]], -1).float()
    conv = torch.nn.functional.conv1d(inputs, weight.float(), bias.float(), groups=d)[..., -1]
    torch.testing.assert_close(y_ref.float(), torch.nn.functional.silu(conv).to(dtype).float(), rtol=rtol, atol=atol)


def test_conv_update_rejects_a_state_of_the_wrong_width():
    with pytest.raises(ValueError, match="K-1"):
        causal_conv1d_update_triton(
            torch.zeros(1, 2, 2, device=DEVICE), torch.zeros(1, 2, device=DEVICE), torch.zeros(2, 1, 4, device=DEVICE)
        )


def test_dispatch_runs_the_triton_kernels_by_name_and_auto_keeps_cpu_on_ref():
    x = _step_inputs(2, 6, 4, torch.float32, strided=False)
    h1, h2 = torch.randn(2, 6, 4, device=DEVICE), None
    h2 = h1.clone()
    y1 = selective_state_update(h1, **x, delta_softplus=True, backend="triton")
    y2 = selective_state_update_triton(h2, **x, delta_softplus=True)
    assert torch.equal(y1, y2) and torch.equal(h1, h2)
    s = torch.randn(2, 6, 3, device=DEVICE)
    w = torch.randn(6, 1, 4, device=DEVICE)
    assert torch.equal(
        causal_conv1d_update(s.clone(), x["x"], w, backend="triton"), causal_conv1d_update_triton(s, x["x"], w)
    )
    assert resolve_step("auto", "cpu") == "ref"
    if not INTERPRETED:
        assert resolve_step("auto", "cuda") == "triton"


@pytest.mark.gpu
def test_the_step_ops_trace_under_torch_compile_and_replay_from_a_cuda_graph():
    torch.manual_seed(0)
    x = _step_inputs(4, 100, 16, torch.bfloat16, strided=True)
    h = torch.randn(4, 100, 16, device="cuda")
    s = torch.randn(4, 100, 3, device="cuda", dtype=torch.bfloat16)
    w, bias = torch.randn(100, 1, 4, device="cuda", dtype=torch.bfloat16), torch.randn(100, device="cuda")

    def step(h, s):
        u = causal_conv1d_update(s, x["x"], w, bias, backend="triton")
        return selective_state_update(
            h, u, *[x[k] for k in ("delta", "A", "B", "C", "D", "z", "delta_bias")], True, backend="triton"
        )

    h_ref, s_ref = h.clone(), s.clone()
    u = causal_conv1d_update_ref(s_ref, x["x"], w, bias)
    want = selective_state_update_ref(h_ref, u, *[x[k] for k in ("delta", "A", "B", "C", "D", "z", "delta_bias")], True)
    h_c, s_c = h.clone(), s.clone()
    got = torch.compile(step, fullgraph=True)(h_c, s_c)
    torch.testing.assert_close(got.float(), want.float(), rtol=1.6e-2, atol=1e-2)
    torch.testing.assert_close(h_c, h_ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(s_c, s_ref)
    h_g, s_g = h.clone(), s.clone()
    step(h_g.clone(), s_g.clone())  # warm-up (compiles the kernels) outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step(h_g, s_g)
    graph.replay()
    torch.testing.assert_close(out.float(), want.float(), rtol=1.6e-2, atol=1e-2)
    torch.testing.assert_close(h_g, h_ref, rtol=1e-4, atol=1e-4)
