"""Run the paper's 13-row design roadmap: train, evaluate and measure every row, one row at a time.

Every row trains on the same data, tokenizer, steps and seed; only its model fields differ (``roadmap.toml``).
For each row the runner records validation perplexity and token accuracy, training throughput, generation
throughput (paper protocol, ``hymba.bench.generation_throughput``), the KV cache and SSM state at 8K tokens
in FP16 (``hymba.bench.cache_size``), the parameter count and Attn:Mamba ratio, and, when asked, MQAR recall
(``hymba.eval.mqar``). A row's record is saved the moment it finishes (``hymba.ablation.store``); rerunning
the same command skips finished rows, so a crash, Ctrl-C or kill loses at most the row in flight. With
``gpus`` (``hymba ablate --gpus``) the rows train concurrently, one worker process per GPU
(``hymba.ablation.workers``); this process alone writes the results, and a worker that dies leaves its row
failed while the others finish.

Layout of the output directory (the names: ``hymba.rundir.RunDir``)::

    DIR/results.json, results.csv      one record per row (the source of truth)
    DIR/table.{csv,md,json}, *.png     the report (``hymba.ablation.report``)
    DIR/rows/<id>/train/               the row's training run: resolved config, git revision, logs, metrics,
                                       final weights (optimizer checkpoints are dropped once the row is done)
    DIR/rows/<id>/error.txt            the traceback of a failed row
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hymba.ablation.metrics import train_metrics
from hymba.ablation.settings import CACHE_DTYPE, CACHE_SEQ_LEN, AblationSettings, parse_rows
from hymba.ablation.store import UNTRAINED, ResultsStore
from hymba.ablation.workers import Slot, cpu_slots, gpu_slots, parse_gpus, run_tasks
from hymba.config import RunConfig
from hymba.errors import UsageError
from hymba.presets import ROW_NAMES
from hymba.rundir import RunDir

Echo = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def format_ratio(attn: int, ssm: int) -> str:
    """Attn:Mamba parameter ratio as the paper prints it: ``1:5.23``, ``0:1`` (no attention), ``1:0``."""
    if attn == 0 and ssm == 0:
        return "-"
    if attn == 0:
        return "0:1"
    if ssm == 0:
        return "1:0"
    return f"1:{ssm / attn:.2f}"


def environment(device: torch.device) -> dict[str, Any]:
    from hymba.train.trainer import git_revision

    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "git": git_revision(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def recall_wanted(flag: bool | None, device: torch.device) -> bool:
    """``--recall``/``--no-recall``; by default on for GPU runs, off on CPU (minutes per row)."""
    return device.type == "cuda" if flag is None else flag


# ---- one row ----------------------------------------------------------------------------------------------
def train_row(settings: AblationSettings, row: int, run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Train and evaluate one row into ``run_dir``; returns (trained model, metrics)."""
    from hymba.train import train

    if run_dir.exists():  # a row killed in flight: start it over rather than resume a half-timed run
        shutil.rmtree(run_dir)
    run_cfg = RunConfig(model=settings.row_model(row), data=settings.data, train=settings.train)
    result = train(run_cfg, run_dir)
    # a finished row is never resumed: keep its weights (model.safetensors), drop the optimizer checkpoints
    shutil.rmtree(RunDir(run_dir).checkpoints, ignore_errors=True)
    return result.model, train_metrics(result)


def measure_row(settings: AblationSettings, model: Any, device: torch.device) -> dict[str, Any]:
    """Parameters, Attn:Mamba ratio, cache at 8K tokens (FP16) and generation throughput of a trained model."""
    from hymba.bench import cache_size, generation_throughput

    breakdown = model.param_breakdown()
    attn, ssm = model.attn_mamba_ratio()
    cache = cache_size(model.config, seq_len=CACHE_SEQ_LEN, dtype=CACHE_DTYPE)
    b = settings.bench
    model = model.to(dtype=b.torch_dtype(device))
    gen = generation_throughput(
        model, prompt_len=b.prompt_len, batch=b.batch, new_tokens=b.new_tokens, device=device, warmup=b.warmup
    )
    return {
        "params": breakdown["total"],
        "param_breakdown": breakdown,
        "attn_params": attn,
        "ssm_params": ssm,
        "attn_mamba": format_ratio(attn, ssm),
        "kv_mb": cache["kv_mb"],
        "ssm_mb": cache["ssm_mb"],
        "kv_layers": cache["kv_layers"],
        "gen_tokens_per_s": gen["tokens_per_s"],
        "gen_batch": gen["batch_used"],
        "gen_prompt_len": gen["prompt_len"],
        "gen_new_tokens": gen["new_tokens"],
        "gen_decode": gen["decode"],
    }


