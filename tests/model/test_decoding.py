import pytest
import torch

from hymba import HymbaLM
from hymba.bench import cache_size, generation_throughput, load_model_config
from hymba.presets import ablation_rows

# window 8 so that 40-token sequences run far past it; meta tokens where the row has them
ROWS = ablation_rows("tiny", vocab_size=61, window=8, n_layers=6)
T = 40


@pytest.mark.parametrize("row", sorted(ROWS))
def test_prefill_then_decode_equals_full_forward(row):
    torch.manual_seed(row)
    m = HymbaLM(ROWS[row]).eval()
    ids = torch.randint(0, 61, (3, T))
    with torch.no_grad():
        full = m(ids).logits
        logits, cache = m.prefill(ids[:, :13], max_len=T)
        steps = [logits] + [m.decode_step(ids[:, t], cache) for t in range(13, T)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("row", [1, 9, 13])
def test_prefill_in_batch_chunks_fills_the_same_cache(row):
    m = HymbaLM(ROWS[row]).eval()
    ids = torch.randint(1, 61, (5, 14))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    mask[4, :9] = 0  # ragged rows in different chunks
    with torch.no_grad():
        whole, c1 = m.prefill(ids, attention_mask=mask, max_len=30)
        parts, c2 = m.prefill(ids, attention_mask=mask, max_len=30, batch_chunk=2)
        torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-5)
        assert c2.length == c1.length and torch.equal(c2.next_pos, c1.next_pos) and torch.equal(c2.step, c1.step)
        for i in c1.kv:
            for name in ("k", "v", "pos", "valid"):
                torch.testing.assert_close(getattr(c2.kv[i], name), getattr(c1.kv[i], name), rtol=1e-5, atol=1e-5)
        for i in c1.ssm:
            torch.testing.assert_close(c2.ssm[i], c1.ssm[i], rtol=1e-5, atol=1e-6)
        nxt = ids[:, -1]
        torch.testing.assert_close(m.decode_step(nxt, c2), m.decode_step(nxt, c1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("row", [1, 6, 9, 13])
def test_ragged_batch_gives_the_same_tokens_as_each_prompt_alone(row):
    m = HymbaLM(ROWS[row]).eval()
    lens = [5, 17, 11]
    prompts = [torch.randint(1, 61, (n,)) for n in lens]
    width = max(lens)
    ids = torch.zeros(len(lens), width, dtype=torch.long)
    mask = torch.zeros(len(lens), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = p
        mask[i, width - len(p):] = 1
    batched = m.generate(ids, 12, attention_mask=mask)
    with torch.no_grad():
        logits_b, _ = m.prefill(ids, attention_mask=mask)
    for i, p in enumerate(prompts):
        alone = m.generate(p[None], 12)
        assert torch.equal(batched[i], alone[0]), f"prompt {i}"
        with torch.no_grad():
            ref = m(p[None]).logits[0]
        torch.testing.assert_close(logits_b[i, width - len(p):], ref, rtol=1e-4, atol=1e-4)


def test_padding_changes_neither_ssm_state_nor_attention():
    m = HymbaLM(ROWS[13]).eval()
    p = torch.randint(1, 61, (1, 9))
    ids = torch.cat([torch.full((1, 6), 7), p], 1)  # the pad id is arbitrary: it must not matter
    mask = torch.cat([torch.zeros(1, 6), torch.ones(1, 9)], 1).long()
    _, c_pad = m.prefill(ids, attention_mask=mask, max_len=20)
    _, c_alone = m.prefill(p, max_len=20)
    for i in c_alone.ssm:
        torch.testing.assert_close(c_pad.ssm[i], c_alone.ssm[i], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c_pad.conv[i], c_alone.conv[i], rtol=1e-5, atol=1e-6)


def test_a_full_global_cache_is_an_error_not_a_wrap():
    m = HymbaLM(ROWS[6]).eval()
    _, cache = m.prefill(torch.randint(0, 61, (1, 5)), max_len=7)
    m.decode_step(torch.tensor([1]), cache)
    m.decode_step(torch.tensor([1]), cache)
    with pytest.raises(ValueError, match="cache full: 8 tokens > max_len=7"):
        m.decode_step(torch.tensor([1]), cache)


def test_swa_cache_never_grows_past_window_plus_meta_and_consumers_hold_nothing():
    c = ROWS[13]
    m = HymbaLM(c).eval()
    ids = torch.randint(0, 61, (2, 10))
    _, cache = m.prefill(ids, max_len=200)
    swa, glob = set(c.swa_layers()), set(c.global_layers())
    sizes = {i: e.k.shape[2] for i, e in cache.kv.items()}
    nbytes = cache.nbytes()
    for _ in range(60):
        m.decode_step(torch.randint(0, 61, (2,)), cache)
    assert cache.nbytes() == nbytes
    for i, e in cache.kv.items():
        assert e.k.shape[2] == sizes[i]
        assert e.k.shape[2] == (c.window if i in swa else 200) + c.n_meta_tokens
    consumers = {i for g in c.kv_groups() for i in g[1:]}
    assert consumers and not consumers & set(cache.kv)
    assert set(cache.kv) == (swa | glob) - consumers


def test_cache_bytes_of_the_released_model():
    r = cache_size(load_model_config("configs/models/hymba-1.5b.toml"), 8192)
    # 3 global layers x (8192 + 128) + 14 SWA producers x (1024 + 128) tokens, K 5x64 + V 5x128 fp16 values
    assert r["kv_bytes"] == (3 * (8192 + 128) + 14 * (1024 + 128)) * 1920
    assert 78 < r["kv_mb"] < 80 and r["kv_layers"] == 17
    assert 3.5 < r["ssm_mb"] < 4.5
    llama = cache_size(load_model_config("configs/models/llama-3.2-1b.toml"), 8192)
    assert llama["kv_bytes"] == 16 * 8192 * 8 * 64 * 2 * 2 and llama["ssm_bytes"] == 0


def test_cache_size_tracks_the_architecture():
    rows = ablation_rows("paper")
    mb = {i: cache_size(c)["kv_mb"] for i, c in rows.items()}
    assert mb[1] == mb[12] == 0
    assert mb[2] < mb[3] < mb[4] and mb[5] < mb[4]
    assert mb[7] < mb[9] < mb[8] < mb[5]
    assert mb[13] > mb[9]  # meta slots


def test_greedy_generate_is_deterministic_and_sampling_follows_the_seed():
    m = HymbaLM(ROWS[13]).eval()
    ids = torch.randint(0, 61, (2, 12))
    assert torch.equal(m.generate(ids, 10), m.generate(ids, 10))
    a = m.generate(ids, 10, temperature=1.0, top_k=20, seed=3)
    b = m.generate(ids, 10, temperature=1.0, top_k=20, seed=3)
    assert torch.equal(a, b)
    greedy = m.generate(ids, 1)
    with torch.no_grad():
        assert torch.equal(greedy[:, 0], m(ids).logits[:, -1].argmax(-1))


def test_generation_throughput_reports_the_decode_phase():
    m = HymbaLM(ROWS[9]).eval()
    r = generation_throughput(m, prompt_len=16, batch=2, new_tokens=4, device="cpu")
    assert r["batch_used"] == 2 and r["tokens_per_s"] > 0
    assert r["tokens_per_s"] == pytest.approx(2 * 4 / r["decode_s"])
    with pytest.raises(ValueError, match="batch"):
        generation_throughput(m, prompt_len=16, batch=0, new_tokens=4)
