"""Multi-query associative recall (MQAR), the recall probe of the Zoology benchmark, and the ablation's
Recall column built on it.

Zoology (Arora et al., "Zoology: Measuring and Improving Recall in Efficient Language Models", 2023)
defines MQAR as: N key-value pairs at the start of a sequence, then every key queried once later; the model
must emit the key's value right after seeing the key again. It needs no download, separates architectures
by how far back they can look up a token, and is what the paper's Recall column (SWDE, FDA) measures in
spirit: attention heads buy recall, all-SWA layers lose it once the key lies outside every window.

Sequence layout (length ``seq_len``, ``pairs`` = N, vocabulary V)::

    k1 v1 k2 v2 ... kN vN | 0 0 k3 0 0 0 k1 0 ... 0
    <--- 2N context -----> <--- query region: (seq_len - 2N) // 2 slots of two tokens --->

- keys are drawn without replacement from ``[1, V/2)``, values without replacement from ``[V/2, V)``;
  token 0 is reserved as the filler of every non-query position (Zoology's ``random_non_queries=False``:
  random filler could repeat a key with a wrong value after it).
- key i is queried once, at query slot ``s_i``; the slots are drawn without replacement with probability
  proportional to ``(s + 1) ** (power_a - 1)`` (Zoology's power law, ``power_a = 0.01`` by default), so most
  queries come soon after the context and a few come late.
- ``labels`` is -100 everywhere except at each query key's position, where it holds that key's value
  (labels are aligned: ``labels[:, t]`` is the target of position t).
- One deliberate change from Zoology: the value does not follow the query key in the input (the slot's
  second token is filler). With it there, a model that cannot recall learns a shortcut, "a context value
  not yet seen in the query region", which answers the last query of every sequence for free; small
  attention models sit on that plateau (about 0.5 accuracy at N = 4) before they learn the lookup.

The Recall column: each ablation row's architecture (same config, fresh weights, vocabulary replaced by
the MQAR vocabulary) is trained on MQAR for a fixed budget, then evaluated on held-out sequences;
:func:`recall_accuracy` returns the fraction of query positions whose argmax prediction is the value.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hymba.config import ModelConfig, Section, TrainConfig, scale_settings
from hymba.data.dataset import IGNORE_INDEX
from hymba.runtime import autocast_context, autocast_dtype
from hymba.train import build_optimizer, lr_at
from hymba.train.trainer import TrainingDiverged

FILLER = 0

# SeedSequence streams: training batches and held-out evaluation batches never share a seed.
_TRAIN_STREAM = 1
_EVAL_STREAM = 2
_INIT_STREAM = 3
_CHECK_STREAM = 4
_SYNC_EVERY = 25  # train_mqar: steps between loss read-backs (see there)

LR_SCHEDULES = ("cosine", "constant")

log = logging.getLogger(__name__)


def _instance_problem(vocab: Any, seq_len: Any, pairs: Any) -> tuple[str, Any, str] | None:
    """What makes an MQAR instance impossible, as (argument, value, what would be valid); None if nothing."""
    if not isinstance(vocab, int) or vocab < 4:
        return "vocab", vocab, "must be an integer >= 4"
    if not isinstance(pairs, int) or pairs < 1:
        return "pairs", pairs, "must be an integer >= 1"
    n_keys, n_values = vocab // 2 - 1, vocab - vocab // 2
    if pairs > n_keys or pairs > n_values:
        return (
            "pairs",
            pairs,
            (
                f"vocab={vocab} offers {n_keys} keys in [1, {vocab // 2}) and {n_values} values in "
                f"[{vocab // 2}, {vocab}); use pairs <= {min(n_keys, n_values)}"
            ),
        )
    if not isinstance(seq_len, int) or seq_len < 4 * pairs:
        return (
            "seq_len",
            seq_len,
            (f"{pairs} pairs need seq_len >= {4 * pairs} (2N context tokens and N query slots of two tokens)"),
        )
    return None


def _gumbel_topk(rng: np.random.Generator, logp: np.ndarray, n: int, k: int) -> np.ndarray:
    """``n`` draws of ``k`` indices without replacement, index i with weight exp(logp[i]) (Gumbel top-k,
    the same distribution as sequential sampling without replacement)."""
    g = logp[None, :] - np.log(-np.log(rng.random((n, logp.shape[0]))))
    return np.argsort(-g, axis=1, kind="stable")[:, :k]


def mqar_batch(
    n: int, *, vocab: int, seq_len: int, pairs: int, power_a: float = 0.01, seed: int | np.random.SeedSequence = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` MQAR sequences, fully determined by the arguments.

    Args:
        n: number of sequences.
        vocab: V; keys come from [1, V/2), values from [V/2, V), 0 is the filler.
        seq_len: T, tokens per sequence.
        pairs: N key-value pairs, each queried once.
        power_a: exponent of the query-slot power law, weight (s + 1) ** (power_a - 1); smaller = queries
            concentrate closer to the context.
        seed: integer or ``numpy.random.SeedSequence``.

    Returns:
        ``(input_ids, labels)``, both int64 of shape [n, T]; labels are -100 except at query-key positions.
    """
    if problem := _instance_problem(vocab, seq_len, pairs):
        name, value, valid = problem
        raise ValueError(f"mqar: {name}={value!r} is invalid: {valid}")
    if not power_a > 0:
        raise ValueError(f"mqar: power_a={power_a!r} is invalid: must be > 0")
    rng = np.random.default_rng(seed)
    half = vocab // 2
    keys = 1 + _gumbel_topk(rng, np.zeros(half - 1), n, pairs)  # [n, N]
    values = half + _gumbel_topk(rng, np.zeros(vocab - half), n, pairs)  # [n, N]
    n_slots = (seq_len - 2 * pairs) // 2
    slot_logp = (power_a - 1.0) * np.log(np.arange(1, n_slots + 1, dtype=np.float64))
    slots = _gumbel_topk(rng, slot_logp, n, pairs)  # [n, N], slot of key i

    ids = np.full((n, seq_len), FILLER, dtype=np.int64)
    labels = np.full((n, seq_len), IGNORE_INDEX, dtype=np.int64)
    ids[:, 0 : 2 * pairs : 2] = keys
    ids[:, 1 : 2 * pairs : 2] = values
    rows = np.arange(n)[:, None]
    qpos = 2 * pairs + 2 * slots  # [n, N]
    ids[rows, qpos] = keys
    labels[rows, qpos] = values
    return torch.from_numpy(ids), torch.from_numpy(labels)


