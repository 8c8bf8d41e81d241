"""The ablation table beside the paper's, rank correlations, plots; all derived from ``results.json`` alone.

``write_report(DIR)`` (also ``hymba report DIR``) writes ``table.csv``, ``table.md``, ``table.json``,
``efficiency.png`` (generation throughput vs cache, log axes, like the paper's efficiency figure) and
``quality.png`` (perplexity and recall per row). The same results give byte-identical tables. Where
``hymba eval DIR --tasks ...`` has scored the rows' checkpoints (``rows/<id>/train/lm_eval.json``), a
Commonsense column (mean lm-eval accuracy) joins the table beside the paper's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hymba.ablation.metrics import REPORT_METRICS
from hymba.ablation.paper import PAPER_COLUMNS, paper_table
from hymba.ablation.store import UNTRAINED, read_results
from hymba.eval.harness import read_summary
from hymba.io import atomic_write
from hymba.presets import ROW_NAMES
from hymba.rundir import RunDir

# our columns: the row, its metrics (hymba.ablation.metrics), its status
COLUMNS = ["ID", "Configuration", *(m.header for m in REPORT_METRICS), "Status"]
# (our column, paper column, what is compared): Spearman rank correlation over the rows both have
CORRELATED = [
    ("Gen tok/s", "Paper Throughput", "throughput"),
    ("Cache MB (KV+SSM)", "Paper Cache MB", "cache"),
    ("Recall acc", "Paper Recall", "recall"),
    ("Commonsense", "Paper Commonsense", "commonsense"),
]  # when the table has the column
DECIMALS = {
    **{m.header: m.decimals for m in REPORT_METRICS if m.decimals is not None},
    "Commonsense": 1,
    "Paper Commonsense": 2,
    "Paper Recall": 2,
    "Paper Throughput": 1,
    "Paper Cache MB": 2,
}


def _get(rec: dict[str, Any], key: str, scale: float = 1.0) -> float:
    v = rec.get(key)
    return float(v) * scale if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def commonsense_results(out_dir: str | Path, results: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The ``lm_eval.json`` summaries (``hymba eval``) of the finished rows that have one, by row."""
    found = {}
    for key, rec in results["rows"].items():
        path = RunDir(out_dir).row_run(int(key)).lm_eval
        if rec.get("status") == "done" and path.is_file():
            summary = read_summary(path)
            if summary.get("mean_acc") is not None:
                found[int(key)] = summary
    return found


def build_table(results: dict[str, Any], commonsense: dict[int, dict[str, Any]] | None = None) -> pd.DataFrame:
    """One line per recorded row: our columns (``COLUMNS``, each metric's ``RowMetric.cell``, plus ``Commonsense``
    after ``Recall acc`` when ``commonsense`` has lm-eval summaries), then the paper's values for that row.

    Accuracies are in % like the paper's; MB = 1e6 bytes; failed rows keep their ID and status only.
    """
    paper = paper_table()
    lines = []
    for key in sorted(results["rows"], key=int):
        rec = results["rows"][key]
        row = int(rec["id"])
        done, untrained = rec["status"] == "done", rec["status"] == UNTRAINED
        status = (
            "done"
            if done
            else "recall only (not trained)"
            if untrained
            else f"failed: {rec.get('error') or 'unknown error'}"
        )
        line = {
            "ID": row,
            "Configuration": ROW_NAMES.get(row, rec.get("name", "")),
            **{m.header: m.cell(rec, done or (untrained and m.source == "recall")) for m in REPORT_METRICS},
            "Status": status,
        }
        if commonsense:
            line["Commonsense"] = _get(commonsense.get(row, {}), "mean_acc", 100.0) if done else math.nan
        for col, fieldname in PAPER_COLUMNS.items():
            line[col] = paper.loc[row, fieldname] if row in paper.index else math.nan
        lines.append(line)
    ours = (
        COLUMNS
        if not commonsense
        else COLUMNS[: COLUMNS.index("Recall acc") + 1] + ["Commonsense"] + COLUMNS[COLUMNS.index("Recall acc") + 1 :]
    )
    df = pd.DataFrame(lines, columns=ours + list(PAPER_COLUMNS))
    for m in REPORT_METRICS:
        if m.kind == "int":
            df[m.header] = df[m.header].astype("Int64")
    return df


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman rank correlation (average ranks for ties) over the positions where both are finite; NaN when
    fewer than 3 pairs remain or one side is constant."""
    both = pd.DataFrame({"a": pd.to_numeric(a, errors="coerce"), "b": pd.to_numeric(b, errors="coerce")}).dropna()
    if len(both) < 3:
        return math.nan
    ra, rb = both["a"].rank().to_numpy(), both["b"].rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def correlations(df: pd.DataFrame) -> pd.DataFrame:
    """Spearman rho between our column and the paper's for throughput, cache (KV + SSM state) and recall."""
    ours = df.assign(**{"Cache MB (KV+SSM)": df["KV cache MB"] + df["SSM state MB"]})
    out = []
    for col, paper_col, what in CORRELATED:
        if col not in ours:
            continue
        valid = ours[[col, paper_col]].apply(pd.to_numeric, errors="coerce").dropna()
        out.append(
            {
                "metric": what,
                "ours": col,
                "paper": paper_col,
                "rows": len(valid),
                "spearman": spearman(ours[col], ours[paper_col]),
            }
        )
    return pd.DataFrame(out)


