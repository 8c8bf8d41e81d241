import shutil

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
        settings = dict(
            seq_len=64,
            batch_size=8,
            max_steps=6,
            lr=3e-3,
            warmup_steps=2,
            log_every=1,
            progress=False,
            throughput_skip_steps=1,
        )
        settings.update(train)
        return RunConfig(
            model=ModelConfig(d_model=32, n_layers=2, n_heads=2, n_meta_tokens=2, d_state=8, window=16, swa_plan=[1]),
            data=DataConfig(char_budget=120_000, vocab_size=400, cache_dir=str(data_cache)),
            train=TrainConfig(**settings),
        )

    return make


SMALL_TOML = """
[model]
d_model = 32
n_layers = 2
n_heads = 2
d_state = 8

[data]
char_budget = 60000
vocab_size = 300

[train]
seq_len = 32
batch_size = 4
warmup_steps = 1
progress = false
"""


@pytest.fixture
def small_toml():
    """``small_toml(max_steps=4, ...)``: a run config TOML that trains in seconds, [train] keys appended."""

    def make(**train) -> str:
        return SMALL_TOML + "".join(f"{k} = {v}\n" for k, v in train.items())

    return make


@pytest.fixture
def copy_run_until():
    """``copy(src, dst, step)``: run directory ``src`` copied to ``dst`` as if training had been interrupted right
    after checkpoint ``step`` (that checkpoint only; no final weights or results)."""

    def copy(src, dst, step):
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", "model.safetensors", "results.json"))
        (dst / "checkpoints").mkdir()
        name = f"step_{step:07d}"
        shutil.copytree(src / "checkpoints" / name, dst / "checkpoints" / name)

    return copy