# ---- settings -----------------------------------------------------------------------------------------

Setting = tuple[int, int]  # (seq_len, pairs)


@dataclass
class MQARSettings(Section):
    """How one architecture is trained and scored on MQAR.

    ``train`` and ``eval`` are lists of ``(seq_len, pairs)``; training cycles through the ``train`` settings
    one batch each, evaluation averages accuracy over the ``eval`` settings with equal weight. Include
    lengths beyond the model's sliding window so that all-SWA rows show their recall loss.
    """

    vocab: int = 128
    train: tuple[Setting, ...] = ((64, 4), (128, 8), (256, 16))
    eval: tuple[Setting, ...] = ((64, 4), (128, 8), (256, 16))
    power_a: float = 0.01
    train_steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup_steps: int = 30
    lr_schedule: str = "cosine"  # linear warmup, then "cosine" decay to 10% of lr or "constant"
    grad_clip: float = 1.0
    eval_sequences: int = 256  # per eval setting
    eval_batch_size: int = 64
    # Early stop: every `check_every` steps score `check_sequences` per eval setting (a stream of their own,
    # never the final evaluation's) and stop once the mean reaches `stop_accuracy`. None = the fixed budget.
    # The lookup forms as a phase transition whose step varies a lot by architecture (heads, depth), so a
    # large `train_steps` cap with an early stop pays for each row only what it needs.
    stop_accuracy: float | None = None
    check_every: int = 100
    check_sequences: int = 64

    SECTION = "recall"

    def validate(self) -> None:
        for name in ("train", "eval"):
            value = getattr(self, name)
            try:
                settings = tuple((int(s[0]), int(s[1])) for s in value)
                ok = len(settings) > 0 and all(len(s) == 2 for s in value)
            except (TypeError, ValueError, IndexError):
                ok = False
            if not ok:
                self.invalid(name, "expected a non-empty list of [seq_len, pairs] pairs, e.g. [[64, 4], [256, 16]]")
            setattr(self, name, settings)
        self.check_ints("vocab", low=4)
        self.check_ints(
            "train_steps", "batch_size", "eval_sequences", "eval_batch_size", "check_every", "check_sequences"
        )
        self.check_ints("warmup_steps", low=0)
        self.check_choice("lr_schedule", LR_SCHEDULES)
        self.check_numbers("lr", "power_a", strict=True)
        self.check_numbers("weight_decay", "grad_clip", note=" (0 = off)")
        if self.stop_accuracy is not None:
            self.check_interval("stop_accuracy", 0, 1, "(]", note=" (or unset: the fixed budget)")
        for name in ("train", "eval"):
            for seq_len, pairs in getattr(self, name):
                if problem := _instance_problem(self.vocab, seq_len, pairs):
                    arg, value, valid = problem
                    self.invalid(
                        name,
                        f"the setting [{seq_len}, {pairs}] has {arg}={value!r}: {valid}",
                        [list(s) for s in getattr(self, name)],
                    )

    @property
    def max_seq_len(self) -> int:
        return max(s for s, _ in self.train + self.eval)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train"] = [list(s) for s in self.train]
        d["eval"] = [list(s) for s in self.eval]
        return d

    @classmethod
    def for_scale(cls, base: str) -> MQARSettings:
        """The ``[scales.<base>.recall]`` section of the roadmap presets (defaults where it is absent)."""
        return cls.from_dict(dict(scale_settings(base).get("recall", {})), where=f"scales.{base}.recall")


