import hashlib
import os
import tempfile
from pathlib import Path

import pytest
import torch

# Inductor's on-disk cache keys a compiled graph by the graph, not by our custom ops' fake implementations: a
# graph cached before a fake changed (e.g. the scan's saved-state layout) replays with stale output shapes. Tests
# (and the processes they start) use a cache keyed by the kernels' source, so any kernel change starts afresh.
_KERNELS = Path(__file__).resolve().parents[1] / "src" / "hymba" / "kernels"
_DIGEST = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(_KERNELS.rglob("*.py")))).hexdigest()[:16]
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"hymba-inductor-{_DIGEST}"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
