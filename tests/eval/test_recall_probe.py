"""The recall probe's model: each row's layer plan at the probe's depth and width (``probe_config``)."""

from __future__ import annotations

import pytest
import torch

from hymba.ablation.settings import AblationSettings
from hymba.eval.mqar import MQARSettings, plan_features, probe_config, run_recall
from hymba.presets import ROW_NAMES


def test_the_seed_probe_keeps_every_rows_layer_plan():
    st = AblationSettings.load("seed")
    for row in ROW_NAMES:
        full, probe = st.row_model(row), probe_config(st.row_model(row), st.recall)
        assert plan_features(probe) == plan_features(full), row
        assert (probe.n_layers, probe.d_model, probe.head_dim, probe.window) == (6, 128, 32, 32)
        assert (probe.vocab_size, probe.attn_backend) == (st.recall.vocab, "sdpa")
        assert (probe.n_heads, probe.n_kv_heads, probe.fusion, probe.ssm) == (
            full.n_heads,
            full.n_kv_heads,
            full.fusion,
            full.ssm,
        )
        assert probe.n_meta_tokens == (16 if full.n_meta_tokens else 0)
        assert probe.ffn_dim == 352 != full.ffn_dim  # 8/3 x 128 rounded up to 32: the probe's width, not the row's
    p13 = probe_config(st.row_model(13), st.recall)
    assert p13.global_layers() == [0, 3, 5] and p13.kv_groups() == [[1, 2]]  # first/middle/last; one shared pair


def test_the_capacity_probe_is_the_seed_probe_with_zoologys_vocabulary_and_more_pairs():
    seed, cap = AblationSettings.load("seed"), AblationSettings.load("seed-capacity")
    assert cap.model == seed.model and cap.train == seed.train  # only the recall probe differs
    assert cap.recall.vocab == 8192 and max(n for _, n in cap.recall.eval) == 128
    for row in ROW_NAMES:
        a, b = probe_config(seed.row_model(row), seed.recall), probe_config(cap.row_model(row), cap.recall)
        assert b.to_dict() == {**a.to_dict(), "vocab_size": 8192}, row
    p1 = probe_config(cap.row_model(1), cap.recall)  # keys up to 32 windows back
    assert max(T for T, _ in cap.recall.eval) == 32 * p1.window


def test_a_probe_that_loses_a_feature_or_sees_every_key_is_refused():
    st = AblationSettings.load("seed")
    with pytest.raises(ValueError, match=r"^recall.n_layers=4 is invalid: .*kv_sharing: True -> False"):
        probe_config(st.row_model(9), st.recall.replace(n_layers=4))
    probe_config(st.row_model(8), st.recall.replace(n_layers=4))  # no KV sharing to lose: 0, 2, 3 global
    with pytest.raises(ValueError, match=r"^recall.window=256 is invalid: .*shorter than the longest MQAR"):
        probe_config(st.row_model(7), st.recall.replace(window=256))
    with pytest.raises(ValueError, match=r"^recall.window=300 is invalid"):
        probe_config(st.row_model(7), st.recall.replace(window=300))
    probe_config(st.row_model(6), st.recall.replace(window=300))  # all global: the window is unused


def test_an_explicit_global_layer_list_is_mapped_to_the_probe_depth():
    st = AblationSettings.load("seed")
    cfg = st.row_model(8).replace(swa_plan=[0, 6, 11])
    assert probe_config(cfg, st.recall).global_layers() == [0, 3, 5]
    row_size = MQARSettings(vocab=256, train=[(512, 16)], eval=[(512, 16)], lrs=[1e-3])  # probe size unset
    assert probe_config(cfg, row_size).global_layers() == [0, 6, 11]


@pytest.mark.gpu
@pytest.mark.parametrize("row", [13, 6, 1])
def test_the_seed_probe_trains_on_cuda(row):
    # the GPU run's path: sdpa attention, the auto scan (Triton without mamba_ssm), bf16, curve points
    st = AblationSettings.load("seed", ["recall.train_steps=40", "recall.eval_every=20"])
    r = run_recall(st.row_model(row), st.recall, lr=1e-3, device="cuda", seed=0)
    assert len(r.losses) == 40 and all(torch.isfinite(torch.tensor(r.losses)))
    assert [p["step"] for p in r.curve] == [20, 40] and 0 <= r.accuracy <= 1
