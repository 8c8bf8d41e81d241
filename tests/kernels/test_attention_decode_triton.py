"""The Triton decode attention against the fp32 oracle (explicit head repetition, dense mask): grouped heads,
head dims that differ and are not powers of two, ring-buffer slots out of order, invalid slots, meta slots
under a window, several splits over the keys, per dtype.

On CPU the kernels run under ``TRITON_INTERPRET=1`` at tiny shapes; on CUDA compiled, at the released model's
shapes too."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are defined
pytest.importorskip("triton")

from hymba.kernels.attention import (  # noqa: E402
    MaskSpec,
    attention,
    attention_naive,
    attention_sdpa,
    triton_decode,
)
from hymba.kernels.attention.triton_decode import attention_decode_triton  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"
TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 2e-2), torch.float16: (2e-3, 2e-3)}


def _case(B, H, Hkv, S, Dk, Dv, M, window, with_valid, dtype):
    g = dict(device=DEVICE)
    q = torch.randn(B, H, 1, Dk, **g).to(dtype)
    k = torch.randn(B, Hkv, S, Dk, **g).to(dtype)
    v = torch.randn(B, Hkv, S, Dv, **g).to(dtype)
    # a ring: token slots hold positions out of order, meta slots first with positions 0..M-1
    k_pos = torch.stack([torch.cat([torch.arange(M), M + torch.randperm(S - M)]) for _ in range(B)]).to(DEVICE)
    q_pos = torch.randint(M, S + 3, (B, 1), device=DEVICE)
    valid = (
        (torch.rand(B, S, device=DEVICE) > 0.3) | (torch.arange(S, device=DEVICE) < max(M, 1)) if with_valid else None
    )
    meta = (torch.arange(S, device=DEVICE) < M)[None]
    return q, k, v, MaskSpec(q_pos, k_pos, meta, valid, window)


SHAPES = [
    # B, H, Hkv, S, Dk, Dv, M
    (2, 4, 2, 11, 8, 16, 2),
    (3, 6, 1, 37, 4, 12, 3),
    (1, 4, 4, 1, 16, 16, 0),
    (2, 5, 5, 300, 16, 8, 4),  # several splits (the interpreter's SM count is 8)
    (2, 25, 5, 150, 64, 128, 8),  # Hymba's head layout
] + (
    []
    if INTERPRETED
    else [(128, 25, 5, 1152, 64, 128, 128), (4, 32, 8, 8320, 64, 64, 0), (1, 25, 5, 8320, 64, 128, 128)]
)


def _id(s):
    return "B{}-H{}-Hkv{}-S{}-Dk{}-Dv{}-M{}".format(*s)


@pytest.mark.parametrize("dtype", list(TOL), ids=lambda t: str(t).split(".")[-1])
@pytest.mark.parametrize("window,with_valid", [(None, False), (None, True), (5, True)], ids=["global", "valid", "swa"])
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
def test_decode_attention_matches_the_oracle(shape, window, with_valid, dtype):
    torch.manual_seed(sum(shape))
    q, k, v, spec = _case(*shape, window, with_valid, dtype)
    got = attention_decode_triton(q, k, v, spec)
    want = attention_naive(q, k, v, spec)
    assert got.dtype == dtype and got.shape == want.shape
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(got.float(), want.float(), rtol=rtol, atol=atol)
    # the sdpa path's grouped-query fold (one query per row) agrees with the same oracle
    torch.testing.assert_close(attention_sdpa(q, k, v, spec).float(), want.float(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("short_slots", [0, 10**6], ids=["long-cache-settings", "short-cache-settings"])
def test_both_cache_length_settings_match_the_oracle(short_slots, monkeypatch):
    """Long caches (global layers) and short ones (sliding-window rings) run the split kernel with different
    block, warp and stage settings; both give the oracle's result (here over a ring with padding)."""
    monkeypatch.setattr(triton_decode, "SHORT_SLOTS", short_slots)
    q, k, v, spec = _case(2, 4, 2, 300, 8, 16, 2, 37, True, torch.float32)
    want = attention_naive(q, k, v, spec)
    torch.testing.assert_close(attention_decode_triton(q, k, v, spec), want, rtol=1e-5, atol=1e-5)


def test_splits_divide_the_keys_and_the_result_does_not_depend_on_them(monkeypatch):
    q, k, v, spec = _case(2, 4, 2, 300, 8, 8, 2, None, True, torch.float32)
    outs = []
    for n in (1, 2, 5):
        monkeypatch.setattr(triton_decode, "n_splits_for", lambda bh, s, dev, n=n: n)
        outs.append(attention_decode_triton(q, k, v, spec))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[2], outs[0], rtol=1e-5, atol=1e-5)


def test_dispatch_by_name_and_errors():
    q, k, v, spec = _case(2, 4, 2, 11, 8, 16, 2, 4, True, torch.float32)
    torch.testing.assert_close(attention(q, k, v, spec, backend="triton"), attention_decode_triton(q, k, v, spec))
    long_q = torch.randn(2, 4, 3, 8, device=DEVICE)
    with pytest.raises(Exception, match="one query per row"):
        attention(long_q, k, v, spec, backend="triton")
    with pytest.raises(ValueError, match="group"):
        attention_decode_triton(torch.randn(2, 3, 1, 8, device=DEVICE), k, v, spec)


@pytest.mark.gpu
def test_decode_attention_traces_under_compile_and_replays_from_a_cuda_graph():
    q, k, v, spec = _case(4, 25, 5, 700, 64, 128, 16, 128, True, torch.bfloat16)
    want = attention_naive(q, k, v, spec).float()

    def f(q):
        return attention(q, k, v, spec, backend="triton")

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(q).float(), want, rtol=2e-2, atol=2e-2)
    qs = q.clone()
    f(qs)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = f(qs)
    graph.replay()
    torch.testing.assert_close(out.float(), want, rtol=2e-2, atol=2e-2)
