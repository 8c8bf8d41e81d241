"""End to end on the `micro` scale: real training, a real kill, resume, failures, corrupt results, report."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from hymba.ablation import runner as runner_mod
from hymba.ablation.report import COLUMNS
from hymba.ablation.runner import run_ablation
from hymba.ablation.store import ResultsError
from hymba.cli import main

PYTHON = sys.executable

MICRO = ["--preset", "micro"]


def _rows(out):
    return json.loads((out / "results.json").read_text())["rows"]


def _ablate(out, rows, env, *extra):
    return [PYTHON, "-m", "hymba.cli", "ablate", *MICRO, "--rows", rows, "--out", str(out), *extra]


def test_kill_after_first_row_then_resume(tmp_path, cli_env, capsys):
    out = tmp_path / "abl"
    proc = subprocess.Popen(
        _ablate(out, "1,2,13", cli_env), env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "results.json").is_file() and len(_rows(out)) >= 1:
                break
            time.sleep(0.05)
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = _rows(out)
    assert killed, "the run finished before it could be killed"
    assert 1 <= len(first) < 3 and "1" in first and first["1"]["status"] == "done"
    assert not (out / "table.csv").exists()  # the kill came before the report

    # rerun the same command: finished rows are skipped, the rest trained, the table is complete
    run = run_ablation("micro", "1,2,13", out, echo=lambda m: None)
    rows = _rows(out)
    assert run.skipped == sorted(int(k) for k in first) and set(run.ran) == {1, 2, 13} - set(run.skipped)
    assert rows["1"]["finished_at"] == first["1"]["finished_at"]  # not retrained
    assert rows["1"]["seconds"] == first["1"]["seconds"]
    assert [r["status"] for r in rows.values()] == ["done"] * 3
    table = run.table
    assert list(table["ID"]) == [1, 2, 13] and list(table.columns[: len(COLUMNS)]) == COLUMNS
    assert table[COLUMNS[2:-1]].drop(columns=["Attn:Mamba", "Recall acc"]).notna().all().all()
    assert list(table["Attn:Mamba"])[0] == "0:1" and table.loc[0, "KV cache MB"] == 0.0
    assert table.loc[1, "KV cache MB"] > table.loc[2, "KV cache MB"] > 0  # KV compression of row 13
    assert (table["Steps"] == 3).all()
    for r in rows.values():  # each row directory holds its auditable training run
        run_dir = out / r["run_dir"]
        assert json.loads((run_dir / "config.json").read_text())["model"]["n_heads"] == r["model"]["n_heads"]
        assert (run_dir / "metrics.jsonl").is_file() and (run_dir / "run.json").is_file()
        assert (run_dir / "model.safetensors").is_file() and not (run_dir / "checkpoints").exists()

    # report regeneration reproduces the same table, byte for byte
    before = {name: (out / name).read_bytes() for name in ("table.csv", "table.md", "table.json")}
    for name in before:
        (out / name).unlink()
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Spearman vs paper" in printed and "table.md" in printed
    assert {name: (out / name).read_bytes() for name in before} == before

    # --force redoes a finished row
    run = run_ablation("micro", "2", out, force=True, echo=lambda m: None)
    assert run.ran == [2] and _rows(out)["2"]["finished_at"] >= rows["2"]["finished_at"]
    assert _rows(out)["1"] == rows["1"]


def test_failed_row_is_recorded_and_others_go_on(tmp_path, hymba_cache, monkeypatch):
    real = runner_mod.train_row

    def flaky(settings, row, run_dir):
        if row == 2:
            raise RuntimeError("injected failure")
        return real(settings, row, run_dir)

    monkeypatch.setattr(runner_mod, "train_row", flaky)
    out = tmp_path / "abl"
    run = run_ablation("micro", "1,2,12", out, echo=lambda m: None)
    rows = _rows(out)
    assert run.failed == [2]
    assert rows["2"]["status"] == "failed" and rows["2"]["error"] == "RuntimeError: injected failure"
    assert "injected failure" in (out / "rows" / "2" / "error.txt").read_text()
    assert rows["1"]["status"] == rows["12"]["status"] == "done"
    assert run.table.loc[1, "Status"] == "failed: RuntimeError: injected failure"

    # a rerun retries the failed row only
    monkeypatch.setattr(runner_mod, "train_row", real)
    run = run_ablation("micro", "1,2,12", out, echo=lambda m: None)
    assert run.ran == [2] and run.skipped == [1, 12] and not run.failed
    assert _rows(out)["2"]["status"] == "done" and not (out / "rows" / "2" / "error.txt").exists()


def test_recall_added_to_finished_rows_without_retraining(tmp_path, hymba_cache):
    out = tmp_path / "abl"
    run_ablation("micro", "7", out, recall=False, echo=lambda m: None)
    before = _rows(out)["7"]
    assert before["recall_acc"] is None
    run = run_ablation("micro", "7", out, recall=True, echo=lambda m: None)
    after = _rows(out)["7"]
    assert 0.0 <= after["recall_acc"] <= 1.0 and after["recall"]["settings"]["train_steps"] == 2
    assert after["finished_at"] == before["finished_at"]
    assert run.table.loc[0, "Recall acc"] == pytest.approx(100 * after["recall_acc"])


def test_a_failed_recall_keeps_the_trained_row_and_is_retried_alone(tmp_path, hymba_cache, monkeypatch):
    out = tmp_path / "abl"
    real = runner_mod.recall_row
    run_ablation("micro", "7", out, recall=True, echo=lambda m: None)
    measured = _rows(out)["7"]
    assert measured["recall_acc"] is not None

    def diverges(settings, row, device, lr, seed, checkpoint=None):
        raise RuntimeError("recall crashed")

    monkeypatch.setattr(runner_mod, "recall_row", diverges)
    msgs = []
    run = run_ablation("micro", "7,6", out, recall=True, overrides=["recall.lrs=[2e-3]"], echo=msgs.append)
    rows = _rows(out)
    # row 7 (trained earlier): the 3e-3 value is not shown as the 2e-3 one (its run stays in the record, outside
    # the 2e-3 sweep, unscored); row 6 (trained now) stays done
    assert rows["7"]["recall_acc"] is None and rows["7"]["recall"]["settings"]["lrs"] == [2e-3]
    assert [r["lr"] for r in rows["7"]["recall"]["runs"]] == [3e-3] and rows["7"]["recall"]["missing"] == [[2e-3, 0]]
    assert rows["7"]["recall_error"].startswith("RuntimeError: recall crashed")
    assert rows["7"]["val_ppl"] == measured["val_ppl"] and rows["7"]["finished_at"] == measured["finished_at"]
    assert rows["6"]["status"] == "done" and rows["6"]["recall_acc"] is None and rows["6"]["val_ppl"] > 0
    assert not run.failed and any("row 6" in m and "failed: RuntimeError: recall crashed" in m for m in msgs)
    monkeypatch.setattr(runner_mod, "recall_row", real)
    trained = rows["6"]["finished_at"]
    run = run_ablation("micro", "7,6", out, recall=True, overrides=["recall.lrs=[2e-3]"], echo=lambda m: None)
    rows = _rows(out)  # the rerun measures recall only: no row is trained again
    assert run.ran == [7, 6] and rows["6"]["finished_at"] == trained and "recall_error" not in rows["7"]
    assert rows["7"]["recall"]["settings"]["lrs"] == [2e-3] and rows["6"]["recall_acc"] is not None


def test_an_interrupt_during_inline_recall_keeps_the_trained_row(tmp_path, hymba_cache, monkeypatch):
    # recall is measured after the trained row is saved: Ctrl-C there must not cost the training
    out = tmp_path / "abl"
    real = runner_mod.recall_row

    def interrupted(settings, row, device, lr, seed, checkpoint=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_mod, "recall_row", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_ablation("micro", "7", out, recall=True, echo=lambda m: None)
    saved = _rows(out)["7"]
    assert saved["status"] == "done" and saved["val_ppl"] > 0 and saved["recall_acc"] is None
    monkeypatch.setattr(runner_mod, "recall_row", real)
    msgs = []
    run_ablation("micro", "7", out, recall=True, echo=msgs.append)
    again = _rows(out)["7"]
    assert again["finished_at"] == saved["finished_at"] and again["recall_acc"] is not None
    assert any("trained earlier; measuring recall" in m for m in msgs), msgs


def test_recall_under_other_settings_leaves_the_table_when_recall_runs_again(tmp_path, hymba_cache):
    # rows outside --rows keep their record but not a Recall cell measured under other [recall] settings (here
    # another step cap; other learning rates only widen or narrow the sweep: tests/ablation/test_recall_sweep.py)
    out = tmp_path / "abl"
    run_ablation("micro", "7,6", out, recall=True, echo=lambda m: None)
    msgs = []
    run = run_ablation("micro", "7", out, recall=True, overrides=["recall.train_steps=3"], echo=msgs.append)
    rows = _rows(out)
    assert rows["6"]["recall_acc"] is None and rows["6"]["recall"]["settings"]["train_steps"] == 2
    assert rows["7"]["recall_acc"] is not None and rows["7"]["recall"]["settings"]["train_steps"] == 3
    assert any("recall of rows 6,7 was measured under other [recall] settings" in m for m in msgs), msgs
    assert run.table.set_index("ID").loc[6, "Recall acc"] != run.table.set_index("ID").loc[6, "Recall acc"]  # NaN
    run_ablation("micro", "7", out, recall=False, echo=lambda m: None)  # the preset's cap again, recall off
    assert _rows(out)["7"]["recall_acc"] is None and _rows(out)["7"]["recall"]["settings"]["train_steps"] == 3


def test_recall_workers_measure_trained_rows_in_parallel_processes(tmp_path, hymba_cache):
    out = tmp_path / "abl"
    run_ablation("micro", "6,7", out, recall=False, echo=lambda m: None)
    run = run_ablation("micro", "7,6", out, recall=True, recall_workers=2, echo=lambda m: None)
    assert sorted(run.ran) == [6, 7] and not run.skipped and not run.failed
    rows = _rows(out)
    settings = runner_mod.AblationSettings.load("micro")
    for row in (6, 7):  # each record holds its own row's recall, the same as measured in this process
        expected = runner_mod.recall_row(settings, row, runner_mod.torch.device("cpu"), 3e-3, 0)
        (got,) = rows[str(row)]["recall"]["runs"]
        assert got["final_loss"] == pytest.approx(expected["final_loss"], rel=1e-4)
        assert rows[str(row)]["recall_acc"] == pytest.approx(expected["accuracy"], abs=0.02)
    assert rows["6"]["recall"]["runs"][0]["final_loss"] != rows["7"]["recall"]["runs"][0]["final_loss"]
    again = run_ablation("micro", "6,7", out, recall=True, recall_workers=2, echo=lambda m: None)
    assert again.skipped == [6, 7] and not again.ran  # recall is current: nothing measured twice


def test_an_interrupt_during_the_recall_pass_says_what_is_saved(tmp_path, hymba_cache):
    msgs = []

    def echo(m):
        msgs.append(m)
        if m.startswith("recall of rows"):  # Ctrl-C as the parallel recall pass starts
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_ablation("micro", "6,7", tmp_path / "abl", recall=True, recall_workers=2, echo=echo)
    assert msgs[-1].startswith("interrupted: 2 of 2 rows saved, 0 with recall in ")
    assert all(r["status"] == "done" and r["recall_acc"] is None for r in _rows(tmp_path / "abl").values())


def test_recall_workers_must_be_positive(tmp_path, capsys):
    assert main(["ablate", *MICRO, "--rows", "1", "--out", str(tmp_path / "abl"), "--recall-workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "--recall-workers 0 is invalid" in err and "Traceback" not in err


def test_corrupt_results_file_is_an_error_and_left_alone(tmp_path, capsys):
    out = tmp_path / "abl"
    out.mkdir()
    garbage = '{"format": 1, "rows": {"1": {"id": 1, "stat'
    (out / "results.json").write_text(garbage)
    with pytest.raises(ResultsError, match="results.json is corrupt"):
        run_ablation("micro", "1", out, echo=lambda m: None)
    assert main(["ablate", *MICRO, "--rows", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "corrupt" in err and "--force" in err and err.count("\n") == 1
    assert main(["report", str(out)]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert (out / "results.json").read_text() == garbage
    assert sorted(p.name for p in out.iterdir()) == [".lock", "results.json"]


def test_results_of_other_settings_are_not_mixed(tmp_path, hymba_cache, capsys):
    out = tmp_path / "abl"
    run_ablation("micro", "1", out, echo=lambda m: None)
    saved = (out / "results.json").read_text()
    with pytest.raises(ResultsError, match=r"different settings \(train.max_steps: 3 -> 2\)"):
        run_ablation("micro", "1", out, ["train.max_steps=2"], echo=lambda m: None)
    assert (out / "results.json").read_text() == saved
    notes = []
    run_ablation("micro", "1", out, ["train.max_steps=2"], force=True, echo=notes.append)
    assert any("set aside as" in n for n in notes)
    assert [p.read_text() for p in out.glob("results.json.*.bak")] == [saved]
    assert _rows(out)["1"]["steps"] == 2


def test_results_from_before_a_new_setting_existed_stay_usable(tmp_path, hymba_cache):
    """A setting added in a newer version (absent from an older results file) is no change at its default,
    and one at another value is."""
    out = tmp_path / "abl"
    run_ablation("micro", "1", out, echo=lambda m: None)
    data = json.loads((out / "results.json").read_text())
    del data["settings"]["train"]["init"]  # as written before train.init existed
    (out / "results.json").write_text(json.dumps(data))
    notes = []
    run_ablation("micro", "1", out, echo=notes.append)
    assert any("skipped" in n for n in notes) and _rows(out)["1"]["steps"] == 3
    del data["settings"]["train"]["max_steps"]  # a missing setting whose new value is not the default
    (out / "results.json").write_text(json.dumps(data))
    with pytest.raises(ResultsError, match=r"different settings \(train.max_steps: None -> 2\)"):
        run_ablation("micro", "1", out, ["train.max_steps=2"], echo=lambda m: None)


def test_corrupt_results_with_force_are_set_aside(tmp_path, hymba_cache):
    out = tmp_path / "abl"
    out.mkdir()
    (out / "results.json").write_text("not json")
    notes = []
    run_ablation("micro", "1", out, force=True, echo=notes.append)
    assert any("corrupt" in n and "set aside as" in n for n in notes)
    assert [p.read_text() for p in out.glob("results.json.*.bak")] == ["not json"]
    assert _rows(out)["1"]["status"] == "done"


def test_ctrl_c_keeps_finished_rows(tmp_path, cli_env):
    out = tmp_path / "abl"
    # five rows after the first: the interrupt always lands while one of them runs (never a skipped test)
    proc = subprocess.Popen(
        _ablate(out, "1,2,3,4,5,13", cli_env), env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "results.json").is_file() and len(_rows(out)) >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert len(_rows(out)) < 6
    assert "rerun the same command to continue" in err and "Traceback" not in err
    assert _rows(out)["1"]["status"] == "done"


def test_auto_recall_workers_run_inline_on_cpu_and_fit_the_gpu():
    from hymba.ablation.runner import auto_recall_workers

    assert auto_recall_workers(torch.device("cpu")) == 1
    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        assert 1 <= auto_recall_workers(torch.device("cuda")) <= max(1, min(6, free // (8 << 30)))