def _coerce(settings: MQARSettings | dict[str, Any]) -> MQARSettings:
    if isinstance(settings, MQARSettings):
        return settings
    if isinstance(settings, dict):
        return MQARSettings.from_dict(settings)
    raise ValueError(f"MQAR settings must be MQARSettings or a dict, got {type(settings).__name__}")


# ---- train and evaluate -------------------------------------------------------------------------------


def mqar_model_config(model_cfg: ModelConfig, settings: MQARSettings) -> ModelConfig:
    """The row's architecture with the vocabulary replaced by the MQAR vocabulary."""
    return model_cfg.replace(vocab_size=settings.vocab)


def _train_config(s: MQARSettings) -> TrainConfig:
    """The MQAR budget as the trainer's optimisation settings, so MQAR uses the same AdamW parameter groups
    and warmup/cosine schedule as language-model training ("constant" = no decay after warmup)."""
    return TrainConfig(
        lr=s.lr,
        warmup_steps=s.warmup_steps,
        max_steps=s.train_steps,
        weight_decay=s.weight_decay,
        grad_clip=s.grad_clip,
        min_lr_ratio=0.1 if s.lr_schedule == "cosine" else 1.0,
        batch_size=s.batch_size,
        seq_len=max(t for t, _ in s.train),
        progress=False,
    )


