"""Train one language model on a prepared corpus and evaluate it.

AdamW with decoupled weight decay on matrices only, linear warm-up then cosine decay, bf16 autocast on CUDA
(fp32 on CPU), gradient clipping and accumulation, optional ``torch.compile``. The run directory holds the
resolved config (``config.json``/``config.toml``), the git revision (``run.json``), ``train.log``,
``metrics.jsonl``, checkpoints, and at the end ``model.safetensors`` + ``tokenizer.json`` (what ``hymba eval``
loads) and ``results.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hymba.config import ModelConfig, RunConfig, TrainConfig
from hymba.data import IGNORE_INDEX, TrainBatches, prepare, val_batches
from hymba.model import HymbaLM
from hymba.io import atomic_write
from hymba.train.checkpoint import (latest_checkpoint, load_checkpoint, save_checkpoint,
                                    save_weights)

log = logging.getLogger(__name__)

# dense bf16 tensor-core peak FLOP/s by GPU name, for MFU (train.peak_flops overrides)
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN or infinite."""


@dataclass
class TrainResult:
    """Final metrics of a run and the trained model (in eval mode)."""

    val_loss: float
    val_ppl: float
    val_acc: float
    val_tokens: int
    train_tokens_per_s: float
    mfu: float | None  # None on CPU or an unknown accelerator
    steps: int
    n_params: int
    vocab_size: int
    out_dir: Path
    model: HymbaLM = dataclasses.field(repr=False)

    def metrics(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()
                if k != "model"}


# ---- optimisation -----------------------------------------------------------------------------------------
def no_decay(name: str, p: torch.Tensor) -> bool:
    """Parameters left out of weight decay: norms and biases (ndim < 2), embeddings, meta tokens, and the SSM's
    A_log (decay would pull A towards -1, i.e. change the state's time constants, not shrink a weight)."""
    return p.ndim < 2 or "embed" in name or "meta_tokens" in name or name.endswith("A_log")


