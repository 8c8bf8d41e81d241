import pytest

from hymba.config import DataConfig, ModelConfig, RunConfig, TrainConfig


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    """One token cache for the session: every run tokenizes the same slice of the built-in corpus."""
    return tmp_path_factory.mktemp("hymba-cache")


@pytest.fixture
def small_run(data_cache):
    """A run config that trains in about a second on CPU."""

    def make(**train) -> RunConfig:
        settings = dict(seq_len=64, batch_size=8, max_steps=6, lr=3e-3, warmup_steps=2, log_every=1,
                        progress=False, throughput_skip_steps=1)
        settings.update(train)
        return RunConfig(
            model=ModelConfig(d_model=32, n_layers=2, n_heads=2, n_meta_tokens=2, d_state=8, window=16,
                              swa_plan=[1]),
            data=DataConfig(char_budget=120_000, vocab_size=400, cache_dir=str(data_cache)),
            train=TrainConfig(**settings))

    return make