def recall_row(
    settings: AblationSettings, row: int, device: torch.device, lr: float, seed: int, checkpoint: str | None = None
) -> dict[str, Any]:
    """One run of the row's recall sweep: the row's probe (``hymba.eval.mqar.probe_config``, fresh weights)
    trained on MQAR at ``lr`` from ``seed``, resumable from ``checkpoint``; its record (``RecallResult.to_dict``,
    with the curve)."""
    from hymba.eval.mqar import run_recall

    model = settings.row_model(row)
    return run_recall(model, settings.recall, lr=lr, device=device, seed=seed, checkpoint=checkpoint).to_dict()


def partial_run_path(out_dir: str | Path, row: int, lr: float, seed: int) -> Path:
    """Where a recall run's state is kept while it trains (``hymba.eval.mqar.train_mqar``'s ``checkpoint``), so
    that a run cut off (a killed job, a lost machine) continues from its last curve point; removed once the
    run's result is saved."""
    return Path(out_dir) / "recall_partial" / f"row{row}-lr{lr:g}-seed{seed}.pt"


# The sweep's extent: which (lr, seed) runs it holds, not how each run is trained. A run recorded under settings
# that differ only in these is the same run, so widening or narrowing the sweep reuses it.
_SWEEP_EXTENT = ("lrs", "seeds")


def _run_settings(recall_settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in recall_settings.items() if k not in _SWEEP_EXTENT}


def _row_recall(record: dict[str, Any], settings: AblationSettings) -> dict[str, Any] | None:
    """The record's recall sweep if its runs were trained under this run's [recall] settings (the sweep's
    learning rates and seed count may differ: :func:`rescored` fits it to this run's), else None."""
    r = record.get("recall")
    if not (isinstance(r, dict) and isinstance(r.get("settings"), dict) and "runs" in r):
        return None
    return r if _run_settings(r["settings"]) == _run_settings(settings.recall.result_settings()) else None


def rescored(record: dict[str, Any], sweep: dict[str, Any], settings: AblationSettings) -> dict[str, Any]:
    """``record`` with ``sweep`` (its :func:`_row_recall`, or one with a run added) scored over the runs of this
    run's sweep (``hymba.eval.mqar.score_sweep``: ``recall_acc`` once none is missing) and recorded under this
    run's [recall] settings. Runs outside the sweep (a learning rate dropped from ``recall.lrs``) stay in the
    record, unscored."""
    from hymba.eval.mqar import score_sweep, sweep_jobs

    rec = dict(record)
    lrs = list(settings.recall.lrs)
    runs = sorted(sweep["runs"], key=lambda r: (lrs.index(r["lr"]) if r["lr"] in lrs else len(lrs), r["lr"], r["seed"]))
    jobs = set(sweep_jobs(settings.recall, settings.train.seed))
    score = score_sweep(settings.recall, [r for r in runs if (r["lr"], r["seed"]) in jobs], settings.train.seed)
    keep = {k: v for k, v in sweep.items() if k in ("probe", "features")}
    rec["recall"] = {"settings": settings.recall.result_settings(), **keep, **score, "runs": runs}
    rec["recall_acc"] = score["accuracy"]
    rec["recall_best_lr"] = score["best_lr"] if score["accuracy"] is not None else None
    if score.get("error") is not None:
        rec["recall_error"] = score["error"]
    return rec


def pending_runs(record: dict[str, Any], settings: AblationSettings) -> list[tuple[float, int]]:
    """The ``(lr, seed)`` runs of the row's sweep that its record lacks under the current [recall] settings
    (a run that diverged is a result of its learning rate, not missing; a run that crashed is missing)."""
    from hymba.eval.mqar import sweep_jobs

    have = {(r["lr"], r["seed"]) for r in (_row_recall(record, settings) or {}).get("runs", [])}
    return [j for j in sweep_jobs(settings.recall, settings.train.seed) if j not in have]