# ---- formatting -------------------------------------------------------------------------------------------
def _fmt(col: str, v: Any) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    if col in DECIMALS:
        return f"{float(v):,.{DECIMALS[col]}f}" if DECIMALS[col] == 0 else f"{float(v):.{DECIMALS[col]}f}"
    return str(v)


def formatted(df: pd.DataFrame) -> pd.DataFrame:
    """The table as display strings (fixed decimals, empty for missing values)."""
    return pd.DataFrame({c: [_fmt(c, v) for v in df[c]] for c in df.columns})


def to_markdown(df: pd.DataFrame) -> str:
    f = formatted(df)
    right = [c not in ("Configuration", "Status") for c in f.columns]
    lines = ["| " + " | ".join(f.columns) + " |", "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    for _, row in f.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


def _rho(v: float) -> str:
    return "n/a" if isinstance(v, float) and math.isnan(v) else f"{v:+.2f}"


def describe(results: dict[str, Any]) -> str:
    s = results["settings"]
    t, m = s["train"], s["model"]
    env = results.get("meta", {})
    bench = s.get("bench", {})
    return (
        f"Preset `{s['preset']}` (base model {', '.join(f'{k}={v}' for k, v in m.items())}); "
        f"data `{s['data']['source']}` (char budget {s['data']['char_budget'] or 'all'}, vocabulary "
        f"{s['data']['vocab_size']} requested); {t['max_steps']} steps of {t['batch_size']}x{t['seq_len']} tokens, "
        f"seed {t['seed']}; generation: batch {bench.get('batch')}, prompt {bench.get('prompt_len')}, "
        f"{bench.get('new_tokens')} new tokens; device {env.get('device', '?')}"
        f"{' (' + env['gpu'] + ')' if env.get('gpu') else ''}, torch {env.get('torch', '?')}."
    )


def commonsense_note(commonsense: dict[int, dict[str, Any]] | None) -> str:
    """Which lm-eval tasks the Commonsense column averages, and whether the rows used the same ones."""
    if not commonsense:
        return ""
    sets = {}
    for row, summary in sorted(commonsense.items()):
        key = (tuple(sorted(summary.get("tasks", {}))), summary.get("num_fewshot"), summary.get("limit"))
        sets.setdefault(key, []).append(row)
    (tasks, shots, limit), _ = next(iter(sets.items()))
    how = "each task's default shots" if shots is None else f"{shots}-shot"
    if limit is not None:
        how += f", limit {limit}"
    note = f" Commonsense = mean lm-eval accuracy over {', '.join(tasks)} ({how}; `hymba eval`)."
    if len(sets) > 1:
        note += (
            " The rows used different task settings: "
            + "; ".join(f"rows {','.join(map(str, rows))}: {', '.join(t)}" for (t, _, _), rows in sets.items())
            + "."
        )
    return note


# ---- the recall protocol --------------------------------------------------------------------------------
RECALL_ABOUT = (
    "Recall acc = MQAR (multi-query associative recall, Zoology) accuracy of each row's layer plan at the "
    "probe's size, trained from scratch on MQAR: a synthetic proxy for the paper's Recall (SWDE, FDA: "
    "extraction from long documents), so compare the ordering of rows, not the values. Protocol (Zoology): "
    "one run per learning rate of the sweep (and per seed), each up to the step cap with an early stop once "
    "the check accuracy reaches the target; a row is scored at its best learning rate (mean over seeds), "
    "since SSMs learn MQAR only in a narrow band of learning rates. The probe keeps the row's layer plan "
    "(global/SWA layers, KV sharing, meta tokens, fusion, GQA, head counts) at its own depth and width, with "
    "a window shorter than the MQAR sequences so that sliding-window layers show their loss."
)


def _sweeps(results: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The recall sweeps (``record["recall"]`` with ``runs``) of the rows that have one, by row."""
    return {
        int(k): rec["recall"]
        for k, rec in results["rows"].items()
        if isinstance(rec.get("recall"), dict) and "runs" in rec["recall"]
    }


def recall_curves(results: dict[str, Any]) -> dict[str, Any]:
    """Every row's recall sweep as learning curves: per run (learning rate, seed) its points
    ``{"step", "loss", "accuracy"}``, final accuracy, steps and early stop; the probe and settings."""
    rows = {}
    for row, sweep in sorted(_sweeps(results).items()):
        rows[str(row)] = {
            "name": ROW_NAMES.get(row, ""),
            "accuracy": sweep.get("accuracy"),
            "best_lr": sweep.get("best_lr"),
            "by_lr": sweep.get("by_lr"),
            "features": sweep.get("features"),
            "probe": sweep.get("probe"),
            "settings": sweep.get("settings"),
            "runs": [
                {k: r.get(k) for k in ("lr", "seed", "accuracy", "steps", "stopped_early", "seconds", "error", "curve")}
                for r in sweep["runs"]
            ],
        }
    return {"about": RECALL_ABOUT, "rows": rows}


def _sweep_cell(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return ""
    ok = [r for r in runs if r.get("error") is None]
    if not ok:
        return "diverged"
    acc = sum(r["accuracy"] for r in ok) / len(ok)
    steps = max(r["steps"] for r in ok)
    return f"{100 * acc:.1f} ({steps}{'*' if all(r.get('stopped_early') for r in ok) else ''})"


def recall_sweep_markdown(results: dict[str, Any]) -> str:
    """Per row and learning rate: accuracy in % (steps trained; * = early stop at the target), the best."""
    sweeps = _sweeps(results)
    if not sweeps:
        return ""
    # the sweeps' learning rates (runs of a rate since dropped from recall.lrs stay in the record, not here)
    lrs = sorted(
        {lr for sw in sweeps.values() for lr in sw.get("settings", {}).get("lrs") or [r["lr"] for r in sw["runs"]]}
    )
    lines = [
        "| ID | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | best lr | Recall acc |",
        "|---:|" + "---:|" * (len(lrs) + 2),
    ]
    for row, sw in sorted(sweeps.items()):
        cells = [_sweep_cell([r for r in sw["runs"] if r["lr"] == lr]) for lr in lrs]
        acc = sw.get("accuracy")
        best = sw.get("best_lr") if acc is not None else None
        lines.append(
            f"| {row} | "
            + " | ".join(cells)
            + f" | {'' if best is None else f'{best:g}'} | {'' if acc is None else f'{100 * acc:.1f}'} |"
        )
    s = next(iter(sweeps.values())).get("settings", {})
    probe = ", ".join(f"{k}={s.get(k)}" for k in ("n_layers", "d_model", "head_dim", "window") if s.get(k))
    return (
        "Recall sweep: accuracy % per learning rate (steps trained; * = stopped at the target accuracy "
        f"{s.get('target')}); probe {probe or 'at the row size'}, vocab {s.get('vocab')}, train {s.get('train')}, "
        f"eval {s.get('eval')}, batch {s.get('batch_size')}, cap {s.get('train_steps')} steps, "
        f"{s.get('seeds')} seed(s), curves every {s.get('eval_every')} steps in {RunDir.RECALL_CURVES}.\n\n"
        + "\n".join(lines)
        + "\n"
    )


def markdown_report(
    df: pd.DataFrame, corr: pd.DataFrame, results: dict[str, Any], commonsense: dict[int, dict[str, Any]] | None = None
) -> str:
    rho = "; ".join(f"{r.metric} {_rho(r.spearman)} ({r.rows} rows)" for r in corr.itertuples())
    no_recall = (
        " Recall was not measured in this run (`hymba ablate --recall`)."
        if pd.to_numeric(df["Recall acc"], errors="coerce").isna().all()
        else " " + RECALL_ABOUT
    )
    sweep = recall_sweep_markdown(results)
    return (
        to_markdown(df) + "\n"
        f"Spearman rank correlation with the paper: {rho}.{no_recall}{commonsense_note(commonsense)}\n\n"
        "Accuracies in %; MB = 1e6 bytes; cache at 8K tokens in FP16; Gen tok/s = generated tokens/s "
        "(decode phase); the paper's columns are its 300M-parameter, 100B-token models on an A100 "
        "(Commonsense and Recall are different tasks from ours: compare orderings, not values). "
        "The cache correlation uses KV cache + SSM state, as the paper's Mamba-only rows count their state.\n\n"
        + (sweep + "\n" if sweep else "")
        + describe(results)
        + "\n"
    )


def table_json(df: pd.DataFrame, corr: pd.DataFrame, results: dict[str, Any]) -> str:
    def clean(v: Any) -> Any:
        if v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return None
        return v.item() if isinstance(v, np.generic) else v

    rows = [{c: clean(v) for c, v in zip(df.columns, r)} for r in df.itertuples(index=False)]
    cors = [{c: clean(v) for c, v in zip(corr.columns, r)} for r in corr.itertuples(index=False)]
    return (
        json.dumps(
            {"columns": list(df.columns), "rows": rows, "spearman": cors, "settings": results["settings"]}, indent=2
        )
        + "\n"
    )


# ---- plots ------------------------------------------------------------------------------------------------
def _positive(v: pd.Series) -> pd.Series:
    v = pd.to_numeric(v, errors="coerce")
    return v.where(v > 0)


def plot_efficiency(df: pd.DataFrame, path: Path) -> None:
    """Generation throughput vs cache size (log axes), ours beside the paper's, points labelled by row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    ours_cache = _positive(df["KV cache MB"] + df["SSM state MB"])
    panels = [
        (axes[0], ours_cache, _positive(df["Gen tok/s"]), "this run", "C0"),
        (axes[1], _positive(df["Paper Cache MB"]), _positive(df["Paper Throughput"]), "paper (A100, 300M)", "C1"),
    ]
    for ax, x, y, title, color in panels:
        ok = x.notna() & y.notna()
        ax.scatter(x[ok], y[ok], color=color, s=36)
        for i, xi, yi in zip(df["ID"][ok], x[ok], y[ok]):
            ax.annotate(str(i), (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=8)
        if ok.any():
            ax.set_xscale("log")
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no finished rows", transform=ax.transAxes, ha="center")
        ax.set_xlabel("cache at 8K tokens, FP16 (MB, KV + SSM state)")
        ax.set_ylabel("generation throughput (tokens/s)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("Throughput vs cache per design-roadmap row")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_quality(df: pd.DataFrame, path: Path) -> None:
    """Validation perplexity per row, and recall per row beside the paper's recall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = np.arange(len(df))
    labels = [str(i) for i in df["ID"]]
    a.bar(x, pd.to_numeric(df["Val PPL"], errors="coerce").fillna(0), color="C0")
    a.set_xticks(x, labels)
    a.set_xlabel("row")
    a.set_ylabel("validation perplexity (lower is better)")
    a.set_title("Perplexity per row")
    ours = pd.to_numeric(df["Recall acc"], errors="coerce")
    w = 0.4
    b.bar(x - w / 2, ours.fillna(0), w, label="this run (MQAR)", color="C0")
    b.bar(
        x + w / 2, pd.to_numeric(df["Paper Recall"], errors="coerce").fillna(0), w, label="paper (SWDE/FDA)", color="C1"
    )
    if ours.isna().all():
        b.text(0.5, 0.92, "recall not measured in this run (--recall)", transform=b.transAxes, ha="center")
    b.set_xticks(x, labels)
    b.set_xlabel("row")
    b.set_ylabel("recall accuracy (%)")
    b.set_title("Recall per row")
    b.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- files ------------------------------------------------------------------------------------------------
def write_report(out_dir: str | Path, plots: bool = True) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Build the table from ``out_dir/results.json`` and write tables and plots. Returns (table, paths)."""
    out = Path(out_dir)
    results = read_results(out)
    commonsense = commonsense_results(out, results)
    df = build_table(results, commonsense)
    corr = correlations(df)
    files = {k: out / v for k, v in RunDir.TABLES.items()}
    atomic_write(files["csv"], df.to_csv(index=False))
    atomic_write(files["md"], markdown_report(df, corr, results, commonsense))
    atomic_write(files["json"], table_json(df, corr, results))
    if _sweeps(results):
        files["recall_curves"] = out / RunDir.RECALL_CURVES
        atomic_write(files["recall_curves"], json.dumps(recall_curves(results), indent=1) + "\n")
    if plots:
        for key, fn in (("efficiency", plot_efficiency), ("quality", plot_quality)):
            files[key] = out / RunDir.PLOTS[key]
            fn(df, files[key])
    return df, files


def print_report(df: pd.DataFrame, files: dict[str, Path], echo=print) -> None:
    """The table (our columns, then the paper's), the correlations and the files written."""
    corr = correlations(df)
    shown = formatted(df)
    shown["Configuration"] = [c if len(c) <= 36 else c[:35] + "…" for c in shown["Configuration"]]
    with pd.option_context("display.max_columns", None, "display.width", 300):
        echo(shown.to_string(index=False))
    echo("Spearman vs paper: " + ", ".join(f"{r.metric} {_rho(r.spearman)} ({r.rows} rows)" for r in corr.itertuples()))
    echo("wrote: " + ", ".join(str(p) for p in files.values()))


__all__ = [
    "COLUMNS",
    "build_table",
    "commonsense_results",
    "correlations",
    "formatted",
    "print_report",
    "recall_curves",
    "recall_sweep_markdown",
    "spearman",
    "to_markdown",
    "write_report",
]
