"""CUDA paths against the plain-PyTorch reference (skipped without CUDA)."""

import pytest
import torch

from hymba import HymbaLM
from hymba.presets import row_config

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _exact_fp32():
    # cuDNN convolutions default to TF32; the comparisons below are fp32 against fp32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = True


@pytest.mark.parametrize("row", [1, 6, 9, 13])
def test_fast_backends_match_reference_model(row):
    pytest.importorskip("mamba_ssm")
    # expand 4: V head dim d_inner / n_heads = 16, the smallest FlexAttention tiles
    cfg = row_config(
        row, "tiny", vocab_size=101, window=16, expand=4, scan_backend="ref", attn_backend="sdpa", init_std=0.2
    )  # strong weights: at 0.02 a wrong kernel hides under the tolerance
    ref = HymbaLM(cfg).cuda()
    fast = HymbaLM(cfg.replace(scan_backend="mamba_ssm", attn_backend="flex" if cfg.n_heads else "auto")).cuda()
    fast.load_state_dict(ref.state_dict())
    ids = torch.randint(0, 101, (2, 200), device="cuda")
    a, b = ref(ids[:, :-1], labels=ids[:, 1:]), fast(ids[:, :-1], labels=ids[:, 1:])
    assert a.logits.std() > 0.5
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-4, atol=1e-4)
    a.loss.backward()
    b.loss.backward()
    for (n, p), q in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=n)


@pytest.mark.parametrize("row", [7, 13])
def test_cached_decoding_on_cuda_equals_full_forward(row):
    m = HymbaLM(row_config(row, "tiny", vocab_size=101, window=16, init_std=0.2)).cuda().eval()
    ids = torch.randint(0, 101, (3, 60), device="cuda")
    with torch.no_grad():
        full = m(ids).logits
        logits, cache = m.prefill(ids[:, :20], max_len=60)
        steps = [logits] + [m.decode_step(ids[:, t], cache) for t in range(20, 60)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("row", [1, 6, 13])
def test_graphed_decoding_equals_eager_decoding(row, overlap):
    """overlap: the SSM branch of each hybrid layer (rows 6, 13) on a second stream of the graph."""
    from hymba import GraphedDecoder

    m = HymbaLM(row_config(row, "tiny", vocab_size=101, window=16, init_std=0.2)).cuda().eval()
    ids = torch.randint(0, 101, (3, 70), device="cuda")
    with torch.no_grad():
        _, eager_cache = m.prefill(ids[:, :20], max_len=70)
        _, graph_cache = m.prefill(ids[:, :20], max_len=70)
        step = GraphedDecoder(m, graph_cache, overlap=overlap)
        for t in range(20, 70):  # past the 16-token window: the rings wrap
            a = m.decode_step(ids[:, t], eager_cache)
            b = step(ids[:, t])
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=f"step {t}")
    for i in eager_cache.ssm:
        torch.testing.assert_close(graph_cache.ssm[i], eager_cache.ssm[i], rtol=1e-5, atol=1e-6)
    assert graph_cache.length == eager_cache.length == 70


def test_a_graphed_decoder_keeps_alive_what_its_graph_reads():
    """A tensor made for the capture and then dropped (once: the padded LM head of a vocabulary of 101) goes
    back to the allocator while the graph still reads it. Fill freed memory of its size with NaN: replays must
    still equal the eager steps."""
    import gc

    from hymba import GraphedDecoder

    m = HymbaLM(row_config(13, "tiny", vocab_size=101, window=16, init_std=0.2)).cuda().eval()
    ids = torch.randint(0, 101, (3, 30), device="cuda")
    with torch.no_grad():
        _, eager_cache = m.prefill(ids[:, :20], max_len=30)
        _, graph_cache = m.prefill(ids[:, :20], max_len=30)
        step = GraphedDecoder(m, graph_cache)
        gc.collect()
        head = m.padded_lm_head()
        junk = [torch.full_like(head, float("nan")) for _ in range(64)]  # takes any freed block of that size
        for t in range(20, 30):
            torch.testing.assert_close(step(ids[:, t]), m.decode_step(ids[:, t], eager_cache), msg=f"step {t}")
    del junk


def test_generate_from_a_cuda_graph_gives_the_eager_tokens():
    m = HymbaLM(row_config(13, "tiny", vocab_size=101, window=16)).cuda().eval()
    ids = torch.randint(1, 101, (2, 12), device="cuda")
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    kw = dict(temperature=1.0, top_k=20, seed=4, attention_mask=mask)
    assert torch.equal(m.generate(ids, 40, cuda_graph=True, **kw), m.generate(ids, 40, **kw))