def train_mqar(
    model: torch.nn.Module,
    settings: MQARSettings | dict[str, Any],
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    callback: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` in place on MQAR; returns the loss of every step.

    ``callback(step, loss)`` runs after every optimiser step (e.g. to evaluate a learning curve). With
    ``settings.stop_accuracy`` training ends early once a periodic check reaches it (fewer losses returned).
    A non-finite loss or gradient raises ``TrainingDiverged`` (the ablation records the row's recall as failed)."""
    s = _coerce(settings)
    tc = _train_config(s)
    model.train()
    dev = torch.device(device)
    opt = build_optimizer(model, tc)
    amp = autocast_dtype(tc.precision, dev)  # bf16 on CUDA, as language-model training
    # The host reads the loss back only every `_SYNC_EVERY` steps (every step with a callback or an early-stop
    # check due), so that on a GPU it can queue the next steps' kernels while the current ones run (small MQAR
    # steps are launch-bound); the speed-up has not been measured.
    pinned = dev.type == "cuda"
    losses: list[float] = []
    pending: list[torch.Tensor] = []  # [loss, grad_norm] of the steps not read back yet
    micro = s.batch_size  # rows per forward/backward; halved (and the batch accumulated) when memory runs out
    for step in range(s.train_steps):
        seq_len, pairs = s.train[step % len(s.train)]
        ids, labels = mqar_batch(
            s.batch_size,
            vocab=s.vocab,
            seq_len=seq_len,
            pairs=pairs,
            power_a=s.power_a,
            seed=np.random.SeedSequence([seed, _TRAIN_STREAM, step]),
        )
        if pinned:
            ids, labels = ids.pin_memory(), labels.pin_memory()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tc)
        loss, micro = _loss_and_grads(model, opt, ids, labels, dev, amp, pinned, micro, seq_len)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip or math.inf)
        opt.step()
        pending.append(torch.stack([loss.detach().float(), grad_norm.float()]))
        check = s.stop_accuracy is not None and (step + 1) % s.check_every == 0
        if callback is not None or check or (step + 1) % _SYNC_EVERY == 0 or step + 1 == s.train_steps:
            _read_back(pending, losses, s)
            if callback is not None:
                callback(step, losses[-1])
        if check:
            per = _accuracy(model, s, device, seed, _CHECK_STREAM, s.check_sequences)
            if sum(per.values()) / len(per) >= s.stop_accuracy:
                break
    return losses


def _loss_and_grads(model, opt, ids, labels, dev, amp, pinned: bool, micro: int, seq_len: int):
    """Forward and backward of one batch in micro-batches of ``micro`` rows, gradients accumulated so that
    they equal the whole batch's (each part's mean loss weighted by its share of the labelled positions).
    Out of memory, the step restarts with half the rows per micro-batch, logged once per halving: the
    optimiser step, and so the learning, stay those of the full batch. Returns (loss, micro)."""
    n = int((labels != IGNORE_INDEX).sum())
    while True:
        opt.zero_grad(set_to_none=True)
        try:
            total = torch.zeros((), device=dev)
            for b in range(0, ids.shape[0], micro):
                x, y = ids[b : b + micro], labels[b : b + micro]
                share = int((y != IGNORE_INDEX).sum()) / n
                with autocast_context(dev, amp):
                    part = model(x.to(dev, non_blocking=pinned), labels=y.to(dev, non_blocking=pinned)).loss
                (part * share).backward()
                total += part.detach().float() * share
            return total, micro
        except torch.OutOfMemoryError:
            if micro == 1:
                raise
        # outside the except block, so that the failed step's tensors are freed before the cache is emptied
        opt.zero_grad(set_to_none=True)
        total = part = None
        _empty_cache(dev)
        micro = (micro + 1) // 2
        log.warning(
            "recall: a batch of %d x %d tokens does not fit in memory; accumulating gradients over "
            "micro-batches of %d rows (same optimiser steps)",
            ids.shape[0],
            seq_len,
            micro,
        )


def _empty_cache(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def _read_back(pending: list[torch.Tensor], losses: list[float], s: MQARSettings) -> None:
    """Append the pending steps' losses to ``losses``; a non-finite loss or gradient norm raises
    ``TrainingDiverged`` naming the first such step (a diverged run must not be scored as recall)."""
    for loss_val, grad_norm in torch.stack(pending).tolist():
        step = len(losses) + 1
        if not (math.isfinite(loss_val) and math.isfinite(grad_norm)):
            raise TrainingDiverged(
                f"MQAR training diverged at step {step} of {s.train_steps}: loss={loss_val}, "
                f"grad_norm={grad_norm} (recall.lr={s.lr}); lower recall.lr or raise "
                "recall.warmup_steps"
            )
        losses.append(loss_val)
    pending.clear()


@torch.no_grad()
def evaluate_mqar(
    model: torch.nn.Module,
    settings: MQARSettings | dict[str, Any],
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[Setting, float]:
    """Accuracy (exact argmax at query positions) on held-out sequences, per ``(seq_len, pairs)`` setting."""
    s = _coerce(settings)
    return _accuracy(model, s, device, seed, _EVAL_STREAM, s.eval_sequences)


@torch.no_grad()
def _accuracy(
    model: torch.nn.Module, s: MQARSettings, device: str | torch.device, seed: int, stream: int, sequences: int
) -> dict[Setting, float]:
    was_training = model.training
    model.eval()
    dev = torch.device(device)
    amp = autocast_dtype("auto", dev)
    rows = s.eval_batch_size
    out: dict[Setting, float] = {}
    for i, (seq_len, pairs) in enumerate(s.eval):
        ids, labels = mqar_batch(
            sequences,
            vocab=s.vocab,
            seq_len=seq_len,
            pairs=pairs,
            power_a=s.power_a,
            seed=np.random.SeedSequence([seed, stream, i]),
        )
        correct = total = b = 0
        while b < sequences:  # out of memory, the rows per forward are halved (logged), never the sequences
            x, y = ids[b : b + rows].to(device), labels[b : b + rows].to(device)
            try:
                with autocast_context(dev, amp):
                    pred = model(x).logits.argmax(-1)
            except torch.OutOfMemoryError:
                if rows == 1:
                    raise
                pred = None
            if pred is None:
                _empty_cache(dev)
                rows = (rows + 1) // 2
                log.warning(
                    "recall: evaluating %d x %d tokens does not fit in memory; %d rows at a time",
                    x.shape[0],
                    seq_len,
                    rows,
                )
                continue
            mask = y != IGNORE_INDEX
            correct += int((pred[mask] == y[mask]).sum())
            total += int(mask.sum())
            b += x.shape[0]
        out[(seq_len, pairs)] = correct / total
    model.train(was_training)
    return out


@dataclass
class RecallResult:
    """One architecture's MQAR run: mean accuracy, per-setting accuracy, final training loss, seconds; the
    steps actually trained are ``len(losses)`` (fewer than the budget after an early stop)."""

    accuracy: float
    per_setting: dict[Setting, float]
    final_loss: float
    seconds: float
    losses: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "final_loss": self.final_loss,
            "seconds": self.seconds,
            "steps": len(self.losses),
            "per_setting": [{"seq_len": t, "pairs": n, "accuracy": a} for (t, n), a in self.per_setting.items()],
        }


def run_recall(
    model_cfg: ModelConfig,
    settings: MQARSettings | dict[str, Any],
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> RecallResult:
    """Train a fresh model of ``model_cfg``'s architecture on MQAR, then evaluate it (see module docstring)."""
    from hymba import HymbaLM

    s = _coerce(settings)
    t0 = time.perf_counter()
    cfg = mqar_model_config(model_cfg, s)
    with torch.random.fork_rng(devices=[]):  # fresh weights from `seed`, caller's RNG left untouched
        torch.manual_seed(int(np.random.SeedSequence([seed, _INIT_STREAM]).generate_state(1)[0]))
        model = HymbaLM(cfg).to(device)
    losses = train_mqar(model, s, device=device, seed=seed)
    per = evaluate_mqar(model, s, device=device, seed=seed)
    acc = sum(per.values()) / len(per)
    tail = losses[-max(1, len(losses) // 20) :]
    return RecallResult(acc, per, sum(tail) / len(tail), time.perf_counter() - t0, losses)


def recall_accuracy(
    model_cfg: ModelConfig,
    settings: MQARSettings | dict[str, Any],
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> float:
    """MQAR accuracy in [0, 1] of ``model_cfg``'s architecture, averaged over ``settings.eval``.

    The model (fresh weights, vocabulary = ``settings.vocab``) is trained for ``settings.train_steps`` and
    scored on held-out sequences; the same ``seed`` gives the same number on the same device.
    """
    return run_recall(model_cfg, settings, device=device, seed=seed).accuracy


__all__ = [
    "MQARSettings",
    "RecallResult",
    "evaluate_mqar",
    "mqar_batch",
    "mqar_model_config",
    "recall_accuracy",
    "run_recall",
    "train_mqar",
]
