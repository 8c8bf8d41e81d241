"""Train/validation split, random training windows with shifted targets, whole-split validation."""

import numpy as np
import pytest
import torch

from hymba.data import IGNORE_INDEX, TrainBatches, builtin_text, split_text, token_dtype, val_batches


def test_split_is_deterministic_and_cut_at_a_line():
    text = builtin_text()[:100_000]
    train, val = split_text(text, 0.1)
    assert (train, val) == split_text(text, 0.1)
    assert train + val == text
    assert train.endswith("\n")
    assert abs(len(val) - 10_000) < 200


def test_split_rejects_bad_fraction_and_tiny_text():
    with pytest.raises(ValueError, match="val_fraction"):
        split_text("a\nb\n", 1.0)
    with pytest.raises(ValueError, match="too small"):
        split_text("x", 0.5)


def test_training_targets_are_inputs_shifted_by_one():
    tokens = np.arange(10_000, dtype=np.uint16)  # token value = position, so windows are easy to check
    x, y = TrainBatches(tokens, seq_len=64, batch_size=8, seed=3).batch(0)
    assert x.shape == y.shape == (8, 64) and x.dtype == torch.int64
    start = x[:, :1]
    assert torch.equal(x, start + torch.arange(64))
    assert torch.equal(y, start + 1 + torch.arange(64))  # no forced EOS in the last target
    assert int(y.max()) < len(tokens)


def test_batches_depend_only_on_seed_and_index():
    tokens = np.arange(5_000, dtype=np.uint16)
    a = TrainBatches(tokens, 32, 4, seed=0)
    seen = [next(a) for _ in range(5)]
    b = TrainBatches(tokens, 32, 4, seed=0)
    b.load_state_dict({**a.state_dict(), "next_index": 3})
    assert torch.equal(next(b)[0], seen[3][0])
    assert not torch.equal(TrainBatches(tokens, 32, 4, seed=1).batch(0)[0], seen[0][0])
    with pytest.raises(ValueError, match="seq_len"):
        b.load_state_dict({**a.state_dict(), "seq_len": 16})


@pytest.mark.parametrize("n,seq_len,batch", [(2, 8, 4), (65, 64, 2), (1000, 64, 3), (1001, 7, 5)], ids=lambda v: str(v))
def test_validation_covers_every_target_once(n, seq_len, batch):
    tokens = np.arange(n, dtype=np.uint32)
    targets = []
    for x, y in val_batches(tokens, seq_len, batch, pad_id=0):
        real = y != IGNORE_INDEX
        assert torch.equal(y[real], x[real] + 1)
        targets += y[real].tolist()
    assert targets == list(range(1, n))


def test_token_dtype_by_vocabulary():
    assert token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32
