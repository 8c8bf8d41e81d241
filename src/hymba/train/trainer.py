"""Train one language model on a prepared corpus and evaluate it.

AdamW with decoupled weight decay on matrices only, linear warm-up then cosine decay, bf16 autocast on CUDA
(fp32 on CPU), gradient clipping and accumulation, optional ``torch.compile``. The run directory holds the
resolved config (``config.json``/``config.toml``), the git revision (``run.json``), ``train.log``,
``metrics.jsonl``, checkpoints, and at the end ``model.safetensors`` + ``tokenizer.json`` (what ``hymba eval``
loads) and ``results.json`` (the names: ``hymba.rundir.RunDir``). Device, autocast and peak FLOP/s come from
``hymba.runtime``.

Under ``torchrun`` the loop runs data-parallel (DDP) or sharded (FSDP2) through ``hymba.train.parallel``:
``train.batch_size`` is per rank, each rank reads its slice of every global batch, inner accumulation steps
skip the gradient all-reduce, and the schedule follows optimizer steps, so N ranks with batch b train like one
process with batch N*b. Rank 0 alone reads and writes the run directory, logs and shows progress; checkpoints
hold the full, unsharded state, so a run resumes on any number of ranks with the same global batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
import torch.nn.functional as F
from torch import nn

import hymba.train.parallel as parallel
from hymba.config import COMPILE_MIN_STEPS, ModelConfig, RunConfig, apply_overrides
from hymba.data import IGNORE_INDEX, TrainBatches, prepare, val_batches
from hymba.io import atomic_write, json_dumps, lock_directory
from hymba.model import HymbaLM
from hymba.rundir import RunDir
from hymba.runtime import autocast_context, autocast_dtype, peak_flops
from hymba.train.checkpoint import latest_checkpoint, load_newest_checkpoint, save_checkpoint, save_weights
from hymba.train.init import resolve_init
from hymba.train.step import (
    GraphedStep,
    accumulate,
    build_optimizer,
    check_finite,
    compile_model,
    lr_at,
    make_capturable,
    set_lr,
)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Final metrics of a run and the trained model (in eval mode)."""

    val_loss: float
    val_ppl: float
    val_acc: float
    val_tokens: int
    train_tokens_per_s: float | None  # None when no step ran (a resume that only evaluated)
    mfu: float | None  # None on CPU or an unknown accelerator
    steps: int
    n_params: int
    vocab_size: int
    out_dir: Path
    model: HymbaLM = dataclasses.field(repr=False)

    def metrics(self) -> dict[str, Any]:
        # not dataclasses.asdict: it would deep-copy the model (which FSDP refuses)
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}


# ---- evaluation -------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(
    model: nn.Module,
    val_tokens,
    seq_len: int,
    batch_size: int,
    device: str | torch.device,
    max_tokens: int = 0,
    precision: str = "auto",
) -> dict[str, float]:
    """Validation loss, perplexity and next-token accuracy over the whole split (or ``max_tokens``).

    Every target counts once (windows do not overlap) and the mean is over real target tokens, not over
    windows, so a short last window weighs what its tokens weigh.

    Returns:
        ``{"loss", "ppl", "acc", "tokens"}``.
    """
    device = torch.device(device)
    amp = autocast_dtype(precision, device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    for x, y in val_batches(val_tokens, seq_len, batch_size, max_tokens=max_tokens):
        x, y = x.to(device), y.to(device)
        with autocast_context(device, amp):
            logits = model(x).logits
        logits = logits.float()
        real = y != IGNORE_INDEX
        loss_sum += F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
        correct += ((logits.argmax(-1) == y) & real).sum()
        count += int(real.sum())
    model.train(was_training)
    loss = float(loss_sum) / count
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "acc": int(correct) / count, "tokens": count}


# ---- run directory ----------------------------------------------------------------------------------------
def git_revision() -> dict[str, Any]:
    """The source tree's git commit and whether it had uncommitted changes ("unknown" outside a checkout)."""
    src = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=src,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": rev.stdout.strip(), "dirty": bool(status.stdout.strip())}