def _recall_current(record: dict[str, Any], settings: AblationSettings) -> bool:
    return _row_recall(record, settings) is not None and not pending_runs(record, settings)


@dataclass(frozen=True)
class RecallOutcome:
    """One run of a row's recall sweep: its run record (a diverged run is one, with ``error``), or the error
    that stopped it (the run stays missing and is retried), and the time it took."""

    row: int
    lr: float
    seed: int
    run: dict[str, Any] | None
    error: str | None
    seconds: float

    def merged_into(self, record: dict[str, Any], settings: AblationSettings) -> dict[str, Any]:
        """``record`` with this run added to its sweep under the current [recall] settings and the row scored
        again (``hymba.eval.mqar.score_sweep``): ``recall_acc`` once every run is in. A sweep measured under
        other settings moves to ``recall_previous``; a crashed run leaves ``recall_error``."""
        from hymba.eval.mqar import plan_features, probe_config

        rec = dict(record)
        sweep = _row_recall(rec, settings)
        if sweep is None and self.run is None:  # nothing measured under these settings yet: keep the old sweep
            return {**rec, "recall_acc": None, "recall_best_lr": None, "recall_error": self.error}
        if sweep is None:
            if isinstance(rec.get("recall"), dict):
                rec["recall_previous"] = rec["recall"]
            probe = probe_config(settings.row_model(self.row), settings.recall)
            sweep = {
                "settings": settings.recall.result_settings(),
                "probe": probe.to_dict(),
                "features": plan_features(probe),
                "runs": [],
            }
        runs = [r for r in sweep["runs"] if (r["lr"], r["seed"]) != (self.lr, self.seed)]
        if self.run is not None:
            runs.append(self.run)
        rec.pop("recall_error", None)
        rec = rescored(rec, {**sweep, "runs": runs}, settings)
        if self.error is not None:
            rec["recall_error"] = self.error
        return rec


@dataclass(frozen=True)
class RecallJob:
    """One ``(row, lr, seed)`` run of the recall sweep, picklable so that it runs in a worker process as well
    as inline."""

    settings: AblationSettings
    row: int
    device: str
    lr: float
    seed: int
    threads: int | None = None  # intra-op threads of a CPU worker
    checkpoint: str | None = None  # the run's partial state (partial_run_path)

    def __call__(self) -> RecallOutcome:
        from hymba.train.step import TrainingDiverged

        if self.threads:
            torch.set_num_threads(self.threads)
        t0 = time.perf_counter()
        try:
            run = recall_row(self.settings, self.row, torch.device(self.device), self.lr, self.seed, self.checkpoint)
        except TrainingDiverged as e:  # a result of this learning rate: recorded, not retried
            error = f"TrainingDiverged: {e}".splitlines()[0][:500]
            run = {"lr": self.lr, "seed": self.seed, "accuracy": None, "error": error}
        except Exception as e:  # noqa: BLE001 - the row's other results stay valid; the run is retried
            error = f"{type(e).__name__}: {e}".splitlines()[0][:500]
            return RecallOutcome(self.row, self.lr, self.seed, None, error, time.perf_counter() - t0)
        finally:
            _free(torch.device(self.device))
        return RecallOutcome(self.row, self.lr, self.seed, run, None, time.perf_counter() - t0)


def recall_jobs(
    store: ResultsStore, settings: AblationSettings, rows: list[int], device: torch.device, threads: int | None = None
) -> list[RecallJob]:
    """The missing runs of ``rows``' sweeps as jobs; rows with an SSM branch first (their runs are the slow
    ones, so a pool of workers ends sooner), the given row order otherwise."""
    jobs = [
        RecallJob(settings, row, str(device), lr, seed, threads, str(partial_run_path(store.dir, row, lr, seed)))
        for row in rows
        for lr, seed in pending_runs(store.rows[row], settings)
    ]
    return sorted(jobs, key=lambda j: not settings.row_model(j.row).ssm)


