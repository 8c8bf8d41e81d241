import math

import pytest
import torch

from hymba import HymbaLM, ModelConfig
from hymba.presets import ROW_NAMES, ablation_rows

ROWS = ablation_rows("tiny", vocab_size=97)


def test_thirteen_rows_with_paper_names():
    assert set(range(1, 14)) <= set(ROWS)  # the paper's 13; more rows are a roadmap.toml edit
    assert sorted(ROWS) == list(range(1, len(ROWS) + 1))
    assert ROW_NAMES[13].startswith("9) + meta tokens")
    for base in ("seed", "paper"):
        rows = ablation_rows(base)
        assert rows[5].kv_heads < rows[5].n_heads and rows[13].n_meta_tokens == 128


@pytest.mark.parametrize("row", sorted(ROWS))
def test_causal_every_row(row):
    m = HymbaLM(ROWS[row]).eval()
    ids = torch.randint(0, 97, (2, 70))
    t = 41
    ids2 = ids.clone()
    ids2[:, t:] = torch.randint(0, 97, (2, 70 - t))
    with torch.no_grad():
        a, b = m(ids).logits, m(ids2).logits
    assert a.shape == (2, 70, 97)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-6)
    assert (a[:, t:] - b[:, t:]).abs().max() > 1e-4


@pytest.mark.parametrize("row", sorted(ROWS))
def test_gradients_reach_every_parameter(row):
    m = HymbaLM(ROWS[row])
    ids = torch.randint(0, 97, (2, 50))
    m(ids[:, :-1], labels=ids[:, 1:]).loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _attn_only_swa(n_meta=0, window=4, n_layers=3):
    return ModelConfig(
        vocab_size=50,
        d_model=32,
        n_layers=n_layers,
        n_heads=4,
        ssm=False,
        swa_plan="all",
        window=window,
        n_meta_tokens=n_meta,
    )


def test_swa_receptive_field_is_layers_times_window_minus_one():
    c = _attn_only_swa()
    m = HymbaLM(c).eval()
    T = 40
    reach = c.n_layers * (c.window - 1)  # 9: the last query can see back to T-1-9
    ids = torch.randint(0, 50, (1, T))
    far, near = ids.clone(), ids.clone()
    far[0, T - 1 - reach - 1] = (far[0, T - 1 - reach - 1] + 1) % 50
    near[0, T - 1 - reach] = (near[0, T - 1 - reach] + 1) % 50
    with torch.no_grad():
        base, f, n = m(ids).logits[0, -1], m(far).logits[0, -1], m(near).logits[0, -1]
    torch.testing.assert_close(base, f, rtol=0, atol=0)
    assert (base - n).abs().max() > 1e-5


def test_meta_tokens_are_visible_beyond_the_window():
    c = _attn_only_swa(n_meta=4)
    m = HymbaLM(c).eval()
    ids = torch.randint(0, 50, (1, 60))  # last token is 60 >> 3 * (4 - 1) tokens after the meta tokens
    with torch.no_grad():
        before = m(ids).logits[0, -1].clone()
        m.meta_tokens[0] += 1.0
        after = m(ids).logits[0, -1]
    assert (before - after).abs().max() > 1e-4


def test_meta_tokens_are_not_in_the_output_and_loss_is_over_real_tokens():
    c = ROWS[13]
    m = HymbaLM(c)
    ids = torch.randint(0, 97, (2, 33))
    out = m(ids[:, :-1], labels=ids[:, 1:])
    assert out.logits.shape == (2, 32, 97)
    manual = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), ids[:, 1:].flatten())
    torch.testing.assert_close(out.loss, manual)
    labels = ids[:, 1:].clone()
    labels[:, :10] = -100
    manual = torch.nn.functional.cross_entropy(out.logits[:, 10:].flatten(0, 1), ids[:, 11:].flatten())
    torch.testing.assert_close(m(ids[:, :-1], labels=labels).loss, manual)


