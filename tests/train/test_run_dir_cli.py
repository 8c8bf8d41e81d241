"""`hymba train` and its run directory, run as a user runs it (a subprocess): what it refuses, the lock,
Ctrl-C / SIGTERM, resuming with the run's own config; exit code, message and what is left on disk."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

SMALL = dict(max_steps=4, log_every=1, throughput_skip_steps=1)  # [train] keys over conftest's SMALL_TOML


@pytest.fixture
def hymba(tmp_path, data_cache, small_toml):
    """``hymba(*args)`` runs ``hymba train --config small.toml *args`` (``config=False``: without --config)."""
    (tmp_path / "small.toml").write_text(small_toml(**SMALL))
    env = {**os.environ, "HYMBA_CACHE": str(data_cache)}

    def argv(args, config):
        return (
            [sys.executable, "-m", "hymba.cli", "train"]
            + (["--config", str(tmp_path / "small.toml")] if config else [])
            + [str(a) for a in args]
        )

    def run(*args, config=True):
        return subprocess.run(argv(args, config), capture_output=True, text=True, env=env, timeout=300)

    run.start = lambda *args: subprocess.Popen(
        argv(args, True), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    return run


def _snapshot(d):
    """Every path under ``d`` with its mode and, for files, its bytes (less the lock file's holder note)."""
    return {
        str(p.relative_to(d)): (p.stat().st_mode, p.read_bytes() if p.is_file() else None)
        for p in sorted(d.rglob("*"))
        if p.name != ".lock"
    }


def _error_line(r):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("hymba train: error: "), r.stderr
    return lines[0]


def _metric_steps(out):
    """Steps of the loss lines of metrics.jsonl, and the number of final lines."""
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in recs if "loss" in r], sum(bool(r.get("final")) for r in recs)


def _strict_json(path):
    return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{path} holds {c}"))


def _wait_for_steps(proc, out, n):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (out / "metrics.jsonl").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    pytest.fail("training did not start")


def test_out_holding_an_ablation_is_refused_and_left_untouched(hymba, tmp_path):
    abl = tmp_path / "ablation"  # the layout of hymba.ablation.store / runner
    (abl / "rows" / "1" / "train").mkdir(parents=True)
    (abl / "rows" / "1" / "train" / "config.json").write_text("{}")
    (abl / "results.json").write_text(json.dumps({"format": 1, "settings": {}, "meta": {}, "rows": {}}))
    (abl / "results.csv").write_text("id\n")
    before = _snapshot(abl)
    for extra in ((), ("--resume",)):
        line = _error_line(hymba("--out", abl, *extra))
        assert f"--out {abl} holds a `hymba ablate` run" in line and "choose another --out" in line
        assert _snapshot(abl) == before


def test_fresh_run_into_a_stale_directory_is_refused(hymba, tmp_path):
    out = tmp_path / "run"  # left by a run killed before its first checkpoint
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    before = _snapshot(out)
    line = _error_line(hymba("--out", out))
    assert f"--out {out} is not empty (config.json, metrics.jsonl)" in line and "--resume" in line
    assert _snapshot(out) == before
    (out / "config.json").unlink()
    (out / "metrics.jsonl").unlink()
    assert hymba("--out", out).returncode == 0  # an empty directory is fine
    assert _metric_steps(out) == ([1, 2, 3, 4], 1)


def test_failed_train_leaves_no_run_directory(hymba, tmp_path):
    out = tmp_path / "run"
    line = _error_line(hymba("--out", out, "--set", f"data.source={tmp_path / 'missing.txt'}"))
    assert "corpus not found" in line
    assert not out.exists()
    out.mkdir()  # the user's own empty directory stays, empty
    _error_line(hymba("--out", out, "--set", f"data.source={tmp_path / 'missing.txt'}"))
    assert list(out.iterdir()) == []