def build_optimizer(model: nn.Module, train_cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over two parameter groups: with and without weight decay (:func:`no_decay`)."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": train_cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(groups, lr=train_cfg.lr, betas=(train_cfg.beta1, train_cfg.beta2), eps=train_cfg.eps,
                             fused=fused or None)


def lr_at(step: int, train_cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up over ``warmup_steps``, then cosine
    decay to ``lr * min_lr_ratio`` at ``max_steps``."""
    c = train_cfg
    if step < c.warmup_steps:
        return c.lr * (step + 1) / c.warmup_steps
    span = max(1, c.max_steps - c.warmup_steps)
    progress = min(1.0, (step - c.warmup_steps) / span)
    floor = c.lr * c.min_lr_ratio
    return floor + 0.5 * (c.lr - floor) * (1.0 + math.cos(math.pi * progress))


# ---- device and precision ---------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} is invalid: CUDA is not available (use auto or cpu)")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA, none (fp32) on CPU, unless ``precision`` says otherwise."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def peak_flops(device: torch.device, train_cfg: TrainConfig) -> float | None:
    if device.type != "cuda":
        return None
    if train_cfg.peak_flops:
        return train_cfg.peak_flops
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in name:
            return flops
    log.warning("MFU not reported: peak FLOP/s of %r unknown (set train.peak_flops)", name)
    return None


# ---- evaluation -------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, val_tokens, seq_len: int, batch_size: int, device: str | torch.device,
             max_tokens: int = 0, precision: str = "auto") -> dict[str, float]:
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
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src,
                                capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": rev.stdout.strip(), "dirty": bool(status.stdout.strip())}


def _check_resumable(out: Path, resolved: RunConfig) -> None:
    path = out / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: {path} is missing")
    saved = json.loads(path.read_text())
    now = resolved.to_dict()
    diffs = [f"{s}.{k}: {saved.get(s, {}).get(k)!r} -> {v!r}" for s in ("model", "data")
             for k, v in now[s].items() if saved.get(s, {}).get(k) != v and (s, k) != ("data", "cache_dir")]
    if diffs:
        raise ValueError(f"cannot resume {out}: the config changed ({'; '.join(diffs)})")
    changed = [k for k, v in now["train"].items() if saved.get("train", {}).get(k) != v]
    if changed:
        log.warning("resuming with changed train settings: %s", ", ".join(changed))


def _write_run_files(out: Path, resolved: RunConfig, tokenizer) -> None:
    atomic_write(out / "config.json", (json.dumps(resolved.to_dict(), indent=2) + "\n").encode())
    atomic_write(out / "config.toml", resolved.to_toml().encode())
    tokenizer.save(out / "tokenizer.json")
    run = {"git": git_revision(), "argv": sys.argv, "torch": torch.__version__, "python": sys.version.split()[0],
           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write(out / "run.json", (json.dumps(run, indent=2) + "\n").encode())


class _MetricsLog:
    """``metrics.jsonl`` (appended, so a resumed run continues the file) and optionally TensorBoard."""

    def __init__(self, out: Path, tensorboard: bool):
        self.file = open(out / "metrics.jsonl", "a")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError("train.tensorboard=true needs the tensorboard package "
                                 "(pip install 'hymba[tensorboard]')") from e
            self.tb = SummaryWriter(str(out / "tensorboard"))

    def write(self, step: int, **values: Any) -> None:
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


# ---- training ---------------------------------------------------------------------------------------------
def train(run_cfg: RunConfig, out_dir: str | Path, *, resume: bool = False,
          model_config_override: ModelConfig | None = None) -> TrainResult:
    """Train ``run_cfg`` into ``out_dir`` (resuming from its latest checkpoint if ``resume``) and evaluate.

    The model is ``model_config_override or run_cfg.model`` with ``vocab_size`` set to the tokenizer's.
    Raises ``TrainingDiverged`` when the loss or gradient norm stops being finite.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    pkg_log = logging.getLogger("hymba")
    pkg_log.addHandler(handler)
    old_level = pkg_log.level
    if pkg_log.getEffectiveLevel() > logging.INFO:
        pkg_log.setLevel(logging.INFO)
    try:
        return _train(run_cfg, out, resume, model_config_override)
    finally:
        pkg_log.removeHandler(handler)
        pkg_log.setLevel(old_level)
        handler.close()


def _train(run_cfg: RunConfig, out: Path, resume: bool, override: ModelConfig | None) -> TrainResult:
    tc = run_cfg.train
    device = resolve_device(tc.device)
    amp = autocast_dtype(tc.precision, device)
    data = prepare(run_cfg.data)
    log.info("corpus %s: %d train / %d val tokens, vocabulary %d (%s)", run_cfg.data.source, len(data.train),
             len(data.val), data.vocab_size, "cached" if data.cache_hit else "new")
    model_cfg = (override or run_cfg.model).replace(vocab_size=data.vocab_size)
    resolved = RunConfig(model=model_cfg, data=run_cfg.data, train=tc)

    ckpt = latest_checkpoint(out)
    if resume:
        if ckpt is None:
            raise FileNotFoundError(f"cannot resume: no checkpoint under {out / 'checkpoints'}")
        _check_resumable(out, resolved)
    elif ckpt is not None:
        raise ValueError(f"{out} already holds checkpoints ({ckpt.name}); pass --resume or choose another --out")
    _write_run_files(out, resolved, data.tokenizer)

    torch.manual_seed(tc.seed)
    model = HymbaLM(model_cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = build_optimizer(model, tc)
    batches = TrainBatches(data.train, tc.seq_len, tc.batch_size, seed=tc.seed)
    step = 0
    if resume:
        state = load_checkpoint(ckpt, model, optimizer)
        step = int(state["step"])
        batches.load_state_dict(state["data"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        log.info("resumed from %s at step %d", ckpt, step)
    log.info("model: %d parameters, %s; device %s, %s", n_params, model.param_breakdown(), device,
             "bf16 autocast" if amp else "fp32")
    forward = torch.compile(model) if tc.compile else model
    peak = peak_flops(device, tc)
    flops_per_token = model.flops_per_token(tc.seq_len)
    tokens_per_step = tc.batch_size * tc.seq_len * tc.grad_accum
    eval_bs = tc.eval_batch_size or tc.batch_size

    def checkpoint_state() -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        return {"data": batches.state_dict(), "rng": rng}

    metrics = _MetricsLog(out, tc.tensorboard)
    step_times: list[float] = []
    model.train()
    from tqdm.auto import tqdm

    bar = tqdm(total=tc.max_steps, initial=step, disable=not tc.progress, unit="step", dynamic_ncols=True)
    try:
        while step < tc.max_steps:
            t0 = time.perf_counter()
            lr = lr_at(step, tc)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for _ in range(tc.grad_accum):
                x, y = next(batches)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with autocast_context(device, amp):
                    loss = forward(x, labels=y).loss / tc.grad_accum
                loss.backward()
                loss_sum += loss.detach()
            loss_val = float(loss_sum)  # also synchronises, so step times are real
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip or math.inf))
            if not (math.isfinite(loss_val) and math.isfinite(grad_norm)):
                last = latest_checkpoint(out)
                raise TrainingDiverged(f"training diverged at step {step + 1}: loss={loss_val}, "
                                       f"grad_norm={grad_norm} (lr={lr:.3g}); last good checkpoint: "
                                       f"{last if last else 'none'}; lower train.lr or raise warmup_steps")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            step_times.append(time.perf_counter() - t0)
            tok_s = tokens_per_step / step_times[-1]
            bar.update(1)
            bar.set_postfix(loss=f"{loss_val:.3f}", tok_s=f"{tok_s:,.0f}", refresh=False)
            if step % tc.log_every == 0 or step == tc.max_steps:
                metrics.write(step, loss=loss_val, lr=lr, grad_norm=grad_norm, tokens_per_s=tok_s,
                              tokens=step * tokens_per_step)
            if tc.eval_every and step % tc.eval_every == 0 and step < tc.max_steps:
                ev = evaluate(model, data.val, tc.seq_len, eval_bs, device, tc.eval_max_tokens, tc.precision)
                metrics.write(step, val_loss=ev["loss"], val_ppl=ev["ppl"], val_acc=ev["acc"])
                log.info("step %d: val loss %.4f, ppl %.2f, acc %.4f", step, ev["loss"], ev["ppl"], ev["acc"])
            if (tc.ckpt_every and step % tc.ckpt_every == 0) or step == tc.max_steps:
                save_checkpoint(out, step, model, optimizer, checkpoint_state(), keep=tc.keep_checkpoints)
    finally:
        bar.close()
        metrics.close()

    # steady state: leave out warm-up / compilation steps, but always keep at least one
    skip = min(tc.throughput_skip_steps, max(0, len(step_times) - 1))
    steady = step_times[skip:]
    tokens_per_s = tokens_per_step * len(steady) / sum(steady) if steady else float("nan")
    mfu = flops_per_token * tokens_per_s / peak if peak and steady else None

    ev = evaluate(model, data.val, tc.seq_len, eval_bs, device, precision=tc.precision)
    save_weights(model, out / "model.safetensors", metadata={"step": str(step)})
    model.eval()
    result = TrainResult(val_loss=ev["loss"], val_ppl=ev["ppl"], val_acc=ev["acc"], val_tokens=ev["tokens"],
                         train_tokens_per_s=tokens_per_s, mfu=mfu, steps=step, n_params=n_params,
                         vocab_size=data.vocab_size, out_dir=out, model=model)
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": step, "final": True, **{k: v for k, v in result.metrics().items()
                                                            if k != "out_dir"}}) + "\n")
    atomic_write(out / "results.json", (json.dumps(result.metrics(), indent=2) + "\n").encode())
    log.info("done: %d steps, val loss %.4f, ppl %.2f, acc %.4f, %.0f tokens/s%s", step, ev["loss"], ev["ppl"],
             ev["acc"], tokens_per_s, f", MFU {mfu:.1%}" if mfu is not None else "")
    return result