def test_kv_sharing_consumers_have_no_kv_projection_and_count_drops_exactly():
    base = ModelConfig(vocab_size=50, d_model=32, n_layers=6, n_heads=4, n_kv_heads=2, swa_plan="default", window=8)
    shared = base.replace(kv_share=True)
    assert shared.kv_groups() == [[1, 2]]
    m0, m1 = HymbaLM(base), HymbaLM(shared)
    kv_width = base.kv_heads * (base.qk_head_dim + base.value_head_dim)
    assert m1.layers[2].in_proj.weight.shape[0] == m0.layers[2].in_proj.weight.shape[0] - kv_width
    assert m1.layers[1].in_proj.weight.shape == m0.layers[1].in_proj.weight.shape
    n0 = sum(p.numel() for p in m0.parameters())
    n1 = sum(p.numel() for p in m1.parameters())
    assert n0 - n1 == kv_width * base.d_model * len([i for g in shared.kv_groups() for i in g[1:]])
    # the consumer really uses the producer's K/V: perturbing the producer's K rows changes its output
    ids = torch.randint(0, 50, (1, 20))
    out = m1(ids).logits
    with torch.no_grad():
        H, dk = shared.n_heads * shared.qk_head_dim, shared.qk_head_dim
        m1.layers[1].in_proj.weight[H : H + dk] += 0.5
    assert (m1(ids).logits - out).abs().max() > 1e-5


def _attention_outputs(m: HymbaLM, x: torch.Tensor) -> dict[int, torch.Tensor]:
    """Each attention layer's output for the same input x [1, S, d], wired through one context as in forward
    (producers publish their K/V, consumers read them): the wiring alone, with no residual stream between."""
    ctx = m._context(torch.arange(x.shape[1])[None], None, x.dtype)
    outs = {}
    with torch.no_grad():
        for layer in m.layers:
            q, k, v, _, _ = layer.in_proj(layer.mixer_norm(x)).split(layer.split, dim=-1)
            outs[layer.i] = layer._attention(q, k, v, ctx)
    return outs


def test_perturbing_a_producers_kv_changes_exactly_its_consumers_attention():
    c = ModelConfig(
        vocab_size=50,
        d_model=32,
        n_layers=8,
        n_heads=4,
        n_kv_heads=2,
        swa_plan="default",
        window=4,
        kv_share=True,
        init_std=0.2,
    )
    groups = c.kv_groups()
    assert groups == [[1, 2, 3], [5, 6]]  # two producers that are not layer 0
    m = HymbaLM(c).eval()
    x = torch.randn(1, 12, c.d_model)
    base = _attention_outputs(m, x)
    for producer in range(c.n_layers):
        layer = m.layers[producer]
        if not layer.plan.has_kv:
            continue
        readers = next((set(g) for g in groups if g[0] == producer), {producer})
        q_rows, kv_rows = layer.split[0], layer.split[1] + layer.split[2]
        with torch.no_grad():
            saved = layer.in_proj.weight.clone()
            layer.in_proj.weight[q_rows : q_rows + kv_rows] += 0.3 * torch.randn(kv_rows, c.d_model)
            moved = {i for i, o in _attention_outputs(m, x).items() if not torch.equal(o, base[i])}
            layer.in_proj.weight.copy_(saved)
        assert moved == readers, f"K/V of layer {producer} reach layers {sorted(moved)}"


def _rope_model(**kw) -> HymbaLM:
    return HymbaLM(ModelConfig(vocab_size=50, d_model=32, n_layers=1, n_heads=2, ssm=False, init_std=0.2, **kw)).eval()


def test_rotary_scores_depend_only_on_relative_position():
    from hymba.model.layers import Rotary

    rot = Rotary(16)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(i, j):
        cq, sq = rot.cos_sin(torch.tensor([[i]]), torch.float32)
        ck, sk = rot.cos_sin(torch.tensor([[j]]), torch.float32)
        return float((Rotary.apply(q, cq, sq) * Rotary.apply(k, ck, sk)).sum())

    assert score(7, 3) == pytest.approx(score(104, 100), rel=1e-4, abs=1e-5)
    assert score(7, 3) != pytest.approx(score(7, 5), rel=1e-3)


def test_attention_sees_relative_positions_only_through_rope_on_q_and_k():
    m = _rope_model()
    ids = torch.randint(0, 50, (1, 12))
    x = m.embed(ids)
    with torch.no_grad():
        at = {o: m._run(x, m._context(torch.arange(12)[None] + o, None, x.dtype)) for o in (0, 37)}
        swapped = ids.clone()
        swapped[0, [2, 5]] = ids[0, [5, 2]]
        a, b = m(ids).logits[0, -1], m(swapped).logits[0, -1]
    # shifting every position leaves q.k unchanged only if K is rotated at its own position like Q
    torch.testing.assert_close(at[37], at[0], rtol=1e-4, atol=1e-4)
    # and order matters: without positions, causal attention would not see two earlier tokens swapped
    assert (a - b).abs().max() > 1e-3