def _save_recall(store: ResultsStore, settings: AblationSettings, outcome: RecallOutcome, echo: Echo) -> bool:
    """Merge one run into the row's saved record; False if the run crashed (it stays missing)."""
    rec = outcome.merged_into(store.rows[outcome.row], settings)
    rec["seconds"] = rec.get("seconds", 0.0) + outcome.seconds
    store.put(rec)
    if outcome.run is not None:  # kept: its partial state is done with (a crashed run resumes from it)
        partial_run_path(store.dir, outcome.row, outcome.lr, outcome.seed).unlink(missing_ok=True)
    what = f"lr {outcome.lr:g}, seed {outcome.seed}"
    if outcome.error is not None:
        echo(f"recall run ({what}) failed: {outcome.error}")
        return False
    run = outcome.run
    if run.get("error"):
        echo(f"recall run ({what}): {run['error']}")
    else:
        resumed = "".join(f", resumed at step {r['step']}" for r in run.get("resumed", []))
        steps = f"{run['steps']} MQAR steps ({outcome.seconds:.0f}s{resumed})"
        echo(f"recall run ({what}): {run['accuracy']:.3f} after {steps}")
    if rec["recall_acc"] is not None:
        echo(f"recall {rec['recall_acc']:.3f} at its best learning rate {rec['recall_best_lr']:g}")
    return True


def _run_job(job: RecallJob) -> RecallOutcome:  # a module-level function: what a worker pool can pickle
    return job()


def _init_worker() -> None:
    import signal

    from hymba.runtime import keep_freed_memory

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which terminates the workers
    keep_freed_memory()


