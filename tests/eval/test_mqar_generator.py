"""MQAR generator invariants, checked against the definition rather than against the generator's code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hymba.eval.mqar import FILLER, IGNORE_INDEX, MQARSettings, mqar_batch

CASES = [
    pytest.param(64, 64, 4, id="V64-T64-N4"),
    pytest.param(64, 64, 8, id="V64-T64-N8"),
    pytest.param(128, 257, 16, id="V128-T257-N16"),  # odd length: last position is filler
    pytest.param(8, 12, 3, id="V8-T12-N3"),  # smallest: every key, every value and every slot used
]


@pytest.mark.parametrize("vocab,seq_len,pairs", CASES)
def test_layout(vocab, seq_len, pairs):
    ids, labels = mqar_batch(50, vocab=vocab, seq_len=seq_len, pairs=pairs, seed=1)
    assert ids.shape == labels.shape == (50, seq_len) and ids.dtype == labels.dtype == torch.int64
    half = vocab // 2
    for x, y in zip(ids.tolist(), labels.tolist()):
        keys, values = x[0 : 2 * pairs : 2], x[1 : 2 * pairs : 2]
        # keys from [1, V/2), values from [V/2, V), each without replacement
        assert all(1 <= k < half for k in keys) and len(set(keys)) == pairs
        assert all(half <= v < vocab for v in values) and len(set(values)) == pairs
        kv = dict(zip(keys, values))
        # context carries no labels
        assert all(t == IGNORE_INDEX for t in y[: 2 * pairs])
        query_positions = [t for t in range(2 * pairs, seq_len) if y[t] != IGNORE_INDEX]
        # every key queried exactly once, at the start of a two-token slot, label = its value
        assert sorted(x[t] for t in query_positions) == sorted(keys)
        for t in query_positions:
            assert y[t] == kv[x[t]]
            assert (t - 2 * pairs) % 2 == 0
        # everything else in the query region is filler: no value is ever shown after the context
        assert all(x[t] == FILLER for t in range(2 * pairs, seq_len) if t not in query_positions)


def test_deterministic_and_seed_dependent():
    a = mqar_batch(16, vocab=64, seq_len=64, pairs=8, seed=7)
    b = mqar_batch(16, vocab=64, seq_len=64, pairs=8, seed=7)
    c = mqar_batch(16, vocab=64, seq_len=64, pairs=8, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_gaps_follow_power_law():
    """Small power_a puts most queries in the first slots; power_a = 1 is uniform over slots."""
    pairs, seq_len, n = 4, 4 * 2 + 2 * 100, 4000

    def slot_histogram(power_a):
        _, y = mqar_batch(n, vocab=64, seq_len=seq_len, pairs=pairs, power_a=power_a, seed=3)
        pos = (y != IGNORE_INDEX).nonzero()[:, 1]
        return np.bincount(((pos - 2 * pairs) // 2).numpy(), minlength=100) / (n * pairs)

    skew, flat = slot_histogram(0.01), slot_histogram(1.0)
    assert skew[:10].sum() > 0.3 and skew[50:].sum() < 0.25
    assert abs(flat[:50].sum() - 0.5) < 0.03


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(vocab=16, seq_len=64, pairs=8), "pairs"),  # only 7 keys in [1, 8)
        (dict(vocab=64, seq_len=15, pairs=4), "seq_len"),
        (dict(vocab=64, seq_len=64, pairs=0), "pairs"),
    ],
)
def test_rejects_impossible_instances(kwargs, field):
    with pytest.raises(ValueError, match=field):
        mqar_batch(2, **kwargs)


def test_settings_validation_and_roundtrip():
    s = MQARSettings(vocab=64, train=[[64, 4]], eval=[[64, 4], [128, 8]], train_steps=10)
    assert s.train == ((64, 4),) and s.max_seq_len == 128
    assert MQARSettings.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="unknown key"):
        MQARSettings.from_dict({"vocabulary": 64})
    with pytest.raises(ValueError, match="eval"):
        MQARSettings(eval=[64])
    with pytest.raises(ValueError, match="lrs"):
        MQARSettings(lrs=[0])


def test_settings_errors_name_the_recall_key():
    """MQARSettings is the ablation's [recall] section: errors read as `--set recall.<key>=...` spells them."""
    with pytest.raises(ValueError, match=r"^recall\.lrs=\[0\] is invalid: expected a non-empty list"):
        MQARSettings(lrs=[0])
    with pytest.raises(
        ValueError,
        match=r"^recall\.eval=\[\[64, 40\]\] is invalid: the setting \[64, 40\] has "
        r"pairs=40",
    ):
        MQARSettings(vocab=64, eval=[[64, 40]])
    with pytest.raises(ValueError, match=r"^recall\.grad_clip=inf is invalid: must be a finite number"):
        MQARSettings(grad_clip=float("inf"))