def test_second_run_on_a_locked_directory_is_refused(hymba, tmp_path):
    out = tmp_path / "run"
    first = hymba.start("--out", out, "--set", "train.max_steps=100000")
    try:
        _wait_for_steps(first, out, 2)
        before = {p: p.read_bytes() for p in (out / "config.json", out / "run.json")}
        for extra in ((), ("--resume",)):
            line = _error_line(hymba("--out", out, *extra, config=not extra))
            assert f"`hymba train` (pid {first.pid}) is already writing to {out}" in line, line
        assert {p: p.read_bytes() for p in before} == before
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert first.returncode == 130


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_checkpoints_the_current_step_and_resume_continues(hymba, tmp_path, sig):
    out = tmp_path / "run"
    proc = hymba.start("--out", out, "--set", "train.max_steps=100000")  # default ckpt_every
    _wait_for_steps(proc, out, 3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    steps, finals = _metric_steps(out)
    n = steps[-1]
    ckpt = out / "checkpoints" / f"step_{n:07d}"
    assert err.strip().splitlines()[-1] == (
        f"hymba train: interrupted by {signal.Signals(sig).name} at step {n}; "
        f"saved {ckpt}; continue with: hymba train --out {out} --resume"
    )
    assert (out / "checkpoints" / "latest").read_text().strip() == ckpt.name and finals == 0
    r = hymba("--out", out, "--resume", "--set", f"train.max_steps={n + 2}", config=False)
    assert r.returncode == 0, r.stderr
    assert f"resumed from {ckpt} at step {n}" in r.stderr
    assert _metric_steps(out) == (list(range(1, n + 3)), 1)
    assert _strict_json(out / "results.json")["steps"] == n + 2


def test_default_run_checkpoints_mid_run(hymba, tmp_path):
    out = tmp_path / "run"
    r = hymba("--out", out, "--set", "train.max_steps=101", "--set", "train.keep_checkpoints=5")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_0000100", "step_0000101"]


def test_resume_uses_the_runs_own_config_and_records_overrides(hymba, tmp_path, small_toml):
    out = tmp_path / "run"
    assert hymba("--out", out).returncode == 0
    config, run = _strict_json(out / "config.json"), _strict_json(out / "run.json")
    assert config["model"]["d_model"] == 32 and config["train"]["max_steps"] == 4
    # a finished run: nothing to do, nothing changed
    before = _snapshot(out)
    line = _error_line(hymba("--out", out, "--resume", config=False))
    assert f"nothing to resume: {out} finished at step 4 (train.max_steps=4)" in line
    assert _snapshot(out) == before
    # --config with --resume must be the run's own config
    (tmp_path / "other.toml").write_text(small_toml(**SMALL).replace("d_model = 32", "d_model = 48"))
    line = _error_line(hymba("--out", out, "--resume", "--config", tmp_path / "other.toml", config=False))
    assert f"--config {tmp_path / 'other.toml'} differs from the run's own config (model.d_model: 32 -> 48)" in line
    assert _snapshot(out) == before
    # a bare --resume (no --config: not the tiny default) continues the saved config; --set is recorded
    r = hymba("--out", out, "--resume", "--set", "train.max_steps=6", config=False)
    assert r.returncode == 0, r.stderr
    assert "resuming with changed train settings" in r.stderr and "train.max_steps: 4 -> 6" in r.stderr
    now = _strict_json(out / "config.json")
    assert now["model"] == config["model"] and now["data"] == config["data"]
    assert now["train"] == {**config["train"], "max_steps": 6}
    run_now = _strict_json(out / "run.json")
    assert {k: v for k, v in run_now.items() if k != "resumes"} == run
    assert [x["checkpoint"] for x in run_now["resumes"]] == ["step_0000004"]
    assert run_now["resumes"][0]["changed"] == {"train.max_steps": {"old": 4, "new": 6}}
    assert "--resume" in run_now["resumes"][0]["argv"]
    assert _metric_steps(out) == ([1, 2, 3, 4, 5, 6], 1)
    # the same --config as the run's is accepted
    r = hymba("--out", out, "--resume", "--set", "train.max_steps=7")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("content", ['{"model": {"d_model": 3', "\xff\xfe", "[1, 2]"], ids=["torn", "binary", "list"])
def test_corrupt_config_json_on_resume_is_one_line(hymba, tmp_path, content):
    out = tmp_path / "run"
    assert hymba("--out", out, "--set", "train.max_steps=1").returncode == 0
    (out / "config.json").write_bytes(content.encode("latin-1"))
    before = _snapshot(out)
    line = _error_line(hymba("--out", out, "--resume", config=False))
    assert f"cannot resume: {out / 'config.json'} is corrupt" in line
    assert _snapshot(out) == before
