"""The decode step's fused norm and RoPE kernels against their plain-PyTorch references, with values: fp32
near-exact; bf16 and fp16 within one rounding of the dtype (the interpreter rounds fp32 -> bf16 by truncation,
the GPU to nearest). Rows of odd widths (not powers of two), strided inputs as the model passes them.

On CPU the kernels run under ``TRITON_INTERPRET=1``; on CUDA compiled."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are defined
pytest.importorskip("triton")

from hymba.kernels.attention import rotary_ref  # noqa: E402
from hymba.kernels.attention.triton_rope import rotary_qk_triton  # noqa: E402
from hymba.kernels.norm import rms_norm, rms_norm_mean, rms_norm_split, silu_mul  # noqa: E402
from hymba.kernels.norm.ref import (  # noqa: E402
    add_rms_norm_ref,
    rms_norm_mean_ref,
    rms_norm_ref,
    rms_norm_split_ref,
    silu_mul_ref,
)

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
IDS = lambda t: str(t).split(".")[-1]  # noqa: E731


def close(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    tol = {torch.float32: (2e-6, 2e-6), torch.bfloat16: (1.6e-2, 1e-2), torch.float16: (2e-3, 2e-3)}[want.dtype]
    torch.testing.assert_close(got.float(), want.float(), rtol=tol[0], atol=tol[1])


def _rows(b, w, dtype, extra=7):
    """[b, 1, w] as a slice of a wider projection output (row stride w + extra)."""
    return torch.randn(b, 1, w + extra, device=DEVICE, dtype=dtype)[..., extra:] * 3


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("b,w", [(3, 1600), (2, 100), (1, 3200), (4, 5)])
def test_rms_norm_and_the_fused_residual_add_match_the_reference(b, w, dtype):
    torch.manual_seed(w + b)
    x, r = _rows(b, w, dtype), _rows(b, w, dtype, extra=3)
    weight = (1 + 0.5 * torch.randn(w, device=DEVICE)).to(dtype)
    close(rms_norm(x, weight, 1e-6, backend="triton"), rms_norm_ref(x, weight, 1e-6))
    y, s = rms_norm(x, weight, 1e-6, residual=r, backend="triton")
    y_ref, s_ref = add_rms_norm_ref(x, r, weight, 1e-6)
    close(s, s_ref)
    close(y, y_ref)
    assert y_ref.std() > 0.5  # a wrong weight or scale shows


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_mean_of_the_branch_norms_matches_the_reference(dtype):
    torch.manual_seed(1)
    a, s = _rows(3, 3200, dtype), _rows(3, 3200, dtype, extra=1) * 0.1
    wa, ws = ((1 + 0.5 * torch.randn(3200, device=DEVICE)).to(dtype) for _ in range(2))
    got = rms_norm_mean(a, wa, s, ws, 1e-6, backend="triton")
    close(got, rms_norm_mean_ref(a, wa, s, ws, 1e-6))
    # and not just one branch: each alone is far from the mean
    assert (got.float() - rms_norm_ref(a, wa, 1e-6).float() / 2).abs().max() > 0.1


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("widths", [(100, 16, 16), (3, 4, 5), (7, 1, 2)])
def test_split_norm_of_dt_B_C_matches_the_reference(widths, dtype):
    torch.manual_seed(sum(widths))
    x = _rows(3, sum(widths), dtype)[:, 0]
    weights = tuple((1 + 0.5 * torch.randn(w, device=DEVICE)).to(dtype) for w in widths)
    got = rms_norm_split(x, weights, 1e-6, backend="triton")
    for g, want in zip(got, rms_norm_split_ref(x, weights, 1e-6), strict=True):
        close(g, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("widths,extra,first", [((100, 16, 16), 4, 104), ((3, 4, 5), 0, 8), ((7, 1, 2), 2, 7)])
def test_split_norm_reads_a_wider_input_and_pads_the_first_part(widths, extra, first, dtype):
    """The decode step's padded layout (x_proj's output 136 wide, dt written 104 wide for dt_proj at K = 104):
    the same parts; the first one's pad columns exactly zero (garbage there would reach dt_proj)."""
    torch.manual_seed(sum(widths) + extra)
    x = _rows(3, sum(widths) + extra, dtype)[:, 0]
    weights = tuple((1 + 0.5 * torch.randn(w, device=DEVICE)).to(dtype) for w in widths)
    want = rms_norm_split_ref(x[:, : sum(widths)], weights, 1e-6)
    for backend in ("triton", "ref"):
        got = rms_norm_split(x, weights, 1e-6, backend=backend, first_width=first)
        assert got[0].shape == (3, first)
        assert torch.equal(got[0][:, widths[0] :], torch.zeros_like(got[0][:, widths[0] :]))
        close(got[0][:, : widths[0]], want[0])
        for g, w in zip(got[1:], want[1:], strict=True):
            close(g, w)
    with pytest.raises(ValueError, match="narrower than the first part"):
        rms_norm_split(x, weights, 1e-6, backend="triton", first_width=widths[0] - 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("h,hkv,d", [(25, 5, 64), (4, 2, 16), (3, 0, 8)])
def test_rotary_of_q_and_k_matches_the_reference(h, hkv, d, dtype):
    torch.manual_seed(h + d)
    B = 3
    proj = torch.randn(B, 1, (h + hkv) * d + 11, device=DEVICE, dtype=dtype)  # q, k: views of one projection
    q = proj[..., : h * d].view(B, 1, h, d).transpose(1, 2)
    k = proj[..., h * d : (h + hkv) * d].view(B, 1, hkv, d).transpose(1, 2) if hkv else None
    pos = torch.tensor([[5], [300], [8191]], device=DEVICE)
    freqs = pos.float()[..., None] / 10000 ** (torch.arange(0, d, 2, device=DEVICE) / d)
    emb = torch.cat([freqs, freqs], -1)[:, None]
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    qo, ko = rotary_qk_triton(q, k, cos, sin)
    close(qo, rotary_ref(q, cos, sin))
    assert (qo.float() - q.float()).abs().max() > 0.1  # rotated
    if hkv:
        close(ko, rotary_ref(k, cos, sin))
    else:
        assert ko is None


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("T", [9, 37], ids=["T9", "T37"])  # 2 x 37 tokens: three programs, the last partial
@pytest.mark.parametrize("rows_of_cos", [1, 2], ids=["shared-positions", "per-row-positions"])
def test_rotary_of_a_prompt_matches_the_reference(rows_of_cos, T, dtype):
    """A prefill's RoPE (T tokens, q and k views of one [B, T, W] projection): the reference's values, in the
    [B, T, H, D] memory PyTorch's ops give; the fake implementation (what torch.compile traces) agrees."""
    torch.manual_seed(7)
    B, h, hkv, d = 2, 5, 1, 16
    proj = torch.randn(B, T, (h + hkv) * d + 3, device=DEVICE, dtype=dtype)
    q = proj[..., : h * d].view(B, T, h, d).transpose(1, 2)
    k = proj[..., h * d : (h + hkv) * d].view(B, T, hkv, d).transpose(1, 2)
    pos = torch.arange(T, device=DEVICE).expand(rows_of_cos, T) + torch.arange(rows_of_cos, device=DEVICE)[:, None] * 40
    freqs = pos.float()[..., None] / 10000 ** (torch.arange(0, d, 2, device=DEVICE) / d)
    emb = torch.cat([freqs, freqs], -1)[:, None]
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    qo, ko = rotary_qk_triton(q, k, cos, sin)
    close(qo, rotary_ref(q, cos, sin))
    close(ko, rotary_ref(k, cos, sin))
    assert (qo.float() - q.float()).abs().max() > 0.1  # rotated
    assert qo.transpose(1, 2).is_contiguous() and ko.transpose(1, 2).is_contiguous()
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fq, fk = torch.ops.hymba.rotary_qk(*(mode.from_tensor(t) for t in (q, k, cos, sin)))
    assert fq.shape == qo.shape and fq.stride() == qo.stride() and fk.stride() == ko.stride()
    torch.library.opcheck(torch.ops.hymba.rotary_qk, (q, k, cos, sin), test_utils=("test_schema", "test_faketensor"))
    with pytest.raises(ValueError, match="broadcast"):
        rotary_qk_triton(q, k, cos[..., :4, :], sin[..., :4, :])
    with pytest.raises(ValueError, match="odd"):
        rotary_qk_triton(q[..., :15], k[..., :15], cos[..., :15], sin[..., :15])


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("shape", [(3, 1, 5504), (2, 7, 37), (1, 1, 3)], ids=str)
def test_silu_mul_matches_the_reference(shape, dtype):
    """SwiGLU's SiLU(gate) x up of the gate and up projections (views of wider outputs, as strided rows),
    widths past one 1024-column block and below it."""
    torch.manual_seed(sum(shape))
    g = (torch.randn(*shape[:-1], shape[-1] + 5, device=DEVICE) * 3).to(dtype)[..., 5:]
    u = torch.randn(*shape, device=DEVICE, dtype=dtype)
    got = silu_mul(g, u, backend="triton")
    close(got, silu_mul_ref(g, u))
    assert got.is_contiguous() and got.shape == shape
    torch.library.opcheck(torch.ops.hymba.silu_mul, (g, u), test_utils=("test_schema", "test_faketensor"))
    with pytest.raises(ValueError, match="differ"):
        silu_mul(g, u[..., :-1], backend="triton")