def test_meta_tokens_sit_at_positions_zero_to_m_minus_one_in_every_row():
    m = HymbaLM(ROWS[13]).eval()
    M = m.config.n_meta_tokens
    ids = torch.randint(1, 97, (2, 9))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    _, pos, valid, pad = m._embed(ids, mask)
    assert pad.tolist() == [4, 0]
    assert pos[0, 4 : 4 + M].tolist() == list(range(M)) and pos[1, :M].tolist() == list(range(M))
    assert pos[0, 4 + M :].tolist() == list(range(M, M + 5)) and pos[1, M:].tolist() == list(range(M, M + 9))
    assert not valid[0, :4].any() and valid[0, 4:].all() and valid[1].all()


def test_released_kv_groups():
    c = ModelConfig(
        vocab_size=32001,
        d_model=1600,
        n_layers=32,
        n_heads=25,
        n_kv_heads=5,
        head_dim=64,
        swa_plan=[0, 15, 31],
        window=1024,
        kv_share=True,
        n_meta_tokens=128,
    )
    groups = c.kv_groups()
    assert groups[0] == [1, 2] and groups[6] == [13, 14] and groups[7] == [16, 17, 18] and groups[-1] == [29, 30]
    assert len(set(c.kv_producer())) == 17
    assert c.value_head_dim == 128 and c.attn_out_dim == 3200 == c.d_inner and c.ssm_dt_rank == 100


def test_param_breakdown_accounts_for_every_parameter():
    for row, c in ROWS.items():
        b = HymbaLM(c).param_breakdown()
        assert sum(v for k, v in b.items() if k != "total") == b["total"], row
        assert (b["attention"] > 0) == (c.n_heads > 0) and (b["ssm"] > 0) == c.ssm, row


def test_attn_mamba_ratios_ordered_as_in_the_paper():
    def share(row):
        a, s = HymbaLM(ROWS[row]).attn_mamba_ratio()
        return a / s

    assert share(2) < share(3) < share(4)  # 4 < 8 < 16 heads
    assert share(5) < share(4)  # GQA lowers it
    assert share(9) < share(8)  # KV sharing lowers it
    assert share(8) == share(5) == share(7)  # SWA changes no parameter
    assert HymbaLM(ROWS[1]).attn_mamba_ratio()[0] == 0 and HymbaLM(ROWS[6]).attn_mamba_ratio()[1] == 0


def test_fusion_changes_the_computation():
    m = HymbaLM(ROWS[9])
    c = HymbaLM(ROWS[11])
    assert c.layers[0].out_proj.weight.shape[1] == 2 * m.layers[0].out_proj.weight.shape[1]
    assert hasattr(m.layers[0], "attn_norm") and not hasattr(c.layers[0], "attn_norm")


def test_separate_norms_for_mixer_and_ffn():
    layer = HymbaLM(ROWS[13]).layers[0]
    assert layer.mixer_norm is not layer.ffn_norm


def test_tied_embeddings_option():
    m = HymbaLM(ROWS[1].replace(tie_embeddings=False))
    assert m.lm_head.weight is not m.embed.weight
    tied = HymbaLM(ROWS[1])
    assert tied.lm_head.weight is tied.embed.weight


