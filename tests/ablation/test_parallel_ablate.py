"""Rows trained concurrently in worker processes (``hymba ablate --gpus``), exercised on CPU.

Without GPUs the tests use the hidden ``--cpu-workers N`` (``run_ablation(cpu_workers=N)``): the same worker
pool (``hymba.ablation.workers``) with N CPU slots instead of one slot per GPU. The GPU flag itself is checked
for its errors here, and run on a GPU by the ``gpu`` test.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from hymba.ablation import workers
from hymba.ablation.runner import run_ablation, run_row
from hymba.ablation.settings import AblationSettings
from hymba.errors import UsageError

PYTHON = sys.executable


def _ablate(out, *extra):
    return [PYTHON, "-m", "hymba.cli", "ablate", "--preset", "micro", "--out", str(out), "--no-recall", *extra]


def _results(out):
    return json.loads((out / "results.json").read_text())["rows"]


def test_two_workers_write_one_consistent_results_file(tmp_path, cli_env):
    out = tmp_path / "abl"
    proc = subprocess.run(
        _ablate(out, "--rows", "1,2", "--cpu-workers", "2"), env=cli_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _results(out)
    assert sorted(rows) == ["1", "2"] and all(r["status"] == "done" for r in rows.values())
    assert sorted(r["device"] for r in rows.values()) == ["cpu worker 0", "cpu worker 1"]  # both ran at once
    # per-row lines: each row's start (with its worker) and its result
    for row in (1, 2):
        assert re.search(rf"row {row} \(.*\): training on cpu worker \d \(worker pid \d+\)", proc.stderr)
        assert re.search(rf"row {row} \(.*\) on cpu worker \d: \d+s, val ppl", proc.stderr)
    # the CSV mirrors the record; no temporary file is left behind
    table = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert [(t["id"], float(t["val_ppl"])) for t in table] == [(k, rows[k]["val_ppl"]) for k in ("1", "2")]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert (out / "table.md").is_file()
    # a worker trains the row exactly as this process does, row by row
    torch.set_num_threads(1)
    here = run_row(AblationSettings.load("micro"), 2, tmp_path / "here", torch.device("cpu"))
    assert rows["2"]["val_ppl"] == pytest.approx(here["val_ppl"], rel=1e-6)
    assert rows["2"]["params"] == here["params"]


def test_killed_worker_leaves_its_row_failed_and_the_rest_finish(tmp_path, hymba_cache):
    out = tmp_path / "abl"
    lines = []

    def echo(msg: str) -> None:
        lines.append(msg)
        m = re.search(r"row 13 .*: training on .* \(worker pid (\d+)\)", msg)
        if m:
            os.kill(int(m.group(1)), signal.SIGKILL)

    run = run_ablation("micro", "1,13", out, recall=False, cpu_workers=2, echo=echo)
    rows = _results(out)
    assert rows["1"]["status"] == "done" and rows["1"]["val_ppl"] > 0
    assert rows["13"]["status"] == "failed"
    assert rows["13"]["error"] == "the worker process was killed by SIGKILL"
    assert "killed by SIGKILL" in (out / "rows" / "13" / "error.txt").read_text()
    assert run.failed == [13] and sorted(run.ran) == [1, 13]
    assert list(run.table["ID"]) == [1, 13] and list(run.table["Status"]) == [
        "done",
        "failed: the worker process was killed by SIGKILL",
    ]
    assert any("row 13" in m and "FAILED" in m for m in lines)


def test_bad_gpus_is_one_error(tmp_path, cli_env):
    out = tmp_path / "abl"
    proc = subprocess.run(_ablate(out, "--rows", "1", "--gpus", "99"), env=cli_env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert re.fullmatch(
        r"hymba ablate: error: --gpus 99: (CUDA is not available here .*|there is no GPU 99; .*)\n", proc.stderr
    )
    assert not out.exists()


def test_parse_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert workers.parse_gpus("auto") == [0, 1]
    assert workers.parse_gpus("1, 0") == [1, 0]
    with pytest.raises(UsageError, match=r"--gpus 0,7: there is no GPU 7; this machine has 2 \(ids 0-1\)"):
        workers.parse_gpus("0,7")
    with pytest.raises(UsageError, match="GPU 1 is listed twice"):
        workers.parse_gpus("1,1")
    with pytest.raises(UsageError, match="'x' is not a GPU id"):
        workers.parse_gpus("x")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match="CUDA is not available here"):
        workers.parse_gpus("auto")


def test_gpu_slots_follow_the_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    slots = workers.gpu_slots([1])
    assert slots == [workers.Slot("cuda:0", "cuda:1", {"CUDA_VISIBLE_DEVICES": "5"})]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert workers.gpu_slots([0, 1])[1].env == {"CUDA_VISIBLE_DEVICES": "1"}


def test_ablate_refuses_torchrun(monkeypatch, tmp_path):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError, match="instead of launching it with torchrun"):
        run_ablation("micro", "1", tmp_path / "abl", echo=lambda m: None)


@pytest.mark.gpu
def test_gpus_auto_on_gpu(tmp_path, cli_env):
    out = tmp_path / "abl"
    proc = subprocess.run(
        _ablate(out, "--rows", "1,2", "--gpus", "auto", "--set", "train.device=auto"),
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _results(out)
    assert all(r["status"] == "done" and r["device"].startswith("cuda:") for r in rows.values())
