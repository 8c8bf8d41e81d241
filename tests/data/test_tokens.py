"""Tokenizer training (training split only), the on-disk token cache, loading an existing tokenizer.json."""

import numpy as np
import pytest

import hymba.data.tokens as prep
from hymba.config import DataConfig
from hymba.data import builtin_text, prepare, split_text

BUDGET = 60_000


def cfg(**kw) -> DataConfig:
    return DataConfig(char_budget=BUDGET, vocab_size=300, **kw)


def test_cache_miss_then_hit(tmp_path, monkeypatch):
    first = prepare(cfg(), tmp_path)
    assert not first.cache_hit
    monkeypatch.setattr(prep, "train_unigram", lambda *a, **k: pytest.fail("cache hit must not retrain"))
    again = prepare(cfg(), tmp_path)
    assert again.cache_hit and again.cache_path == first.cache_path
    assert np.array_equal(again.train, first.train) and np.array_equal(again.val, first.val)
    assert isinstance(again.train, np.memmap) and again.train.dtype == np.uint16


@pytest.mark.parametrize(
    "change",
    [{"vocab_size": 280}, {"val_fraction": 0.2}, {"char_budget": BUDGET - 1}],
    ids=["vocab", "split", "corpus"],
)
def test_changed_settings_miss_the_cache(tmp_path, change):
    base = prepare(cfg(), tmp_path)
    other = prepare(DataConfig(**{**cfg().__dict__, **change}), tmp_path)
    assert not other.cache_hit and other.cache_path != base.cache_path


def test_tokenizer_sees_only_the_training_split(tmp_path, monkeypatch):
    seen = []
    real = prep.train_unigram

    def spy(texts, *a, **k):
        texts = list(texts)
        seen.append("".join(texts))
        return real(texts, *a, **k)

    monkeypatch.setattr(prep, "train_unigram", spy)
    data = prepare(cfg(), tmp_path)
    train_text, val_text = split_text(builtin_text()[:BUDGET], 0.1)
    assert seen == [train_text]
    # the token streams are the two splits, exactly
    assert data.tokenizer.decode(data.train) == train_text
    assert data.tokenizer.decode(data.val) == val_text


def test_reports_real_vocabulary_and_special_tokens(tmp_path):
    data = prepare(DataConfig(char_budget=20_000, vocab_size=50_000), tmp_path)
    assert data.vocab_size == data.tokenizer.tokenizer.get_vocab_size() < 50_000
    tok = data.tokenizer
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    text = "Héllo,  wörld!\n\n\tTo be — or not ✓"
    assert tok.decode(tok.encode(text)) == text  # byte-level: nothing is unknown, nothing is lost
    assert int(data.train.max()) < data.vocab_size


def test_existing_tokenizer_json_is_used(tmp_path):
    trained = prepare(cfg(), tmp_path / "a")
    path = tmp_path / "tokenizer.json"
    trained.tokenizer.save(path)
    loaded = prepare(cfg(tokenizer=str(path)), tmp_path / "b")
    assert loaded.vocab_size == trained.vocab_size
    assert np.array_equal(loaded.train, trained.train)
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        prepare(cfg(tokenizer=str(tmp_path / "missing.json")), tmp_path / "c")
    with pytest.raises(ValueError, match="no end-of-text token '<eos>'"):
        prepare(cfg(tokenizer=str(path), eos_token="<eos>"), tmp_path / "d")


def test_cache_directory_takes_the_umask_mode(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        p = prepare(cfg(), tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(p.cache_path).st_mode) == 0o755  # mkdtemp alone gives 0700