def test_standard_mamba_init():
    ssm = HymbaLM(ROWS[1]).layers[0].ssm
    A = -torch.exp(ssm.A_log)
    torch.testing.assert_close(A[0], -torch.arange(1, 17, dtype=torch.float32))
    dt = torch.nn.functional.softplus(ssm.dt_bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6


@pytest.mark.parametrize(
    "fields,name",
    [
        (dict(d_model=30, n_heads=4), "n_heads"),
        (dict(n_heads=4, n_kv_heads=3), "n_kv_heads"),
        (dict(window=0), "window"),
        (dict(n_heads=0, ssm=False), "ssm"),
        (dict(n_heads=0, kv_share=True), "kv_share"),
        (dict(fusion="sum"), "fusion"),
        (dict(swa_plan="some"), "swa_plan"),
        (dict(swa_plan=[0, 9]), "swa_plan"),
        (dict(n_heads=0, swa_plan="all"), "swa_plan"),
        (dict(kv_share=True, swa_plan="all", kv_share_groups=[[0, 2]]), "kv_share_groups"),
        (dict(kv_share=True, kv_share_groups=[[0, 1]]), "kv_share_groups"),
        (dict(n_meta_tokens=-1), "n_meta_tokens"),
        (dict(scan_backend="fast"), "scan_backend"),
    ],
)
def test_invalid_configs_name_field_and_value(fields, name):
    with pytest.raises(ValueError, match=rf"^model\.{name}="):
        ModelConfig(**fields)


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match="n_head"):
        ModelConfig.from_dict({"n_head": 4})


def test_flops_per_token_close_to_six_n_for_short_sequences():
    m = HymbaLM(ROWS[6])
    n = sum(p.numel() for p in m.parameters())
    f = m.flops_per_token(8)
    assert 6 * n * 0.9 < f < 6 * n * 1.2
    assert m.flops_per_token(512) > f
    assert math.isfinite(HymbaLM(ROWS[13]).flops_per_token(128))


def test_rmsnorm_matches_its_formula_and_keeps_the_input_dtype():
    from hymba.model.layers import RMSNorm

    norm = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
    x = torch.randn(3, 5, 16)
    ref = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), ref)
    assert norm(x.bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("row", [6, 13])
def test_attention_gets_qkv_in_one_dtype_under_autocast(row, monkeypatch):
    """Under bf16 autocast Q/K come out of RoPE in bf16, as V comes from the projection (RoPE's fp32 cos/sin
    promoted them to fp32 before, and attention's autocast cast them back: two fp32 copies a layer)."""
    import hymba.model.hymba as hymba_model
    from hymba.presets import row_config

    seen = []
    real = hymba_model.attention

    def spy(q, k, v, spec, backend="auto"):
        seen.append((q.dtype, k.dtype, v.dtype))
        return real(q, k, v, spec, backend=backend)

    monkeypatch.setattr(hymba_model, "attention", spy)
    cfg = row_config(row, "tiny", vocab_size=64, n_layers=2, scan_backend="ref", attn_backend="sdpa")
    ids = torch.randint(0, 64, (2, 17))
    with torch.autocast("cpu", torch.bfloat16):
        HymbaLM(cfg)(ids[:, :-1], labels=ids[:, 1:]).loss.backward()
    assert seen and all(d == (torch.bfloat16,) * 3 for d in seen), seen


@pytest.mark.parametrize("v_head_dim", [None, 8])  # the released layout (one W_out) and the paper's (split)
def test_mean_fusion_without_branch_norms_is_the_plain_mean(v_head_dim):
    """``fusion_norm=False`` drops Eq. 3's two branch norms and nothing else: the same as the normed model
    with its norms made the identity; prefill + decode equal the full forward (the fused eval path)."""
    from hymba.presets import row_config

    cfg = row_config(13, "tiny", vocab_size=61, n_layers=6, window=8, init_std=0.2, v_head_dim=v_head_dim)
    torch.manual_seed(0)
    plain = HymbaLM(cfg.replace(fusion_norm=False))
    normed = HymbaLM(cfg)
    missing, unexpected = normed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all("_norm." in k and "ffn" not in k for k in missing), missing
    ids = torch.randint(0, 61, (2, 30))
    assert not torch.allclose(plain(ids).logits, normed(ids).logits, atol=1e-2)  # the flag changes the model
    for blk in normed.layers:
        if hasattr(blk, "attn_norm"):
            blk.attn_norm.forward = blk.ssm_norm.forward = lambda t: t
    torch.testing.assert_close(plain(ids).logits, normed(ids).logits, rtol=1e-5, atol=1e-5)
    plain.eval()
    with torch.no_grad():
        full = plain(ids).logits
        logits, cache = plain.prefill(ids[:, :11], max_len=30)
        steps = [logits] + [plain.decode_step(ids[:, t], cache) for t in range(11, 30)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)


def test_fusion_norm_must_be_a_bool():
    with pytest.raises(ValueError, match="fusion_norm"):
        ModelConfig(vocab_size=61, fusion_norm="no")
