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

The Recall column follows Zoology's protocol. Each ablation row's layer plan at the probe's size
(:func:`probe_config`: fresh weights, MQAR vocabulary) is trained once per learning rate of a sweep, each
run up to a step cap with an early stop at a target accuracy, its learning curve kept; the row is scored at
its best learning rate (:func:`score_sweep`), as the fraction of held-out query positions whose argmax
prediction is the value. MQAR is a synthetic proxy for the paper's Recall (SWDE, FDA: information
extraction from long documents): compare orderings of rows, not values.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hymba.config import ModelConfig, Section, TrainConfig, scale_settings
from hymba.data.dataset import IGNORE_INDEX
from hymba.io import atomic_path
from hymba.runtime import autocast_context, autocast_dtype
from hymba.train.step import (
    GraphedStep,
    TrainingDiverged,
    accumulate,
    build_optimizer,
    check_finite,
    compile_model,
    lr_at,
    set_lr,
)

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


def query_targets(labels: torch.Tensor, pairs: int) -> torch.Tensor:
    """MQAR ``labels`` [B, T] (exactly ``pairs`` labelled positions a row, as :func:`mqar_batch` makes them) as
    ``[B, 2, pairs]``: the query positions in order (``[:, 0]``) and their values (``[:, 1]``)."""
    pos = torch.sort((labels == IGNORE_INDEX).to(torch.uint8), dim=1, stable=True).indices[:, :pairs]
    return torch.stack([pos, labels.gather(1, pos)], dim=1)