def _recall_pool(
    store: ResultsStore, settings: AblationSettings, rows: list[int], device: torch.device, workers: int, echo: Echo
) -> list[int]:
    """The missing ``(row, lr, seed)`` runs of ``rows``' recall sweeps, ``workers`` at a time in worker
    processes (small probes leave most of a GPU idle; a worker keeps its CUDA context and compiled kernels
    from run to run); each run is saved as it finishes, and an interrupt stops the workers at once. Returns
    the rows whose sweep is complete."""
    import multiprocessing

    threads = max(1, torch.get_num_threads() // workers) if device.type == "cpu" else None
    jobs = recall_jobs(store, settings, rows, device, threads)
    echo(f"recall of rows {','.join(map(str, rows))}: {len(jobs)} runs (row, learning rate, seed), {workers} at a time")
    with multiprocessing.get_context("spawn").Pool(min(workers, max(1, len(jobs))), _init_worker) as pool:
        for outcome in pool.imap_unordered(_run_job, jobs):  # leaving the block terminates the workers
            head = f"row {outcome.row} ({ROW_NAMES[outcome.row]})"
            _save_recall(store, settings, outcome, lambda m, head=head: echo(f"{head}: {m}"))
    return [r for r in rows if _recall_current(store.rows[r], settings)]


def _measure_recall_inline(store: ResultsStore, settings: AblationSettings, row: int, device: torch.device, echo: Echo):
    """The missing runs of one row's sweep, one after another in this process."""
    for job in recall_jobs(store, settings, [row], device):
        _save_recall(store, settings, job(), echo)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_row(settings: AblationSettings, row: int, out_dir: Path, device: torch.device) -> dict[str, Any]:
    """Train, evaluate and time one row (recall is measured after it is saved); a failure becomes a ``failed``
    record (traceback in ``rows/<id>/error.txt``)."""
    rd = RunDir(out_dir)
    rd.row_dir(row).mkdir(parents=True, exist_ok=True)
    rd.row_error(row).unlink(missing_ok=True)
    record: dict[str, Any] = {
        "id": row,
        "name": ROW_NAMES[row],
        "status": "done",
        "error": None,
        "device": str(device),
        "run_dir": RunDir.row_run_name(row),
        "recall_acc": None,
        "model": settings.row_model(row).to_dict(),
    }
    t0 = time.perf_counter()
    model = None
    try:
        model, metrics = train_row(settings, row, rd.row_run(row).path)
        record["model"] = model.config.to_dict()  # with the tokenizer's vocabulary
        record.update(metrics)
        record.update(measure_row(settings, model, device))
    except Exception as e:  # noqa: BLE001 - one broken row must not stop the others
        record["status"] = "failed"
        record["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        rd.row_error(row).write_text(traceback.format_exc())
    finally:
        del model
        _free(device)
    record["seconds"] = time.perf_counter() - t0
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return record


# ---- the whole table --------------------------------------------------------------------------------------
@dataclass
class AblationRun:
    out_dir: Path
    settings: AblationSettings
    ran: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    table: Any = None  # pandas DataFrame of the report


# a seed-scale probe run peaks at about 4.2 GB on an H200 (CUDA graphs; benchmarks/results/*session8*)
_RECALL_WORKER_BYTES = 8 << 30
_MAX_RECALL_WORKERS = 6


def auto_recall_workers(device: torch.device) -> int:
    """Parallel recall runs for ``--recall-workers auto``: 1 (inline) on CPU, where the runs share its cores; on
    a GPU as many as its free memory holds at 8 GB each and half the CPU cores feed, at most 6 (a probe's
    small kernels leave most of a GPU idle, so several runs overlap)."""
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(_MAX_RECALL_WORKERS, (os.cpu_count() or 2) // 2, free // _RECALL_WORKER_BYTES))


def recall_mode(flag: bool | None, workers: int, device: torch.device) -> str:
    """How recall is measured: ``"none"``; ``"inline"``, each row right after it is trained (or, trained
    earlier, in its turn); ``"pool"``, after every row is trained and timed, ``workers`` rows at a time in
    parallel processes (so timings are never taken while they run)."""
    if not recall_wanted(flag, device):
        return "none"
    return "pool" if workers > 1 else "inline"


def _clear_stale_recall(store: ResultsStore, settings: AblationSettings, echo: Echo) -> None:
    """One Recall column, one set of [recall] settings (recall on or off): values measured under others are
    not comparable, so they leave the table (the record keeps them under ``recall``). A sweep whose runs were
    trained under these settings but that holds other learning rates or seeds is scored again over this
    run's sweep (:func:`rescored`): its runs are reused, the missing ones run."""
    stale = []
    for r, rec in sorted(store.rows.items()):
        if (sweep := _row_recall(rec, settings)) is not None:
            new = rescored(rec, sweep, settings)
            if new != rec:
                store.put(new)
        elif rec.get("recall_acc") is not None:
            stale.append(r)
            store.put({**rec, "recall_acc": None, "recall_best_lr": None})
    if stale:
        echo(
            f"recall of rows {','.join(map(str, stale))} was measured under other [recall] settings: "
            "cleared from the table (the record keeps it under 'recall')"
        )


RECALL_KEYS = ("recall", "recall_acc", "recall_best_lr", "recall_error", "recall_previous")


def _keep_recall(old: dict[str, Any] | None, record: dict[str, Any]) -> dict[str, Any]:
    """A freshly trained row's record with the recall its earlier record held (``--recall-only`` measures
    recall before the row is trained; the probe trains its own model, so training does not change it)."""
    if not old:
        return record
    return {**record, **{k: old[k] for k in RECALL_KEYS if k in old}}


def _recall_ready(store: ResultsStore, row: int) -> bool:
    """A row whose recall can be measured: trained, or recorded by ``--recall-only`` (untrained)."""
    return store.rows.get(row, {}).get("status") in ("done", UNTRAINED)


def untrained_record(settings: AblationSettings, row: int) -> dict[str, Any]:
    """The record ``--recall-only`` keeps for a row it did not train: recall only (no LM metrics)."""
    return {
        "id": row,
        "name": ROW_NAMES[row],
        "status": UNTRAINED,
        "error": None,
        "recall_acc": None,
        "model": settings.row_model(row).to_dict(),
        "seconds": 0.0,
    }


def _train_rows(
    store: ResultsStore,
    settings: AblationSettings,
    row_ids: list[int],
    device: torch.device,
    run: AblationRun,
    echo: Echo,
    *,
    force: bool,
    inline_recall: bool,
) -> None:
    """Train the rows of ``row_ids`` that are not done (all with ``force``), in order, each saved as it
    finishes. With ``inline_recall``, each trained row's recall is measured once it is saved (an interrupt
    there keeps the trained row), and a row trained earlier without current recall gets only that."""

    def measure_recall(row: int, head: str) -> None:  # a failed recall is in the record and the log
        _measure_recall_inline(store, settings, row, device, lambda m: echo(f"{head}: {m}"))

    for n, row in enumerate(row_ids, 1):
        head = f"[{n}/{len(row_ids)}] row {row} ({ROW_NAMES[row]})"
        if store.done(row) and not force:
            if inline_recall and not _recall_current(store.rows[row], settings):
                echo(f"{head}: trained earlier; measuring recall")
                measure_recall(row, head)
                run.ran.append(row)
            else:
                echo(f"{head}: done earlier, skipped")
                run.skipped.append(row)
            continue
        echo(f"{head}: training")
        rec = _keep_recall(store.rows.get(row), run_row(settings, row, run.out_dir, device))
        store.put(rec)  # saved before recall: an interrupt there keeps the trained row
        if not _row_saved(rec, head, run, echo):
            continue
        if inline_recall:
            measure_recall(row, head)


def _row_saved(rec: dict[str, Any], head: str, run: AblationRun, echo: Echo) -> bool:
    """Count and report a row just saved; False if it failed."""
    row = rec["id"]
    run.ran.append(row)
    if rec["status"] == "failed":
        run.failed.append(row)
        echo(
            f"{head}: FAILED after {rec['seconds']:.0f}s: {rec['error']} "
            f"(traceback in {RunDir(run.out_dir).row_error(row)})"
        )
        return False
    echo(
        f"{head}: {rec['seconds']:.0f}s, val ppl {rec['val_ppl']:.2f}, "
        f"train {rec['train_tokens_per_s']:,.0f} tok/s, gen {rec['gen_tokens_per_s']:,.0f} tok/s, "
        f"KV {rec['kv_mb']:.2f} MB"
    )
    return True


# ---- rows in worker processes, one per GPU ------------------------------------------------------------------
def _row_task(task: tuple[AblationSettings, int, Path], device: str) -> dict[str, Any]:
    """One row in a worker (``hymba.ablation.workers``): trained on ``device``, without a progress bar."""
    settings, row, out = task
    train = dataclasses.replace(settings.train, device=device, progress=False)
    return run_row(dataclasses.replace(settings, train=train), row, out, torch.device(device))


def _crashed_row(
    settings: AblationSettings, row: int, out: Path, slot: Slot, error: str, seconds: float
) -> dict[str, Any]:
    """The ``failed`` record of a row whose worker died without a record (it wrote no traceback either)."""
    rd = RunDir(out)
    rd.row_dir(row).mkdir(parents=True, exist_ok=True)
    rd.row_error(row).write_text(f"{error} (worker on {slot.label}, training row {row})\n")
    return {
        "id": row,
        "name": ROW_NAMES[row],
        "status": "failed",
        "error": error,
        "device": slot.label,
        "run_dir": RunDir.row_run_name(row),
        "recall_acc": None,
        "model": settings.row_model(row).to_dict(),
        "seconds": seconds,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _train_rows_in_workers(
    store: ResultsStore,
    settings: AblationSettings,
    row_ids: list[int],
    slots: list[Slot],
    run: AblationRun,
    echo: Echo,
    *,
    force: bool,
) -> None:
    """Train the rows of ``row_ids`` that are not done (all with ``force``) concurrently, one worker process
    per slot; each record is saved here, by the one writer, as its worker ends."""
    heads = {row: f"[{n}/{len(row_ids)}] row {row} ({ROW_NAMES[row]})" for n, row in enumerate(row_ids, 1)}
    todo = []
    for row in row_ids:
        if store.done(row) and not force:
            echo(f"{heads[row]}: done earlier, skipped")
            run.skipped.append(row)
        else:
            todo.append(row)
    if not todo:
        return
    echo(f"training rows {','.join(map(str, todo))} on {', '.join(s.label for s in slots)}, one row per worker")

    t0: dict[int, float] = {}

    def started(task: tuple[AblationSettings, int, Path], slot: Slot, pid: int) -> None:
        t0[task[1]] = time.perf_counter()
        echo(f"{heads[task[1]]}: training on {slot.label} (worker pid {pid})")

    tasks = [(settings, row, run.out_dir) for row in todo]
    with contextlib.closing(run_tasks(_row_task, tasks, slots, started)) as outcomes:  # an interrupt stops them
        for outcome in outcomes:
            row, slot = outcome.task[1], outcome.slot
            if outcome.result is not None:
                rec = {**outcome.result, "device": slot.label}
            else:
                rec = _crashed_row(settings, row, run.out_dir, slot, outcome.error, time.perf_counter() - t0[row])
            store.put(rec)
            _row_saved(rec, f"{heads[row]} on {slot.label}", run, echo)


def _recall_pass(
    store: ResultsStore,
    settings: AblationSettings,
    row_ids: list[int],
    device: torch.device,
    workers: int,
    run: AblationRun,
    echo: Echo,
) -> None:
    """Recall of every trained row of ``row_ids`` without current recall, in ``workers`` processes; a row
    that gets it counts as run, not skipped."""
    todo = [r for r in row_ids if _recall_ready(store, r) and not _recall_current(store.rows[r], settings)]
    if not todo:
        return
    for r in _recall_pool(store, settings, todo, device, workers, echo):
        if r in run.skipped:
            run.skipped.remove(r)
        if r not in run.ran:
            run.ran.append(r)


def _worker_slots(
    gpus: str | list[int] | None, cpu_workers: int, settings: AblationSettings, device: torch.device
) -> list[Slot]:
    """The worker slots of ``gpus`` or ``cpu_workers`` (none: rows train in this process, one by one)."""
    from hymba.train.parallel import launch

    if launch().world_size > 1:
        raise UsageError(
            "hymba ablate is one process (rows are independent runs): spread the rows over GPUs with "
            "--gpus 0,1,... instead of launching it with torchrun"
        )
    if gpus is not None and cpu_workers:
        raise UsageError("--gpus and CPU workers exclude each other")
    if not isinstance(cpu_workers, int) or isinstance(cpu_workers, bool) or cpu_workers < 0:
        raise UsageError(f"cpu_workers={cpu_workers!r} is invalid: must be a non-negative integer")
    if cpu_workers:
        if device.type != "cpu":
            raise UsageError(f"CPU workers need train.device=cpu, not {settings.train.device!r}")
        return cpu_slots(cpu_workers)
    if gpus is None:
        return []
    ids = parse_gpus(gpus if isinstance(gpus, str) else ",".join(map(str, gpus)))
    if settings.train.device not in ("auto", "cuda"):
        raise UsageError(
            f"--gpus gives each worker its GPU; train.device={settings.train.device!r} contradicts it "
            "(leave it at auto or cuda)"
        )
    return gpu_slots(ids)


def _recall_only(
    store: ResultsStore,
    settings: AblationSettings,
    row_ids: list[int],
    device: torch.device,
    workers: int,
    run: AblationRun,
    echo: Echo,
) -> None:
    """``--recall-only``: an ``untrained`` record for each row without one, then (with one worker) each row's
    missing sweep runs in this process; with more, the pool pass that follows runs them."""
    for row in row_ids:
        if row not in store.rows:
            store.put(untrained_record(settings, row))
    if workers > 1:
        return
    for n, row in enumerate(row_ids, 1):
        head = f"[{n}/{len(row_ids)}] row {row} ({ROW_NAMES[row]})"
        if _recall_current(store.rows[row], settings):
            echo(f"{head}: recall measured earlier, skipped")
            run.skipped.append(row)
            continue
        _measure_recall_inline(store, settings, row, device, lambda m, head=head: echo(f"{head}: {m}"))
        run.ran.append(row)


def run_ablation(
    preset: str = "auto",
    rows: str | list[int] | None = None,
    out_dir: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    force: bool = False,
    recall: bool | None = None,
    recall_workers: int | str = "auto",
    gpus: str | list[int] | None = None,
    cpu_workers: int = 0,
    recall_only: bool = False,
    report: bool = True,
    echo: Echo = _stderr,
) -> AblationRun:
    """Run (or resume) the ablation into ``out_dir`` and write the report.

    ``rows``: ids or a spec like ``"1,5,13"`` (default all rows). ``out_dir`` defaults to
    ``runs/ablation-<preset>``. ``force`` redoes finished rows. ``recall``:
    None = on for GPU runs only. ``recall_workers`` > 1 measures recall after all rows are trained and
    timed, that many (row, learning rate, seed) runs of the recall sweeps at a time in parallel processes
    (timings are never taken while they run); ``"auto"``: :func:`auto_recall_workers`. ``recall_only``
    measures the Recall column without training the language-model rows (the probe trains its own models):
    rows not trained yet get an ``untrained`` record holding their recall, which a later full run keeps when
    it trains them. ``gpus`` (``"auto"``, ``"0,1"`` or ids) trains the rows concurrently, one worker process
    per GPU; ``cpu_workers`` > 0 does the same with that many CPU worker processes (how the tests exercise
    the workers without GPUs). Recall then follows once every row is trained, as with ``recall_workers``.
    Bad presets, rows, overrides or GPUs raise
    ``ValueError`` or ``UsageError`` before any work.
    """
    from hymba.runtime import resolve_device

    settings = AblationSettings.load(preset, overrides)
    row_ids = parse_rows(rows) if rows is None or isinstance(rows, str) else parse_rows(",".join(map(str, rows)))
    out = Path(out_dir) if out_dir is not None else Path("runs") / f"ablation-{settings.preset}"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if recall_workers != "auto" and (
        not isinstance(recall_workers, int) or isinstance(recall_workers, bool) or recall_workers < 1
    ):
        raise ValueError(f"--recall-workers {recall_workers!r} is invalid: must be a positive integer or auto")
    if recall_only and recall is False:
        raise ValueError("--recall-only and --no-recall contradict each other")
    device = resolve_device(settings.train.device, key="train.device")
    if recall_workers == "auto":
        recall_workers = auto_recall_workers(device)
    slots = _worker_slots(gpus, cpu_workers, settings, device)
    mode = recall_mode(True if recall_only else recall, recall_workers, device)
    if slots and mode == "inline":
        mode = "pool"  # after the concurrent training, so that it never shares a GPU with a timed row
    run = AblationRun(out, settings)

    with ResultsStore(out, settings.fingerprint(), meta=environment(device)) as store:
        for note in store.open(force=force):
            echo(note)
        _clear_stale_recall(store, settings, echo)
        r = settings.recall
        lm = (
            "no LM training (--recall-only)"
            if recall_only
            else f"{settings.train.max_steps} steps of {settings.train.batch_size}x{settings.train.seq_len} tokens"
        )
        sweep = (
            f"recall: {len(r.lrs) * r.seeds} MQAR runs per row (lr {', '.join(f'{x:g}' for x in r.lrs)}; "
            f"{r.seeds} seed(s); up to {r.train_steps} steps, stop at {r.target})"
        )
        echo(
            f"ablation: preset {settings.preset} on {device}, rows {','.join(map(str, row_ids))}, {lm}, "
            f"{'recall off' if mode == 'none' else sweep} -> {out}"
        )
        try:
            if recall_only:
                _recall_only(store, settings, row_ids, device, recall_workers, run, echo)
            elif slots:
                _train_rows_in_workers(store, settings, row_ids, slots, run, echo, force=force)
            else:
                _train_rows(store, settings, row_ids, device, run, echo, force=force, inline_recall=mode == "inline")
            if mode == "pool":
                _recall_pass(store, settings, row_ids, device, recall_workers, run, echo)
        except KeyboardInterrupt:
            measured = sum(_recall_current(store.rows[r], settings) for r in row_ids if _recall_ready(store, r))
            recall_txt = "" if mode == "none" else f", {measured} with recall"
            if recall_only:
                runs = sum(len((_row_recall(store.rows[r], settings) or {}).get("runs", [])) for r in store.rows)
                recall_txt = f" (recall only), {measured} with complete recall, {runs} recall runs"
            echo(
                f"interrupted: {sum(store.done(r) for r in row_ids)} of {len(row_ids)} rows saved{recall_txt} in "
                f"{out}; rerun the same command to continue"
            )
            raise
    if report:
        from hymba.ablation.report import write_report

        run.table, run.files = write_report(out)
    return run


__all__ = [
    "AblationRun",
    "auto_recall_workers",
    "RecallJob",
    "RecallOutcome",
    "environment",
    "format_ratio",
    "measure_row",
    "pending_runs",
    "recall_jobs",
    "recall_mode",
    "recall_row",
    "untrained_record",
    "run_ablation",
    "run_row",
    "train_row",
]
