"""The paper's table as data, ratio formatting, Spearman against an independent formula, the report files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from hymba.ablation.paper import PAPER_ROWS, paper_table
from hymba.ablation.report import COLUMNS, build_table, correlations, spearman, to_markdown, write_report
from hymba.ablation.runner import format_ratio
from hymba.ablation.store import FORMAT, ResultsStore
from hymba.presets import ROW_NAMES


def test_paper_table_matches_roadmap_rows():
    t = paper_table()
    assert list(t.index) == list(range(1, 14))  # the paper's 13 rows; roadmap.toml may hold more
    assert {i: t.loc[i, "configuration"] for i in t.index} == {i: ROW_NAMES[i] for i in t.index}
    assert t.loc[13, "attn_mamba"] == "1:5.23" and t.loc[13, "throughput"] == 2695.8
    assert t.loc[6, "cache_mb"] == 414.72 and t.loc[1, "recall"] == 19.23
    assert len(PAPER_ROWS) == 13


@pytest.mark.parametrize(
    "attn,ssm,expected", [(0, 10, "0:1"), (10, 0, "1:0"), (100, 523, "1:5.23"), (200, 100, "1:0.50")]
)
def test_format_ratio(attn, ssm, expected):
    assert format_ratio(attn, ssm) == expected


def _spearman_no_ties(a, b):
    """Textbook formula 1 - 6 sum d^2 / (n (n^2 - 1)), valid without ties: an independent reference."""
    n = len(a)
    ra = {v: i for i, v in enumerate(sorted(a))}
    rb = {v: i for i, v in enumerate(sorted(b))}
    d2 = sum((ra[x] - rb[y]) ** 2 for x, y in zip(a, b))
    return 1 - 6 * d2 / (n * (n * n - 1))


def test_spearman_matches_textbook_formula():
    a = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.3]
    b = [2.7, 1.8, 2.8, 1.2, 8.0, 3.1, 0.4]
    assert spearman(pd.Series(a), pd.Series(b)) == pytest.approx(_spearman_no_ties(a, b))
    assert spearman(pd.Series(a), pd.Series(a)) == pytest.approx(1.0)
    assert spearman(pd.Series(a), -pd.Series(a)) == pytest.approx(-1.0)


def test_spearman_ties_missing_and_degenerate():
    # ties take average ranks: x ranks (1.5, 1.5, 3, 4), y ranks (1, 2, 3, 4) -> Pearson of the ranks
    r = spearman(pd.Series([1, 1, 2, 3]), pd.Series([10, 20, 30, 40]))
    assert r == pytest.approx(0.9486832980505138)
    assert math.isnan(spearman(pd.Series([1.0, 2.0]), pd.Series([1.0, 2.0])))  # fewer than 3 pairs
    assert math.isnan(spearman(pd.Series([1.0, 1.0, 1.0]), pd.Series([1.0, 2.0, 3.0])))  # constant side
    assert spearman(pd.Series([1.0, math.nan, 2.0, 3.0]), pd.Series([1.0, 5.0, 2.0, 3.0])) == pytest.approx(1.0)


def _record(row, **kw):
    rec = {
        "id": row,
        "name": ROW_NAMES[row],
        "status": "done",
        "error": None,
        "params": 1_500_000,
        "attn_mamba": "1:2.00",
        "val_ppl": 20.0 + row,
        "val_acc": 0.25,
        "recall_acc": None,
        "train_tokens_per_s": 1000.0,
        "gen_tokens_per_s": 100.0 * row,
        "kv_mb": 1.0 * row,
        "ssm_mb": 0.5,
        "steps": 3,
    }
    rec.update(kw)
    return rec


def _results_dir(tmp_path, records):
    store = ResultsStore(
        tmp_path,
        {
            "preset": "micro",
            "model": {},
            "data": {"source": "builtin", "char_budget": 0, "vocab_size": 300},
            "train": {"max_steps": 3, "batch_size": 4, "seq_len": 64, "seed": 0},
            "bench": {},
        },
    )
    store.open()
    for r in records:
        store.put(r)
    store.close()
    return tmp_path


def test_table_columns_units_and_failed_rows(tmp_path):
    d = _results_dir(
        tmp_path,
        [
            _record(1, recall_acc=0.5),
            _record(4),
            {"id": 7, "name": ROW_NAMES[7], "status": "failed", "error": "RuntimeError: boom"},
        ],
    )
    df = build_table(json.loads((d / "results.json").read_text()))
    assert list(df.columns[: len(COLUMNS)]) == COLUMNS
    assert {"Paper Commonsense", "Paper Recall", "Paper Throughput", "Paper Cache MB"} <= set(df.columns)
    assert list(df["ID"]) == [1, 4, 7]
    assert df.loc[0, "Params (M)"] == pytest.approx(1.5)
    assert df.loc[0, "Token acc"] == pytest.approx(25.0) and df.loc[0, "Recall acc"] == pytest.approx(50.0)
    assert math.isnan(df.loc[1, "Recall acc"])
    assert df.loc[2, "Status"] == "failed: RuntimeError: boom" and math.isnan(df.loc[2, "Val PPL"])
    assert df.loc[1, "Paper Throughput"] == 656.6
    md = to_markdown(df)
    assert md.count("\n") == 2 + 3 and "| 1:2.00 |" in md


def test_correlations_against_paper_columns(tmp_path):
    # throughput proportional to the paper's -> rho = +1; cache reversed -> rho = -1
    paper = paper_table()
    recs = [
        _record(
            i,
            gen_tokens_per_s=paper.loc[i, "throughput"] / 10,
            kv_mb=1000 - paper.loc[i, "cache_mb"],
            ssm_mb=0.0,
            recall_acc=paper.loc[i, "recall"] / 100,
        )
        for i in paper.index
    ]
    df = build_table(json.loads((_results_dir(tmp_path, recs) / "results.json").read_text()))
    corr = correlations(df).set_index("metric")
    assert corr.loc["throughput", "spearman"] == pytest.approx(1.0)
    assert corr.loc["cache", "spearman"] == pytest.approx(-1.0)
    assert corr.loc["recall", "spearman"] == pytest.approx(1.0)
    assert (corr["rows"] == len(paper)).all()


def test_write_report_files_and_plots(tmp_path):
    d = _results_dir(tmp_path, [_record(i) for i in (1, 2, 13)])
    df, files = write_report(d)
    assert set(files) == {"csv", "md", "json", "efficiency", "quality"}
    for p in files.values():
        assert p.is_file() and p.stat().st_size > 0
    assert files["efficiency"].read_bytes()[:4] == b"\x89PNG"
    table = json.loads(files["json"].read_text())
    assert table["columns"][: len(COLUMNS)] == COLUMNS and len(table["rows"]) == 3
    assert {c["metric"] for c in table["spearman"]} == {"throughput", "cache", "recall"}
    assert pd.read_csv(files["csv"])["ID"].tolist() == [1, 2, 13]
    assert FORMAT == 1


def test_hymba_eval_on_an_ablation_scores_every_row_and_adds_a_commonsense_column(
    tmp_path, hymba_cache, monkeypatch, capsys
):
    # the real harness on the local toy task, through each trained row's checkpoint, then the report
    pytest.importorskip("lm_eval")
    from hymba.ablation.runner import run_ablation
    from hymba.cli import main

    data = Path(__file__).resolve().parents[1] / "eval" / "data"
    out = tmp_path / "abl"
    run_ablation("micro", "7,1", out, recall=False, echo=lambda m: None)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.chdir(data)  # the task's data_files are relative
    args = ["eval", str(out), "--tasks", "hymba_toy_mc", "--include-path", str(data), "--batch-size", "4"]
    assert main(args) == 0
    summaries = {row: json.loads((out / "rows" / str(row) / "train" / "lm_eval.json").read_text()) for row in (1, 7)}
    table = json.loads((out / "table.json").read_text())
    assert table["columns"].index("Commonsense") == table["columns"].index("Recall acc") + 1
    got = {r["ID"]: r["Commonsense"] for r in table["rows"]}
    assert got == {row: pytest.approx(100 * s["mean_acc"]) for row, s in summaries.items()}
    assert all(s["tasks"]["hymba_toy_mc"]["n"] == 12 for s in summaries.values())
    md = (out / "table.md").read_text()
    assert "Commonsense = mean lm-eval accuracy over hymba_toy_mc" in md and "commonsense" in md
    capsys.readouterr()
    assert main(args) == 0  # a rerun scores nothing again
    assert capsys.readouterr().out.count("evaluated earlier") == 2
    assert main(args + ["--max-length", "32"]) == 0  # other settings: scored again, and recorded
    assert "evaluated earlier" not in capsys.readouterr().out
    assert json.loads((out / "rows" / "7" / "train" / "lm_eval.json").read_text())["max_length"] == 32
    assert main(args + ["--output", str(tmp_path / "x.json")]) == 2
    (out / "rows" / "1" / "train" / "lm_eval.json").write_text("{")  # a damaged earlier result: one clear error
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hymba eval: error:") and "rows/1/train/lm_eval.json is not valid JSON" in err
    assert "\n" not in err and (out / "rows" / "1" / "train" / "lm_eval.json").read_text() == "{"


def test_commonsense_column_only_when_rows_were_evaluated():
    results = {"rows": {"1": {"id": 1, "status": "done", "val_ppl": 3.0}, "6": {"id": 6, "status": "done"}}}
    assert "Commonsense" not in build_table(results).columns
    df = build_table(results, {1: {"mean_acc": 0.25, "tasks": {"piqa": {}}}})
    assert df.set_index("ID").loc[1, "Commonsense"] == 25.0 and math.isnan(df.set_index("ID").loc[6, "Commonsense"])
    assert "commonsense" in set(correlations(df)["metric"]) and "commonsense" not in set(
        correlations(build_table(results))["metric"]
    )


def test_metric_table_drives_the_csv_and_the_report_columns():
    import dataclasses

    from hymba.ablation.metrics import REPORT_METRICS, ROW_METRICS
    from hymba.ablation.store import CSV_FIELDS
    from hymba.train.trainer import TrainResult

    train_fields = {f.name for f in dataclasses.fields(TrainResult)}
    assert {m.key for m in ROW_METRICS if m.source == "train"} <= train_fields  # read off the training result
    assert [k for k in CSV_FIELDS if k in {m.key for m in ROW_METRICS}] == [m.key for m in ROW_METRICS if m.csv]
    assert COLUMNS[2:-1] == [m.header for m in REPORT_METRICS] and len(set(COLUMNS)) == len(COLUMNS)