class QueryLoss(torch.nn.Module):
    """``model`` with MQAR's training loss: ``forward(input_ids, labels=targets)``, targets from
    :func:`query_targets`; the mean cross-entropy of ``model(input_ids, labels=labels).loss`` over the
    labelled positions, with the LM head run at the B x pairs query positions only instead of all B x T (a
    fourth to an eighth of them; at vocabulary 8192 the full logits are most of a probe step's memory). What
    the optimiser steps (graphed, compiled or eager) call; the parameters are the model's."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor):
        pos, values = labels.unbind(1)
        return self.model(input_ids, labels=values, positions=pos)


# ---- settings -----------------------------------------------------------------------------------------

Setting = tuple[int, int]  # (seq_len, pairs)


@dataclass
class MQARSettings(Section):
    """How one architecture is trained and scored on MQAR (Zoology's protocol, see :func:`recall_sweep`).

    ``train`` and ``eval`` are lists of ``(seq_len, pairs)``; training cycles through the ``train`` settings
    one batch each, evaluation averages accuracy over the ``eval`` settings with equal weight. Include
    lengths beyond the probe's sliding window so that all-SWA rows show their recall loss.

    The sweep: every learning rate of ``lrs`` is a run of its own (fresh weights, ``seeds`` seeds each);
    the row is scored at the learning rate whose mean accuracy over the seeds is best, as Zoology reports
    each model at its best learning rate (SSMs learn MQAR only in a narrow band of them).

    The probe size (``n_layers``, ``d_model``, ``head_dim``, ``window``, ``n_meta_tokens``, ``attn_backend``;
    unset = the row's own value): the row's layer plan at another depth and width, derived in one place
    (:func:`probe_config`), which refuses a size that loses one of the row's features.
    """

    vocab: int = 128
    train: tuple[Setting, ...] = ((64, 4), (128, 8), (256, 16))
    eval: tuple[Setting, ...] = ((64, 4), (128, 8), (256, 16))
    power_a: float = 0.01
    train_steps: int = 600  # the cap of each run; an early stop at `target` ends it sooner
    batch_size: int = 32
    lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)  # the learning-rate sweep (peak LR of each run)
    seeds: int = 1  # runs per learning rate (seeds train.seed, train.seed + 1, ...); the mean is scored
    weight_decay: float = 0.1
    warmup_steps: int = 30
    lr_schedule: str = "cosine"  # linear warmup, then "cosine" decay to 10% of lr or "constant"
    grad_clip: float = 1.0
    eval_sequences: int = 256  # per eval setting
    eval_batch_size: int = 64
    # Learning curve and early stop: every `eval_every` steps score `check_sequences` per eval setting (a
    # stream of their own, never the final evaluation's), keep (step, loss, accuracy) as a curve point, and
    # stop once the mean reaches `target` (None = the fixed budget). The lookup forms as a phase transition
    # whose step varies a lot by architecture, so a large cap with an early stop pays only what each needs.
    target: float | None = 0.99
    eval_every: int = 100
    check_sequences: int = 64
    # the probe's size (None = the row's value; see probe_config)
    n_layers: int | None = None
    d_model: int | None = None
    head_dim: int | None = None
    window: int | None = None
    n_meta_tokens: int | None = None
    attn_backend: str | None = None
    # CUDA only: replay each training-step shape as one CUDA graph (GraphedStep; the probe's small steps are
    # bound by kernel launches). Falls back to eager steps, with a logged note, where capture fails.
    cuda_graphs: bool = True
    # torch.compile the probe for its training steps (hymba.train.step.compile_model; with cuda_graphs, the
    # graphs replay Inductor's fused kernels): the probe's step is a long tail of small elementwise kernels
    # (benchmarks/results/2026-12-04-h200-s19.md). The same steps up to rounding; a compile per training length.
    # Not yet timed on a GPU.
    compile: bool = False

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
        lrs = self.lrs
        if (
            not isinstance(lrs, (list, tuple))
            or not lrs
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in lrs)
            or not all(math.isfinite(x) and x > 0 for x in lrs)
            or len(set(lrs)) != len(lrs)
        ):
            self.invalid("lrs", "expected a non-empty list of distinct learning rates > 0, e.g. [3e-4, 1e-3, 3e-3]")
        self.lrs = tuple(float(x) for x in lrs)
        self.check_ints("vocab", low=4)
        self.check_ints("train_steps", "batch_size", "eval_sequences", "eval_batch_size", "eval_every")
        self.check_ints("check_sequences", "seeds")
        self.check_ints("warmup_steps", low=0)
        self.check_choice("lr_schedule", LR_SCHEDULES)
        self.check_numbers("power_a", strict=True)
        self.check_numbers("weight_decay", "grad_clip", note=" (0 = off)")
        if self.target is not None:
            self.check_interval("target", 0, 1, "(]", note=" (or unset: the fixed budget)")
        for name in ("n_layers", "d_model", "head_dim", "window"):
            if getattr(self, name) is not None:
                self.check_ints(name, note=" (or unset: the row's value)")
        if self.n_meta_tokens is not None:
            self.check_ints("n_meta_tokens", low=0, note=" (or unset: the row's value)")
        if self.attn_backend is not None:
            from hymba.config.model import backends

            self.check_choice("attn_backend", backends("attention"), " (or unset: the row's value)")
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
        d["lrs"] = list(self.lrs)
        return d

    def result_settings(self) -> dict[str, Any]:
        """The settings a recall result depends on, as recorded beside it: :meth:`to_dict` without
        ``cuda_graphs`` and ``compile`` (the same steps either way, up to rounding)."""
        d = self.to_dict()
        d.pop("cuda_graphs")
        d.pop("compile")
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


def plan_features(c: ModelConfig) -> dict[str, Any]:
    """What distinguishes a row's layer plan, independent of depth and width: the branches, the attention
    span (all global, all sliding-window, or how many global layers), KV sharing, meta tokens, fusion, GQA."""
    n_global = len(c.global_layers())
    if c.n_heads == 0:
        span = "none"
    elif not c.swa_layers():
        span = "all global"
    elif n_global == 0:
        span = "all SWA"
    else:
        span = f"{n_global} global"
    return {
        "attention": c.n_heads > 0,
        "ssm": c.ssm,
        "span": span,
        "kv_sharing": any(len(g) > 1 for g in c.kv_groups()),
        "meta_tokens": c.n_meta_tokens > 0,
        "fusion": c.fusion if c.n_heads > 0 and c.ssm else None,
        "gqa": 0 < c.kv_heads < c.n_heads,
    }


_PROBE_FIELDS = ("n_layers", "d_model", "head_dim", "window", "n_meta_tokens", "attn_backend")


def probe_config(model_cfg: ModelConfig, settings: MQARSettings) -> ModelConfig:
    """The recall probe's model for a row: the row's architecture with the MQAR vocabulary and the probe size
    of ``settings`` (its ``n_layers``, ``d_model``, ... where set). The row's layer plan carries over as a
    rule, not as indices: ``swa_plan = "default"`` stays first/middle/last global at the probe's depth, an
    explicit list of global layers is mapped proportionally; head counts, GQA, fusion and KV sharing stay.
    Sizes the row derives from ``d_model`` (FFN width, dt rank) are derived again. A probe that loses one of
    the row's :func:`plan_features` (e.g. 4 layers leave no two adjacent SWA layers to share K/V) or whose
    window reaches the longest MQAR sequence (SWA rows would not show their loss) is a ``ValueError`` naming
    the ``recall.*`` key."""
    s = _coerce(settings)
    changes: dict[str, Any] = {"vocab_size": s.vocab}
    for name in _PROBE_FIELDS:
        value = getattr(s, name)
        if value is None or (name == "n_meta_tokens" and model_cfg.n_meta_tokens == 0):
            continue  # meta tokens only where the row has them
        changes[name] = value
    if "d_model" in changes and changes["d_model"] != model_cfg.d_model:
        changes.update(d_ff=None, dt_rank=None)
    L, L2 = model_cfg.n_layers, changes.get("n_layers", model_cfg.n_layers)
    if L2 != L:
        if isinstance(model_cfg.swa_plan, list):
            changes["swa_plan"] = sorted({round(i * (L2 - 1) / max(1, L - 1)) for i in model_cfg.swa_plan})
        if model_cfg.kv_share_groups is not None:
            raise ValueError(
                f"recall.n_layers={L2} is invalid: the row's explicit model.kv_share_groups cannot be mapped to "
                "another depth (unset recall.n_layers)"
            )
    try:
        probe = model_cfg.replace(**changes)
    except ValueError as e:
        keys = ", ".join(f"recall.{k}" for k in changes if k != "vocab_size")
        raise ValueError(f"the recall probe ({keys or 'recall.vocab'}): {e}") from None
    before, after = plan_features(model_cfg), plan_features(probe)
    lost = [f"{k}: {before[k]} -> {after[k]}" for k in before if before[k] != after[k]]
    if lost:
        key = "n_layers" if s.n_layers is not None else "n_meta_tokens"
        raise ValueError(
            f"recall.{key}={getattr(s, key)!r} is invalid: the probe loses the row's layer-plan features "
            f"({'; '.join(lost)}); e.g. KV sharing among SWA layers next to first/middle/last global layers "
            "needs n_layers >= 6"
        )
    if probe.swa_layers() and probe.window >= s.max_seq_len:
        raise ValueError(
            f"recall.window={probe.window} is invalid: the probe's sliding window must be shorter than the "
            f"longest MQAR sequence ({s.max_seq_len} tokens) for SWA rows to show their recall loss"
        )
    return probe


def _train_config(s: MQARSettings, lr: float) -> TrainConfig:
    """The MQAR budget as the trainer's optimisation settings, so MQAR uses the same AdamW parameter groups
    and warmup/cosine schedule as language-model training ("constant" = no decay after warmup)."""
    return TrainConfig(
        lr=lr,
        warmup_steps=s.warmup_steps,
        max_steps=s.train_steps,
        weight_decay=s.weight_decay,
        grad_clip=s.grad_clip,
        min_lr_ratio=0.1 if s.lr_schedule == "cosine" else 1.0,
        batch_size=s.batch_size,
        seq_len=max(t for t, _ in s.train),
        progress=False,
    )


def _single_lr(s: MQARSettings, lr: float | None) -> float:
    if lr is not None:
        return float(lr)
    if len(s.lrs) != 1:
        raise ValueError(f"recall.lrs={list(s.lrs)!r} holds a sweep: pass lr= for one run, or use recall_sweep")
    return s.lrs[0]


def train_mqar(
    model: torch.nn.Module,
    settings: MQARSettings | dict[str, Any],
    *,
    lr: float | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    callback: Callable[[int, float], None] | None = None,
    curve: list[dict[str, float]] | None = None,
    checkpoint: str | Path | None = None,
    resumed: list[dict[str, float]] | None = None,
) -> list[float]:
    """Train ``model`` in place on MQAR at peak learning rate ``lr`` (default: the one of ``settings.lrs``);
    returns the loss of every step.

    ``checkpoint``: a file that makes the run resumable. Every ``settings.eval_every`` steps the run's state
    (weights, optimizer, losses, curve) is written there atomically; a run started with a file left by an
    interrupted run of the same settings, learning rate and seed continues from it and ends as the
    uninterrupted run would (the batches are a function of the step). A file of another run is ignored, with
    a logged note, and overwritten. The caller removes it once the run's result is kept. ``resumed`` (a list)
    receives ``{"step", "seconds"}`` per interruption: the step it resumed from and the seconds spent before.

    ``callback(step, loss)`` runs after every optimiser step. Every ``settings.eval_every`` steps, when
    ``curve`` is a list or ``settings.target`` is set, the model is scored on the check stream: the point
    ``{"step", "loss" (mean since the last point), "accuracy"}`` is appended to ``curve``, and training ends
    once the accuracy reaches ``settings.target`` (fewer losses returned). A non-finite loss or gradient
    raises ``TrainingDiverged`` (the ablation records the run as failed, never as 0% recall)."""
    s = _coerce(settings)
    lr = _single_lr(s, lr)
    tc = _train_config(s, lr)
    model.train()
    dev = torch.device(device)
    graphed = s.cuda_graphs and dev.type == "cuda"
    opt = build_optimizer(model, tc, capturable=graphed)
    amp = autocast_dtype(tc.precision, dev)  # bf16 on CUDA, as language-model training
    identity = _partial_identity(s, lr, seed)
    partial = _load_partial(checkpoint, identity, model, opt) if checkpoint is not None else None
    start = 0
    losses: list[float] = []
    since = 0  # losses[since:] are the steps after the last curve point
    history: list[dict[str, float]] = []  # the run's earlier segments: {"step" resumed from, "seconds" spent}
    t0 = time.perf_counter()
    if partial is not None:
        start, losses, since = partial["step"], list(partial["losses"]), partial["since"]
        history = list(partial["history"]) + [{"step": start, "seconds": partial["seconds"]}]
        if curve is not None:
            curve[:] = partial["curve"]
        if resumed is not None:
            resumed[:] = history
        log.info("recall: resuming the run (lr %g, seed %d) from step %d of %s", lr, seed, start, checkpoint)
    step_fn = _StepFn(compile_model(QueryLoss(model)) if s.compile else QueryLoss(model), opt, dev, amp, s, graphed)
    # The host reads the loss back only every `_SYNC_EVERY` steps (every step with a callback or a check
    # due), so that on a GPU it can queue the next steps' kernels while the current ones run.
    pinned = dev.type == "cuda"
    pending: list[torch.Tensor] = []  # [loss, grad_norm] of the steps not read back yet
    checking = s.target is not None or curve is not None
    saved_curve: list[dict[str, float]] = curve if curve is not None else []
    for step in range(start, s.train_steps):
        seq_len, pairs = s.train[step % len(s.train)]
        ids, labels = mqar_batch(
            s.batch_size,
            vocab=s.vocab,
            seq_len=seq_len,
            pairs=pairs,
            power_a=s.power_a,
            seed=np.random.SeedSequence([seed, _TRAIN_STREAM, step]),
        )
        targets = query_targets(labels, pairs)
        if pinned:
            ids, targets = ids.pin_memory(), targets.pin_memory()
        set_lr(opt, lr_at(step, tc))
        pending.append(step_fn(ids, targets))
        at_point = (step + 1) % s.eval_every == 0
        check = checking and at_point
        save = checkpoint is not None and at_point and step + 1 < s.train_steps
        if callback is not None or check or save or (step + 1) % _SYNC_EVERY == 0 or step + 1 == s.train_steps:
            _read_back(pending, losses, s, lr)
            if callback is not None:
                callback(step, losses[-1])
        if check:
            per = _accuracy(model, s, device, seed, _CHECK_STREAM, s.check_sequences)
            acc = sum(per.values()) / len(per)
            if curve is not None:
                curve.append({"step": step + 1, "loss": float(np.mean(losses[since:])), "accuracy": acc})
                since = len(losses)
            if s.target is not None and acc >= s.target:
                break
        if save:
            seconds = (history[-1]["seconds"] if history else 0.0) + time.perf_counter() - t0
            state = {"step": step + 1, "losses": losses, "since": since, "curve": saved_curve}
            state.update(history=history, seconds=seconds)
            _save_partial(checkpoint, identity, model, opt, state)
    return losses


_PARTIAL_FORMAT = 1


def _partial_identity(s: MQARSettings, lr: float, seed: int) -> dict[str, Any]:
    """What a run's partial state belongs to: its settings (the sweep's extent aside), learning rate, seed."""
    settings = {k: v for k, v in s.result_settings().items() if k not in ("lrs", "seeds")}
    return {"format": _PARTIAL_FORMAT, "settings": settings, "lr": float(lr), "seed": int(seed)}


def _save_partial(path, identity: dict[str, Any], model, opt, state: dict[str, Any]) -> None:
    blob = {**identity, **state, "model": model.state_dict(), "optimizer": opt.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _load_partial(path, identity: dict[str, Any], model, opt) -> dict[str, Any] | None:
    """The saved state of this run (weights and optimizer loaded into ``model`` and ``opt``), or None: no file,
    or one of another run (logged). The optimizer keeps its own hyperparameters (a capturable one's learning
    rate is a device tensor that a CUDA graph reads); only its per-parameter state is loaded."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - an unreadable file is a run to start afresh, not a failure
        log.warning("recall: cannot read the partial run %s (%s); starting the run afresh", path, e)
        return None
    if not isinstance(blob, dict) or {k: blob.get(k) for k in identity} != identity:
        log.warning("recall: %s holds a run of other settings; starting this run afresh", path)
        return None
    model.load_state_dict(blob["model"])
    saved = blob["optimizer"]
    opt.load_state_dict({"state": saved["state"], "param_groups": opt.state_dict()["param_groups"]})
    return blob


class _StepFn:
    """One MQAR optimiser step of a :class:`QueryLoss` on a batch (ids, query targets), returning
    ``[loss, grad_norm]`` on the device: replayed as a CUDA graph per sequence length (``graphs``), else eager
    in micro-batches that halve when memory runs out (the same optimiser step either way)."""

    def __init__(self, model, opt, dev: torch.device, amp, s: MQARSettings, graphs: bool = False):
        self.model, self.opt, self.dev, self.amp, self.s = model, opt, dev, amp, s
        self.micro = s.batch_size  # rows per forward/backward; halved (and the batch accumulated) on OOM
        self.graphed = GraphedStep(model, opt, amp=amp, grad_clip=s.grad_clip) if graphs else None

    def __call__(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.graphed is not None:
            try:
                return self.graphed(ids, labels)
            except torch.OutOfMemoryError:
                reason = "out of memory"
            except RuntimeError as e:  # an operation that cannot be captured
                reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            log.warning("recall: CUDA-graph capture of the MQAR step failed (%s); eager steps from here", reason)
            self.graphed = None
            self.opt.zero_grad(set_to_none=True)
            _empty_cache(self.dev)
        loss = self._eager(ids, labels)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.s.grad_clip or math.inf)
        self.opt.step()
        return torch.stack([loss.float(), norm.float()])

    def _eager(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Forward and backward of the batch in micro-batches of ``self.micro`` rows, gradients accumulated so
        that they equal the whole batch's (each part's mean loss weighted by its share of the rows: every row
        has the same number of queries). Out of memory, the step restarts with half the rows per micro-batch,
        logged once per halving: the optimiser step, and so the learning, stay those of the full batch."""
        n = ids.shape[0]
        pinned = self.dev.type == "cuda"
        while True:
            self.opt.zero_grad(set_to_none=True)
            parts = (
                (
                    ids[b : b + self.micro].to(self.dev, non_blocking=pinned),
                    labels[b : b + self.micro].to(self.dev, non_blocking=pinned),
                    labels[b : b + self.micro].shape[0] / n,
                )
                for b in range(0, ids.shape[0], self.micro)
            )
            try:
                return accumulate(self.model, parts, self.dev, self.amp)
            except torch.OutOfMemoryError:
                if self.micro == 1:
                    raise
            # outside the except block, so that the failed step's tensors are freed before the cache is emptied
            self.opt.zero_grad(set_to_none=True)
            _empty_cache(self.dev)
            self.micro = (self.micro + 1) // 2
            log.warning(
                "recall: a batch of %d x %d tokens does not fit in memory; accumulating gradients over "
                "micro-batches of %d rows (same optimiser steps)",
                ids.shape[0],
                ids.shape[1],
                self.micro,
            )


def _empty_cache(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def _read_back(pending: list[torch.Tensor], losses: list[float], s: MQARSettings, lr: float) -> None:
    """Append the pending steps' losses to ``losses``; a non-finite loss or gradient norm raises
    ``TrainingDiverged`` naming the first such step (a diverged run must not be scored as recall)."""
    for loss_val, grad_norm in torch.stack(pending).tolist():
        step = len(losses) + 1
        check_finite(
            loss_val,
            grad_norm,
            lambda: (
                f"MQAR training diverged at step {step} of {s.train_steps}: loss={loss_val}, "
                f"grad_norm={grad_norm} (lr={lr:g} of recall.lrs); a sweep scores the other learning "
                "rates, or raise recall.warmup_steps"
            ),
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
        targets = query_targets(labels, pairs)
        correct = total = b = 0
        while b < sequences:  # out of memory, the rows per forward are halved (logged), never the sequences
            x, (pos, y) = ids[b : b + rows].to(device), targets[b : b + rows].to(device).unbind(1)
            try:
                with autocast_context(dev, amp):
                    pred = model(x, positions=pos).logits.argmax(-1)
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
            correct += int((pred == y).sum())
            total += y.numel()
            b += x.shape[0]
        out[(seq_len, pairs)] = correct / total
    model.train(was_training)
    return out


@dataclass
class RecallResult:
    """One MQAR run (one architecture, learning rate and seed): mean accuracy, per-setting accuracy, final
    training loss, seconds, the learning curve (``{"step", "loss", "accuracy"}`` every ``eval_every`` steps,
    on the check stream); the steps actually trained are ``len(losses)`` (fewer than the cap after an early
    stop at ``target``)."""

    accuracy: float
    per_setting: dict[Setting, float]
    final_loss: float
    seconds: float
    losses: list[float] = field(default_factory=list, repr=False)
    curve: list[dict[str, float]] = field(default_factory=list, repr=False)
    lr: float | None = None
    seed: int = 0
    stopped_early: bool = False
    resumed: list[dict[str, float]] = field(default_factory=list)  # see train_mqar; seconds include them

    def to_dict(self) -> dict[str, Any]:
        extra = {"resumed": self.resumed} if self.resumed else {}
        return {
            "lr": self.lr,
            "seed": self.seed,
            "accuracy": self.accuracy,
            "final_loss": self.final_loss,
            "seconds": self.seconds,
            "steps": len(self.losses),
            "stopped_early": self.stopped_early,
            "per_setting": [{"seq_len": t, "pairs": n, "accuracy": a} for (t, n), a in self.per_setting.items()],
            "curve": self.curve,
            **extra,
        }


def run_recall(
    model_cfg: ModelConfig,
    settings: MQARSettings | dict[str, Any],
    *,
    lr: float | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    checkpoint: str | Path | None = None,
) -> RecallResult:
    """One run: a fresh model of ``model_cfg``'s probe (:func:`probe_config`) trained on MQAR at ``lr`` (default:
    the one of ``settings.lrs``), its curve kept, then evaluated on held-out sequences (module docstring).
    ``checkpoint``: resumable from there (:func:`train_mqar`)."""
    from hymba import HymbaLM

    s = _coerce(settings)
    lr = _single_lr(s, lr)
    t0 = time.perf_counter()
    cfg = probe_config(model_cfg, s)
    with torch.random.fork_rng(devices=[]):  # fresh weights from `seed`, caller's RNG left untouched
        torch.manual_seed(int(np.random.SeedSequence([seed, _INIT_STREAM]).generate_state(1)[0]))
        model = HymbaLM(cfg).to(device)
    curve: list[dict[str, float]] = []
    resumed: list[dict[str, float]] = []
    losses = train_mqar(model, s, lr=lr, device=device, seed=seed, curve=curve, checkpoint=checkpoint, resumed=resumed)
    per = evaluate_mqar(model, s, device=device, seed=seed)
    acc = sum(per.values()) / len(per)
    tail = losses[-max(1, len(losses) // 20) :]
    stopped = s.target is not None and len(losses) < s.train_steps
    seconds = time.perf_counter() - t0 + (resumed[-1]["seconds"] if resumed else 0.0)
    return RecallResult(acc, per, sum(tail) / len(tail), seconds, losses, curve, lr, seed, stopped, resumed)


def sweep_jobs(settings: MQARSettings, seed: int = 0) -> list[tuple[float, int]]:
    """The ``(lr, seed)`` runs of one row's sweep, in order: every learning rate, ``settings.seeds`` seeds each."""
    return [(lr, seed + k) for lr in settings.lrs for k in range(settings.seeds)]


