import subprocess
import sys

from hymba.cli import main
from hymba.presets import ROW_NAMES


def test_cache_size_of_the_released_model(capsys):
    assert main(["cache-size", "--config", "configs/models/hymba-1.5b.toml"]) == 0
    out = capsys.readouterr().out
    assert "KV cache 78.89 MB (17 KV layers)" in out and "SSM state 3.89 MB" in out
    assert "1522.8M parameters, Attn:Mamba 1:4.79" in out  # Q/K/V against the rest of the mixer


def test_cache_size_prints_the_papers_attn_mamba_ratio_of_a_row(capsys):
    assert main(["cache-size", "--row", "2", "--preset", "paper-layout"]) == 0
    assert "Attn:Mamba 1:8.48" in capsys.readouterr().out  # the paper's row 2, as printed


def test_bad_input_is_one_line_and_exit_code_2():
    for args in (
        ["cache-size", "--config", "missing.toml"],
        ["cache-size", "--row", str(max(ROW_NAMES) + 1)],
        ["cache-size", "--row", "3", "--preset", "huge"],
        ["bench", "--row", "1", "--batch", "0"],
        ["generate", "runs/x", "--prompt", "a", "--max-new-tokens", "0"],
    ):  # a UsageError subcommand
        r = subprocess.run([sys.executable, "-m", "hymba.cli", *args], capture_output=True, text=True)
        assert r.returncode == 2, args
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_invalid_model_config_file_names_the_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nn_heads = 5\nd_model = 64\n")
    r = subprocess.run(
        [sys.executable, "-m", "hymba.cli", "cache-size", "--config", str(bad)], capture_output=True, text=True
    )
    assert r.returncode == 2 and "model.n_heads=5" in r.stderr


def test_bench_on_cpu(capsys):
    assert main(["bench", "--row", "9", "--prompt-len", "16", "--batch", "2", "--new-tokens", "3"]) == 0
    assert "generated tok/s (batch 2, prompt 16, 3 new" in capsys.readouterr().out


def test_bench_json_reports_the_step_against_the_bandwidth_floor_and_bad_modes_are_usage_errors():
    import json

    base = [sys.executable, "-m", "hymba.cli", "bench", "--row", "13", "--prompt-len", "8", "--batch", "1"]
    r = subprocess.run([*base, "--new-tokens", "2", "--device", "cpu", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.strip().splitlines()
    out = json.loads(line)
    assert out["decode"] == "eager" and out["model"] == "row 13 (tiny)"
    assert out["step_ms"] > 0 and 0 < out["hbm_fraction"] and out["copy_bw_gbs"] > 0 and out["step_bytes"] > 0
    for modes, msg in (("eager,warp", "unknown mode 'warp'"), ("cuda_graph", "CUDA graphs need CUDA")):
        r = subprocess.run([*base, "--device", "cpu", "--decode", modes], capture_output=True, text=True)
        assert r.returncode == 2 and f"--decode {modes}" in r.stderr and msg in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
