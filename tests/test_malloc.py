"""hymba.malloc: a freed large CPU tensor's memory is reused, not page-faulted in again on the next step."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
from hymba.malloc import keep_freed_memory
ok = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(6):  # a "step": allocate and fill 256 MB of activations, then free them
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(64 << 20)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(ok, *faults)
"""


def _faults(mode: str) -> tuple[str, int]:
    """Minor page faults of the worst of the last two steps (the heap settles within the first few)."""
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True).stdout
    ok, *faults = out.split()
    return ok, max(map(int, faults[-2:]))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_activations_are_reused_instead_of_faulted_in_again():
    _, default = _faults("default")
    ok, kept = _faults("keep")
    assert ok == "True"
    assert default > 30_000, (default, kept)  # glibc unmaps the 256 MB block on free: every 4 KB page faults again
    assert kept < default / 20, (default, kept)
