"""Every Triton kernel compiles for sm_90 (an H100/H200) ahead of time, no GPU needed: the CPU interpreter that
runs the kernels' value tests accepts code the compiler can reject (``aot_compile.py`` beside this file)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")


def test_every_triton_kernel_compiles_for_sm90():
    script = Path(__file__).with_name("aot_compile.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    compiled = [line for line in r.stdout.splitlines() if line.startswith("ok ")]
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert len(compiled) >= 30, r.stdout  # 17 kernels, flags on and off


def test_the_chunked_scan_forward_pipelines_its_loads_on_sm90():
    """The default chunked forward (64 channels a warp, 2 stages: 13-25% faster on an H100) compiles to
    ``cp.async`` loads as a launch from the model is specialised; at 32 channels or 1 stage it has none, so a
    change of tiling or layout that silently stops the pipelining fails here."""
    script = Path(__file__).with_name("aot_compile.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run(
        [sys.executable, str(script), "--scan-forward-async-copies"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