IGNORED_FIELDS = {("model", "vocab_size"), ("data", "cache_dir")}  # the tokenizer's size; where, not what


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # also UnicodeDecodeError
        raise ValueError(f"{what}: {path} is corrupt ({e})") from None


def _refuse_other_runs(out: Path) -> None:
    if RunDir(out).is_ablation():
        raise ValueError(
            f"--out {out} holds a `hymba ablate` run (rows/, results.json), not a training run; choose another --out"
        )


def saved_config(out_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """The resolved config a run directory saved (``config.json``), with ``--set`` overrides applied on top:
    what ``hymba train --resume`` continues with."""
    out = Path(out_dir)
    _refuse_other_runs(out)
    path = RunDir(out).config_json
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: {path} is missing (--out is not a `hymba train` run directory)")
    saved = _read_json(path, "cannot resume")
    if not isinstance(saved, dict) or not all(isinstance(v, dict) for v in saved.values()):
        raise ValueError(f"cannot resume: {path} is corrupt (expected an object of model, data, train tables)")
    return RunConfig.from_dict(apply_overrides(saved, overrides, RunConfig.SECTIONS), where=str(path))


def config_diff(old: RunConfig, new: RunConfig, sections=("model", "data", "train")) -> dict[str, tuple[Any, Any]]:
    """``{"section.field": (old, new)}`` for the fields that differ (model.vocab_size and data.cache_dir
    left out)."""
    a, b = old.to_dict(), new.to_dict()
    return {
        f"{s}.{k}": (a[s].get(k), v)
        for s in sections
        for k, v in b[s].items()
        if a[s].get(k) != v and (s, k) not in IGNORED_FIELDS
    }


def format_diff(diff: dict[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())


def _open_run_dir(out: Path, resume: bool) -> tuple[IO[str], list[Path]]:
    """Create ``out`` if needed, lock it and check it: absent or empty for a fresh run, a training run for a
    resume. Returns the lock and the paths this call created (removed again if the check fails)."""
    _refuse_other_runs(out)
    if resume and not out.is_dir():
        raise FileNotFoundError(f"cannot resume: {out} does not exist")
    rd = RunDir(out)
    made = [p for p in (out, rd.lock) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_directory(out, "`hymba train`")
    try:
        if resume:
            saved_config(out)  # a run directory with a readable config
        left = rd.leftovers()
        if not resume and left:
            raise ValueError(
                f"--out {out} is not empty ({', '.join(left[:4])}{', ...' if len(left) > 4 else ''}); "
                "pass --resume to continue the run in it, or choose another --out"
            )
    except BaseException:
        lock.close()
        _remove(made)
        raise
    return lock, made


def _remove(paths: list[Path]) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _write_run_files(out: Path, resolved: RunConfig, tokenizer, par: parallel.Parallel) -> None:
    _write_config(out, resolved)
    tokenizer.save(RunDir(out).tokenizer)
    run = {
        "git": git_revision(),
        "argv": sys.argv,
        "parallel": {"mode": par.mode, "world_size": par.world_size},
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write(RunDir(out).run_json, json_dumps(run, indent=2) + "\n")


def _write_config(out: Path, resolved: RunConfig) -> None:
    rd = RunDir(out)
    atomic_write(rd.config_json, json_dumps(resolved.to_dict(), indent=2) + "\n")
    atomic_write(rd.config_toml, resolved.to_toml())


def _check_resumable(out: Path, resolved: RunConfig) -> dict[str, tuple[Any, Any]]:
    """The train settings that ``resolved`` changes in the run's saved config; a changed model or data
    config (the checkpoint would not fit, or the data would differ) raises."""
    saved = saved_config(out)
    diff = config_diff(saved, resolved, ("model", "data"))
    if diff:
        raise ValueError(f"cannot resume {out}: the config changed ({format_diff(diff)})")
    return config_diff(saved, resolved, ("train",))


def _refuse_finished(out: Path, max_steps: int) -> None:
    """Raise if ``results.json`` says the run already trained ``max_steps``: there is nothing to resume."""
    path = RunDir(out).results
    results = _read_json(path, "cannot resume") if path.is_file() else {}
    done = results.get("steps") if isinstance(results, dict) else None
    if isinstance(done, int) and done >= max_steps:
        raise ValueError(
            f"nothing to resume: {out} finished at step {done} (train.max_steps={max_steps}); "
            "to train further, raise it with --set train.max_steps=N"
        )


def _record_resume(
    out: Path, resolved: RunConfig, changed: dict[str, tuple[Any, Any]], ckpt: Path, par: parallel.Parallel
) -> None:
    """Append this resume (checkpoint, command, changed train settings) to ``run.json``; the changed settings
    also go into ``config.json``/``config.toml``, so the next resume continues with them."""
    path = RunDir(out).run_json
    run = _read_json(path, "cannot resume") if path.is_file() else {}
    if not isinstance(run, dict):
        raise ValueError(f"cannot resume: {path} is corrupt (expected an object)")
    run.setdefault("resumes", []).append(
        {
            "checkpoint": ckpt.name,
            "argv": sys.argv,
            "git": git_revision(),
            "parallel": {"mode": par.mode, "world_size": par.world_size},
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "changed": {k: {"old": a, "new": b} for k, (a, b) in changed.items()},
        }
    )
    if changed:
        log.warning("resuming with changed train settings (recorded in %s): %s", path, format_diff(changed))
        _write_config(out, resolved)
    atomic_write(path, json_dumps(run, indent=2) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the lines logged up to checkpoint ``step``, less any final line and any torn line: the resumed
    run logs what came after the checkpoint again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step and not rec.get("final"):
            kept.append(line + "\n")
    atomic_write(path, "".join(kept))


class _MetricsLog:
    """``metrics.jsonl`` (appended, so a resumed run continues the file) and optionally TensorBoard."""

    def __init__(self, out: Path, tensorboard: bool):
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError(
                    "train.tensorboard=true needs the tensorboard package (pip install 'hymba[tensorboard]')"
                ) from e
            self.tb = SummaryWriter(str(RunDir(out).tensorboard))
        self.file = open(RunDir(out).metrics, "a")

    def write(self, step: int, **values: Any) -> None:
        self.file.write(json_dumps({"step": step, **values}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after a step, and that step was checkpointed."""

    def __init__(self, signum: int, step: int, checkpoint: Path, out: Path, launcher: str = ""):
        self.signum = signum
        super().__init__(
            f"{signal.Signals(signum).name} at step {step}; saved {checkpoint}; continue with: "
            f"{launcher}hymba train --out {out} --resume"
        )


class _StopOnSignal:
    """While active (in the main thread), SIGINT and SIGTERM only set ``signum``: the loop checkpoints and stops
    after the step in flight. The first signal puts the previous handlers back, so a second one acts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._old = {}

    def __exit__(self, *exc: Any) -> None:
        self._restore()


# ---- training ---------------------------------------------------------------------------------------------
def train(
    run_cfg: RunConfig, out_dir: str | Path, *, resume: bool = False, model_config_override: ModelConfig | None = None
) -> TrainResult:
    """Train ``run_cfg`` into ``out_dir`` and evaluate.

    A fresh run needs ``out_dir`` absent or empty; if it fails before its first step it leaves nothing behind.
    ``resume`` continues from the newest intact checkpoint: the model and data config must be the run's own
    (``saved_config``), changed train settings are recorded in ``run.json``. The directory is locked while
    training. SIGINT/SIGTERM checkpoint the current step and raise ``TrainingInterrupted``. The model is
    ``model_config_override or run_cfg.model`` with ``vocab_size`` set to the tokenizer's. Raises
    ``TrainingDiverged`` when the loss or gradient norm stops being finite. Under torchrun every rank calls
    this and gets the same result (see the module docstring); a step only rank 0 performs that fails there
    raises ``parallel.RankZeroFailed`` on the others.
    """
    out = Path(out_dir)
    with parallel.start(run_cfg.train) as par:
        opened = par.on_rank0(lambda: _open_run_dir(out, resume))
        if not par.is_rank0:
            pkg_log = logging.getLogger("hymba")
            old_level = pkg_log.level
            pkg_log.setLevel(logging.WARNING)  # only rank 0 logs
            try:
                return _train(run_cfg, out, resume, model_config_override, par)
            finally:
                pkg_log.setLevel(old_level)
        lock, made = opened
        rd = RunDir(out)
        handler = logging.FileHandler(rd.train_log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        pkg_log = logging.getLogger("hymba")
        pkg_log.addHandler(handler)
        old_level = pkg_log.level
        if pkg_log.getEffectiveLevel() > logging.INFO:
            pkg_log.setLevel(logging.INFO)
        failed_in_setup = False
        try:
            return _train(run_cfg, out, resume, model_config_override, par)
        except BaseException:
            failed_in_setup = not resume and not rd.metrics.exists()  # opened just before the first step
            raise
        finally:
            pkg_log.removeHandler(handler)
            pkg_log.setLevel(old_level)
            handler.close()
            if failed_in_setup:  # bad input: leave no half-made run directory behind
                _remove([out] if out in made else [p for p in out.iterdir() if p.name != RunDir.LOCK or p in made])
            lock.close()


class _NoMetrics:
    """What ranks other than 0 log to: nothing."""

    def write(self, step: int, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _train(
    run_cfg: RunConfig, out: Path, resume: bool, override: ModelConfig | None, par: parallel.Parallel
) -> TrainResult:
    tc = run_cfg.train
    rd = RunDir(out)
    changed: dict[str, tuple[Any, Any]] = {}

    def refuse() -> None:  # before any work: a changed model or data config, a finished run
        nonlocal changed
        changed = _check_resumable(out, RunConfig(model=override or run_cfg.model, data=run_cfg.data, train=tc))
        _refuse_finished(out, tc.max_steps)

    if resume:
        par.on_rank0(refuse)
    init_state = None
    if tc.init and not resume:  # a resumed run continues from its own checkpoints
        run_cfg, init_state = resolve_init(run_cfg)
        override = None
    device = par.device
    if tc.cuda_graphs and (device.type != "cuda" or par.world_size > 1):
        where = f"{par.world_size} processes" if par.world_size > 1 else f"device {device.type}"
        raise ValueError(f"train.cuda_graphs=true needs CUDA and one process, not {where}")
    amp = autocast_dtype(tc.precision, device)
    data = par.on_rank0(lambda: prepare(run_cfg.data))  # rank 0 fills the token cache; the others then read it
    if data is None:
        data = prepare(run_cfg.data)
    log.info(
        "corpus %s: %d train / %d val tokens, vocabulary %d (%s)",
        run_cfg.data.source,
        len(data.train),
        len(data.val),
        data.vocab_size,
        "cached" if data.cache_hit else "new",
    )
    model_cfg = override or run_cfg.model
    if not tc.init:
        model_cfg = model_cfg.replace(vocab_size=data.vocab_size)
    elif data.vocab_size > model_cfg.vocab_size:  # started from weights: their vocabulary stays
        raise ValueError(
            f"train.init: the tokenizer has {data.vocab_size} tokens, the model only {model_cfg.vocab_size}"
        )
    resolved = RunConfig(model=model_cfg, data=run_cfg.data, train=tc)

    torch.manual_seed(tc.seed)
    model = HymbaLM(model_cfg).to(device)
    if init_state is not None:
        model.load_state_dict(init_state)
        del init_state
    n_params = sum(p.numel() for p in model.parameters())
    flops_per_token = model.flops_per_token(tc.seq_len)
    batches = TrainBatches(
        data.train, tc.seq_len, tc.batch_size, seed=tc.seed, rank=par.rank, world_size=par.world_size
    )
    step = 0
    weights = optim_state = None
    if resume:

        def load() -> dict[str, Any]:  # rank 0 reads the checkpoint into the plain model, before any wrapping
            ckpt, state = load_newest_checkpoint(out, model)
            if int(state["step"]) > tc.max_steps:
                raise ValueError(
                    f"cannot resume: {ckpt} is at step {state['step']}, past train.max_steps={tc.max_steps}"
                )
            batches.load_state_dict(state["data"])  # checked here, so that a misfit is reported once
            _record_resume(out, resolved, changed, ckpt, par)
            _truncate_metrics(rd.metrics, int(state["step"]))
            log.info("resumed from %s at step %d", ckpt, state["step"])
            return state

        state = par.on_rank0(load)
        if par.is_rank0:
            optim_state = state.pop("optimizer")
            weights = {k: v.detach().cpu() for k, v in model.state_dict().items()} if par.distributed else None
        state = par.broadcast(state)
        step = int(state["step"])
        batches.load_state_dict(state["data"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    else:
        par.on_rank0(lambda: _write_run_files(out, resolved, data.tokenizer, par))
    log.info(
        "model: %d parameters, %s; device %s, %s, %s",
        n_params,
        model.param_breakdown(),
        device,
        "bf16 autocast" if amp else "fp32",
        par.describe(),
    )
    wrapped = par.wrap(model)
    model = par.unwrap(wrapped)
    optimizer = build_optimizer(model, tc, capturable=tc.cuda_graphs)
    if resume:
        par.load_full_state(wrapped, optimizer, weights, optim_state)
        del weights, optim_state
        if tc.cuda_graphs:  # whatever the checkpoint held: capturable, the learning rate a device tensor
            make_capturable(optimizer, device)
    compiled = tc.compiles(device.type)
    if tc.compile == "auto":
        log.info(
            "train.compile=auto: %s",
            f"torch.compile (CUDA, {tc.max_steps} steps)"
            if compiled
            else f"eager ({device.type}, {tc.max_steps} steps; compiling pays from {COMPILE_MIN_STEPS} steps on CUDA)",
        )
    if compiled and model_cfg.ssm:  # chosen inside the compiled graph, where it cannot be logged
        from hymba.kernels import scan

        conv = scan.train_conv(model_cfg.scan_backend, device.type, compiled=True)
        log.info("torch.compile: the Mamba conv trains as %r (kernels.scan.TRAIN_CONV = %r)", conv, scan.TRAIN_CONV)
    forward = compile_model(wrapped) if compiled else wrapped
    graphed = GraphedStep(forward, optimizer, amp=amp, grad_clip=tc.grad_clip) if tc.cuda_graphs else None
    peak = peak_flops(device, tc.peak_flops)
    tokens_per_step = tc.batch_size * tc.seq_len * tc.grad_accum * par.world_size  # all ranks
    eval_bs = tc.eval_batch_size or tc.batch_size

    def checkpoint() -> Path:
        rng = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }
        weights, optim = par.full_state(wrapped, optimizer)  # every rank takes part; rank 0 gets them
        if par.is_rank0:
            save_checkpoint(
                out,
                step,
                model,
                optim,
                {"data": batches.state_dict(), "rng": rng},
                keep=tc.keep_checkpoints,
                weights=weights,
            )
        return rd.checkpoint(step)

    metrics = par.on_rank0(lambda: _MetricsLog(out, tc.tensorboard)) or _NoMetrics()
    step_times: list[float] = []
    model.train()
    from tqdm.auto import tqdm

    bar = tqdm(
        total=tc.max_steps,
        initial=step,
        disable=not (tc.progress and par.is_rank0),
        unit="step",
        dynamic_ncols=True,
    )
    with _StopOnSignal() as stop, contextlib.closing(bar), contextlib.closing(metrics):
        while step < tc.max_steps:
            t0 = time.perf_counter()
            lr = lr_at(step, tc)
            set_lr(optimizer, lr)
            if graphed is not None:  # the optimizer step is part of the graph: a diverged step is caught after it,
                # before any checkpoint of it is written
                loss_val, grad_norm = graphed(*next(batches)).tolist()
            else:
                parts = (
                    (x.to(device, non_blocking=True), y.to(device, non_blocking=True), 1.0 / tc.grad_accum)
                    for x, y in (next(batches) for _ in range(tc.grad_accum))
                )
                loss_sum = accumulate(
                    forward,
                    parts,
                    device,
                    amp,
                    sync=lambda i: par.grad_sync(wrapped, sync=i == tc.grad_accum - 1),
                )
                # one host read of both (so step times are real), before AdamW's step and the divergence check
                loss_val, grad_norm = par.loss_and_clip(loss_sum, wrapped, tc.grad_clip or math.inf)
            check_finite(
                loss_val,
                grad_norm,
                lambda: (
                    f"training diverged at step {step + 1}: loss={loss_val}, grad_norm={grad_norm} (lr={lr:.3g}); "
                    f"last good checkpoint: {latest_checkpoint(out) or 'none'}; lower train.lr or raise warmup_steps"
                ),
            )
            if graphed is None:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            step += 1
            step_times.append(time.perf_counter() - t0)
            if len(step_times) == 1 and forward is not wrapped:
                log.info("first step %.1f s (torch.compile; not counted in tokens/s)", step_times[0])
            tok_s = tokens_per_step / step_times[-1]
            bar.update(1)
            bar.set_postfix(loss=f"{loss_val:.3f}", tok_s=f"{tok_s:,.0f}", refresh=False)
            if step % tc.log_every == 0 or step == tc.max_steps:
                metrics.write(
                    step, loss=loss_val, lr=lr, grad_norm=grad_norm, tokens_per_s=tok_s, tokens=step * tokens_per_step
                )
            # `model`, not DDP's wrapper, whose forward would sync buffers with ranks that are not evaluating
            if tc.eval_every and step % tc.eval_every == 0 and step < tc.max_steps and par.evaluates:
                ev = evaluate(model, data.val, tc.seq_len, eval_bs, device, tc.eval_max_tokens, tc.precision)
                metrics.write(step, val_loss=ev["loss"], val_ppl=ev["ppl"], val_acc=ev["acc"])
                log.info("step %d: val loss %.4f, ppl %.2f, acc %.4f", step, ev["loss"], ev["ppl"], ev["acc"])
            saved = None
            if (tc.ckpt_every and step % tc.ckpt_every == 0) or step == tc.max_steps:
                saved = checkpoint()
            signum = par.max(stop.signum or 0)  # every rank stops after the same step
            if signum:
                launcher = f"torchrun --nproc_per_node {par.world_size} -m " if par.world_size > 1 else ""
                raise TrainingInterrupted(signum, step, saved or checkpoint(), out, launcher)

    # steady state: leave out warm-up / compilation steps, but always keep at least one
    skip = min(tc.throughput_skip_steps, max(0, len(step_times) - 1))
    steady = step_times[skip:]
    tokens_per_s = tokens_per_step * len(steady) / sum(steady) if steady else None  # None: no step ran
    mfu = flops_per_token * tokens_per_s / (peak * par.world_size) if peak and steady else None

    ev = evaluate(model, data.val, tc.seq_len, eval_bs, device, precision=tc.precision) if par.evaluates else None
    weights, _ = par.full_state(wrapped)
    ev = par.broadcast(ev)
    model.eval()
    result = TrainResult(
        val_loss=ev["loss"],
        val_ppl=ev["ppl"],
        val_acc=ev["acc"],
        val_tokens=ev["tokens"],
        train_tokens_per_s=par.broadcast(tokens_per_s),
        mfu=par.broadcast(mfu),
        steps=step,
        n_params=n_params,
        vocab_size=data.vocab_size,
        out_dir=out,
        model=model,
    )
    if not par.is_rank0:
        return result
    save_weights(model, rd.weights, metadata={"step": str(step)}, state=weights)
    with open(rd.metrics, "a") as f:
        f.write(
            json_dumps({"step": step, "final": True, **{k: v for k, v in result.metrics().items() if k != "out_dir"}})
            + "\n"
        )
    atomic_write(rd.results, json_dumps(result.metrics(), indent=2) + "\n")
    log.info(
        "done: %d steps, val loss %.4f, ppl %.2f, acc %.4f, %s%s",
        step,
        ev["loss"],
        ev["ppl"],
        ev["acc"],
        f"{tokens_per_s:.0f} tokens/s" if tokens_per_s is not None else "no step timed",
        f", MFU {mfu:.1%}" if mfu is not None else "",
    )
    return result
