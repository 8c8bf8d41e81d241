"""Shared fixtures: a token cache per test session, the `micro` scale's fast settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def hymba_cache(tmp_path_factory) -> Path:
    """One token cache for the session, so the micro corpus is tokenized once."""
    path = tmp_path_factory.mktemp("hymba-cache")
    old = os.environ.get("HYMBA_CACHE")
    os.environ["HYMBA_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("HYMBA_CACHE", None)
    else:
        os.environ["HYMBA_CACHE"] = old


@pytest.fixture
def cli_env(hymba_cache) -> dict[str, str]:
    """Environment for `python -m hymba.cli` subprocesses (token cache, 1 thread)."""
    env = dict(os.environ, HYMBA_CACHE=str(hymba_cache), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these models are tiny, and on a busy CI box extra threads only spin."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
