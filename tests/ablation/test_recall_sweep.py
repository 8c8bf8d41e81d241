"""The recall protocol (Zoology's): a learning-rate sweep per row, scored at the best learning rate, curves kept,
resumable per (row, lr, seed) run; ``--recall-only`` measures it without training the language-model rows."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hymba.ablation import runner as runner_mod
from hymba.ablation.runner import run_ablation
from hymba.eval.mqar import MQARSettings, score_sweep, sweep_jobs
from hymba.train.step import TrainingDiverged

LRS = "recall.lrs=[1e-3, 3e-3, 1e-2]"
# a deterministic stand-in for one MQAR run: accuracy peaks at 3e-3 (row 6) or 1e-3 (other rows); 1e-2 diverges
PEAK = {6: 3e-3}


def fake_run(settings, row, device, lr, seed, checkpoint=None):
    if lr == 1e-2:
        raise TrainingDiverged(f"MQAR training diverged at step 3 of 2 (lr={lr:g} of recall.lrs)")
    acc = 0.9 if lr == PEAK.get(row, 1e-3) else 0.2 + row / 100
    curve = [{"step": 1, "loss": 3.0, "accuracy": acc / 2}, {"step": 2, "loss": 1.0, "accuracy": acc}]
    return {"lr": lr, "seed": seed, "accuracy": acc, "final_loss": 1.0, "seconds": 0.1, "steps": 2, "curve": curve}


def _rows(out):
    return json.loads((out / "results.json").read_text())["rows"]


def test_score_sweep_takes_the_best_learning_rate_mean_over_seeds():
    s = MQARSettings(lrs=[1e-3, 3e-3], seeds=2)
    assert sweep_jobs(s, 5) == [(1e-3, 5), (1e-3, 6), (3e-3, 5), (3e-3, 6)]
    runs = [
        {"lr": 1e-3, "seed": 5, "accuracy": 0.6},
        {"lr": 1e-3, "seed": 6, "accuracy": 0.2},  # mean 0.4
        {"lr": 3e-3, "seed": 5, "accuracy": 0.5},
    ]
    partial = score_sweep(s, runs, 5)
    assert partial["accuracy"] is None and partial["missing"] == [[3e-3, 6]]
    full = score_sweep(s, [*runs, {"lr": 3e-3, "seed": 6, "accuracy": 0.45}], 5)
    assert full["accuracy"] == pytest.approx(0.475) and full["best_lr"] == 3e-3
    assert [b["accuracy"] for b in full["by_lr"]] == pytest.approx([0.4, 0.475])
    diverged = [{"lr": lr, "seed": sd, "accuracy": None, "error": "TrainingDiverged: x"} for lr, sd in sweep_jobs(s, 5)]
    out = score_sweep(s, diverged, 5)
    assert out["accuracy"] is None and "every learning rate of recall.lrs failed" in out["error"]


def test_recall_only_sweeps_every_lr_scores_the_best_and_resumes_per_run(tmp_path, hymba_cache, monkeypatch):
    out = tmp_path / "abl"
    monkeypatch.setattr(runner_mod, "recall_row", fake_run)
    calls = []

    def counted(*a):
        calls.append(a[1:])
        if len(calls) == 5:  # the 5th run (row 6's second lr): a kill mid-sweep
            raise KeyboardInterrupt
        return fake_run(*a)

    monkeypatch.setattr(runner_mod, "recall_row", counted)
    with pytest.raises(KeyboardInterrupt):
        run_ablation("micro", "7,6", out, overrides=[LRS], recall_only=True, report=False, echo=lambda m: None)
    rows = _rows(out)
    assert rows["7"]["status"] == "untrained" and rows["7"]["recall_acc"] == pytest.approx(0.9)
    assert [r["lr"] for r in rows["6"]["recall"]["runs"]] == [1e-3] and rows["6"]["recall_acc"] is None
    assert "val_ppl" not in rows["7"] and not (out / "rows").exists()  # no language-model training

    calls.clear()
    run = run_ablation("micro", "7,6", out, overrides=[LRS], recall_only=True, echo=lambda m: None)
    assert [(c[0], c[2]) for c in calls] == [(6, 3e-3), (6, 1e-2)]  # only the missing runs
    assert run.skipped == [7] and run.ran == [6]
    rows = _rows(out)
    r6 = rows["6"]["recall"]
    assert rows["6"]["recall_acc"] == pytest.approx(0.9) and rows["6"]["recall_best_lr"] == 3e-3
    assert r6["by_lr"][2]["failed"] == 1 and r6["runs"][2]["error"].startswith("TrainingDiverged")
    assert r6["features"]["span"] == "all global" and r6["probe"]["vocab_size"] == 32
    # the report: the Recall cell of untrained rows, the sweep table and the curves file
    t = run.table.set_index("ID")
    assert t.loc[6, "Recall acc"] == pytest.approx(90.0) and t.loc[7, "Status"] == "recall only (not trained)"
    curves = json.loads((out / "recall_curves.json").read_text())
    assert curves["rows"]["6"]["runs"][1]["curve"][-1] == {"step": 2, "loss": 1.0, "accuracy": 0.9}
    assert "synthetic proxy for the paper's Recall" in curves["about"]
    md = (out / "table.md").read_text()
    assert "| 6 | 26.0 (2) | 90.0 (2) | diverged | 0.003 | 90.0 |" in md and "synthetic proxy" in md

    # a diverged run is a result: a third run trains nothing; a later full run trains and keeps the recall
    calls.clear()
    run_ablation("micro", "7,6", out, overrides=[LRS], recall_only=True, report=False, echo=lambda m: None)
    assert calls == []
    run_ablation("micro", "7", out, overrides=[LRS], recall=False, report=False, echo=lambda m: None)
    trained = _rows(out)["7"]
    assert trained["status"] == "done" and trained["val_ppl"] > 0 and trained["recall_acc"] == pytest.approx(0.9)


def test_a_real_tiny_sweep_records_curves(tmp_path, hymba_cache):
    # micro recall, two learning rates, a target no 5-step model reaches (the early stop itself:
    # tests/eval/test_mqar_recall.py): a curve point every 2 steps, the full cap
    out = tmp_path / "abl"
    over = ["recall.lrs=[1e-3, 3e-3]", "recall.target=1.0", "recall.train_steps=5", "recall.eval_every=2"]
    run_ablation("micro", "1", out, overrides=over, recall_only=True, report=False, echo=lambda m: None)
    (rec,) = _rows(out).values()
    runs = rec["recall"]["runs"]
    assert [r["lr"] for r in runs] == [1e-3, 3e-3]
    for r in runs:
        assert r["steps"] == 5 and not r["stopped_early"] and [p["step"] for p in r["curve"]] == [2, 4]
        assert all(0 <= p["accuracy"] <= 1 and p["loss"] > 0 for p in r["curve"])
    assert rec["recall_acc"] == max(r["accuracy"] for r in runs)


def test_recall_only_cli_conflicts_with_no_recall(tmp_path, cli_env):
    cmd = [sys.executable, "-m", "hymba.cli", "ablate", "--preset", "micro", "--out", str(tmp_path / "a")]
    p = subprocess.run([*cmd, "--recall-only", "--no-recall"], env=cli_env, capture_output=True, text=True)
    assert p.returncode == 2 and "--recall-only and --no-recall contradict" in p.stderr
    assert "Traceback" not in p.stderr
    p = subprocess.run([*cmd, "--recall-only", "--set", "recall.lrs=[0]"], env=cli_env, capture_output=True, text=True)
    assert p.returncode == 2 and "recall.lrs=[0] is invalid" in p.stderr and "Traceback" not in p.stderr


def test_a_wider_or_narrower_sweep_reuses_the_runs_and_other_run_settings_do_not(tmp_path, hymba_cache, monkeypatch):
    out = tmp_path / "abl"
    calls = []

    def counted(*a):
        calls.append((a[1], a[3]))
        return fake_run(*a)

    monkeypatch.setattr(runner_mod, "recall_row", counted)

    def ablate(lrs, *more):
        calls.clear()
        run_ablation("micro", "7", out, overrides=[f"recall.lrs={lrs}", *more], recall_only=True, echo=lambda m: None)
        return _rows(out)["7"]

    assert ablate("[3e-3]")["recall_acc"] == pytest.approx(0.27) and calls == [(7, 3e-3)]
    wider = ablate("[1e-3, 3e-3]")  # only the new learning rate runs; the row is scored over both
    assert calls == [(7, 1e-3)]
    assert wider["recall_acc"] == pytest.approx(0.9) and wider["recall_best_lr"] == 1e-3
    assert wider["recall"]["settings"]["lrs"] == [1e-3, 3e-3] and [r["lr"] for r in wider["recall"]["runs"]] == [
        1e-3,
        3e-3,
    ]
    narrower = ablate("[3e-3]")  # nothing runs; the dropped rate's run stays in the record, unscored
    assert calls == [] and narrower["recall_acc"] == pytest.approx(0.27) and narrower["recall_best_lr"] == 3e-3
    assert [b["lr"] for b in narrower["recall"]["by_lr"]] == [3e-3] and len(narrower["recall"]["runs"]) == 2
    md = (out / "table.md").read_text()
    assert "| 7 | 27.0 (2) | 0.003 | 27.0 |" in md and "lr 0.001" not in md
    longer = ablate("[3e-3]", "recall.train_steps=7")  # another cap: other runs, measured again
    assert calls == [(7, 3e-3)] and longer["recall"]["settings"]["train_steps"] == 7
    assert longer["recall_previous"]["settings"]["train_steps"] != 7


def test_a_recall_run_killed_mid_run_resumes_from_its_saved_state(tmp_path, hymba_cache, monkeypatch):
    # a run of 5 steps with a curve point every 2: killed at its second check, it resumes from step 2 and
    # ends as the uninterrupted run; its saved state is removed once its result is in results.json
    from hymba.eval import mqar

    over = ["recall.lrs=[3e-3]", "recall.target=1.0", "recall.train_steps=5", "recall.eval_every=2"]
    run_ablation("micro", "1", tmp_path / "ref", overrides=over, recall_only=True, report=False, echo=lambda m: None)
    real, checks = mqar._accuracy, []

    def killed_at_second_check(*a, **kw):
        checks.append(1)
        if len(checks) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    out = tmp_path / "abl"
    monkeypatch.setattr(mqar, "_accuracy", killed_at_second_check)
    with pytest.raises(KeyboardInterrupt):
        run_ablation("micro", "1", out, overrides=over, recall_only=True, report=False, echo=lambda m: None)
    partial = out / "recall_partial" / "row1-lr0.003-seed0.pt"
    assert partial.is_file() and _rows(out)["1"]["recall_acc"] is None
    monkeypatch.setattr(mqar, "_accuracy", real)
    msgs = []
    run_ablation("micro", "1", out, overrides=over, recall_only=True, report=False, echo=msgs.append)
    (got,), (want,) = _rows(out)["1"]["recall"]["runs"], _rows(tmp_path / "ref")["1"]["recall"]["runs"]
    assert [r["step"] for r in got.pop("resumed")] == [2] and any("resumed at step 2" in m for m in msgs), msgs
    for r in (got, want):
        r.pop("seconds")
    assert got == want and not partial.exists()