def score_sweep(settings: MQARSettings, runs: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Zoology's score of a row from its runs (``RecallResult.to_dict()``, or ``{"lr", "seed", "error"}`` for a
    run that failed): per learning rate the mean accuracy over its finished seeds, and the row's accuracy at
    the best one (the first of ``settings.lrs`` on a tie). ``accuracy`` is None while a run of the sweep
    (:func:`sweep_jobs` from ``seed``) is missing, or when every learning rate failed (``error`` then says so)."""
    by_run = {(r["lr"], r["seed"]): r for r in runs}
    missing = [j for j in sweep_jobs(settings, seed) if j not in by_run]
    by_lr = []
    for lr in settings.lrs:
        mine = [r for r in runs if r["lr"] == lr]
        ok = [r["accuracy"] for r in mine if r.get("error") is None]
        by_lr.append(
            {
                "lr": lr,
                "accuracy": sum(ok) / len(ok) if ok else None,
                "runs": len(mine),
                "failed": len(mine) - len(ok),
            }
        )
    scored = [b for b in by_lr if b["accuracy"] is not None]
    best = max(scored, key=lambda b: b["accuracy"], default=None)  # max keeps the first of equal values
    out: dict[str, Any] = {
        "accuracy": None if missing or best is None else best["accuracy"],
        "best_lr": None if best is None else best["lr"],
        "by_lr": by_lr,
        "missing": [list(j) for j in missing],
    }
    if not missing and best is None:
        out["error"] = "every learning rate of recall.lrs failed: " + "; ".join(str(r.get("error")) for r in runs[:3])
    return out


def recall_sweep(
    model_cfg: ModelConfig,
    settings: MQARSettings | dict[str, Any],
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """The whole protocol for one architecture in this process: every ``(lr, seed)`` run of the sweep, then
    :func:`score_sweep` (with ``runs``: each run's record and curve). A diverged run is recorded as failed."""
    s = _coerce(settings)
    runs = []
    for lr, sd in sweep_jobs(s, seed):
        try:
            runs.append(run_recall(model_cfg, s, lr=lr, device=device, seed=sd).to_dict())
        except TrainingDiverged as e:
            runs.append({"lr": lr, "seed": sd, "error": f"TrainingDiverged: {e}"})
    return {**score_sweep(s, runs, seed), "runs": runs}


def recall_accuracy(
    model_cfg: ModelConfig,
    settings: MQARSettings | dict[str, Any],
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> float | None:
    """MQAR accuracy in [0, 1] of ``model_cfg``'s architecture, averaged over ``settings.eval``, at the best
    learning rate of ``settings.lrs`` (None if every learning rate diverged).

    Each run (fresh weights, vocabulary = ``settings.vocab``) trains for up to ``settings.train_steps`` and
    is scored on held-out sequences; the same ``seed`` gives the same number on the same device.
    """
    return recall_sweep(model_cfg, settings, device=device, seed=seed)["accuracy"]


__all__ = [
    "MQARSettings",
    "QueryLoss",
    "RecallResult",
    "evaluate_mqar",
    "mqar_batch",
    "plan_features",
    "probe_config",
    "query_targets",
    "recall_accuracy",
    "recall_sweep",
    "run_recall",
    "score_sweep",
    "sweep_jobs",
    "train_mqar",
]
