"""Benchmark scripts that run on CPU: a smoke run at tiny shapes, with the values that must hold checked."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_generation_compare_runs_ours_and_transformers_llama_of_row_6s_shape():
    pytest.importorskip("transformers")
    cmd = [sys.executable, "benchmarks/generation_compare.py", "--models", "row6,row13,hf-row6", "--preset", "tiny"]
    cmd += ["--device", "cpu", "--prompt-len", "24", "--batch", "2", "--new-tokens", "3", "--global-attn", "flex"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True).stdout
    assert json.loads(out.splitlines()[0])["global_attn"] == "flex"  # recorded as asked (not the default)
    rows = {r["model"]: r for r in map(json.loads, out.splitlines()) if "model" in r}
    assert set(rows) == {"row6", "row13", "hf-row6"}
    assert not [r["error"] for r in rows.values() if "error" in r]
    for r in rows.values():
        assert r["tokens_per_s"] > 0 and r["batch_used"] == 2 and r["new_tokens"] == 3
    # built to row 6's shape: the same parameters and the same bytes per decode step (weights + K/V)
    assert rows["hf-row6"]["params_m"] == rows["row6"]["params_m"]
    assert rows["hf-row6"]["step_gb"] == pytest.approx(rows["row6"]["step_gb"], rel=1e-9)
    assert rows["row13"]["state_gb"] > 0 and rows["row6"]["state_gb"] == 0


def test_train_throughput_trains_transformers_llama_of_row_6s_shape():
    pytest.importorskip("transformers")
    cmd = [sys.executable, "benchmarks/train_throughput.py", "--preset", "tiny", "--rows", "6", "--steps", "2"]
    cmd += ["--warmup", "1", "--hf-llama", "--set", "train.device=cpu", "--set", "train.batch_size=2"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True).stdout
    ours, hf = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert "error" not in ours and "error" not in hf, (ours, hf)
    assert hf["params_m"] == ours["params_m"]  # row 6's shape, the trainer's vocabulary
    assert (hf["batch"], hf["seq"]) == (ours["batch"], ours["seq"]) == (2, 64)
    assert hf["tokens_per_s"] > 0 and ours["tokens_per_s"] > 0
    assert ours["global_attn"] == "sdpa"  # the default dispatch of global layers, recorded


def test_global_attn_flag_names_its_choices_on_a_bad_value():
    cmd = [sys.executable, "benchmarks/train_throughput.py", "--global-attn", "fast"]
    bad = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--global-attn" in bad.stderr and "flex, sdpa" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.gpu
def test_flex_attention_times_the_default_and_our_forward_options():
    cmd = [sys.executable, "benchmarks/flex_attention.py", "--rows", "1", "--prompt-len", "256"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["window"] for r in rows} == {1024, None}  # hymba-1.5b.toml's window, then global
    assert all(r["ms"] > 0 for r in rows if r["options"].startswith("flex default"))
    assert (rows[0]["qk_dim"], rows[0]["v_dim"], rows[0]["tokens"]) == (64, 128, 256 + 128)


def test_glue_profile_times_the_mqar_probes_whole_training_step():
    cmd = [sys.executable, "benchmarks/glue_profile.py", "--rows", "6,13", "--device", "cpu", "--preset", "micro"]
    cmd += ["--probe", "--batch", "2", "--seq", "32", "--step-ms", "2"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True).stdout
    rows = {r["row"]: r for r in map(json.loads, (line for line in out.splitlines() if line.startswith("{")))}
    assert set(rows) == {6, 13} and all(r["mqar_step_ms"] > 0 for r in rows.values())
    assert rows[13]["counts"]["aten::copy_"] > rows[6]["counts"]["aten::copy_"]  # the SSM branch's glue
    bad = subprocess.run(cmd[:2] + ["--step-ms", "2"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--step-ms times the MQAR probe's training step: add --probe" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_scan_cpu_times_the_reference_scan_per_block_size():
    cmd = [sys.executable, "benchmarks/scan_cpu.py", "--shapes", "0", "--blocks", "15", "--reps", "1"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    timed = [r for r in rows if "block" in r]
    # B8 D128 N16 L64: 2^17 elements are 8 steps a block, 2^15 two, the whole sequence 64
    assert [(r["block"], r["block_steps"]) for r in timed] == [("default", 8), ("2^15", 2), ("whole sequence", 64)]
    # timed, not compared: with one repetition on a shared CPU the forward alone can time above forward + backward
    assert all(r["ms_fwd"] > 0 and r["ms_fwd_bwd"] > 0 for r in timed) and timed[0]["vs_default"] == 1.0


def test_glue_profile_runs_the_triton_scan_implementation_it_names():
    """``--scan-impl`` sets the Triton scan's implementation (here not the default) for the whole step,
    interpreted on CPU, and the record names it; an unknown one is a usage error naming the choices."""
    pytest.importorskip("triton")
    cmd = [sys.executable, "benchmarks/glue_profile.py", "--rows", "1", "--device", "cpu", "--preset", "micro"]
    cmd += ["--scan", "triton", "--batch", "1", "--seq", "8", "--scan-impl"]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = dict(cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    out = subprocess.run([*cmd, "sequential"], check=True, **run).stdout
    (rec,) = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert rec["scan"] == "triton" and rec["scan_impl"] == "sequential"
    bad = subprocess.run([*cmd, "fast"], **run)
    assert bad.returncode == 2 and "--scan-impl" in bad.stderr and "chunked" in bad.stderr


def test_every_benchmark_runs_from_a_plain_clone_without_the_project_installed():
    """``python benchmarks/NAME.py`` on a bare CUDA machine, nothing installed but torch and friends: each script
    finds ``src/`` itself (``benchmarks/_hymba_path.py``), not through a PYTHONPATH set by some helper. Simulated
    with ``-S`` (no site processing, so the editable install of ``hymba`` is not seen) and site-packages on the
    path for torch; ``--help`` imports everything a script imports."""
    import sysconfig

    scripts = sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "benchmarks" / "results").glob("*/*.py"))
    scripts = [s for s in scripts if not s.name.startswith("_")]
    env = {"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": os.environ.get("PATH", "")}
    probe = [sys.executable, "-S", "-c", "import importlib.util; print(importlib.util.find_spec('hymba'))"]
    assert subprocess.run(probe, env=env, capture_output=True, text=True, check=True).stdout.strip() == "None"
    for script in scripts:
        r = subprocess.run(
            [sys.executable, "-S", str(script.relative_to(ROOT)), "--help"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0 and "usage" in r.stdout, f"{script.name}: {r.stderr[-500:]}"
