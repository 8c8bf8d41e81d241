"""One optimiser step, shared by the language-model trainer and MQAR training: the AdamW parameter groups and
the learning-rate schedule, the forward/backward of a batch in weighted micro-batches, the divergence check,
and :class:`GraphedStep`, a whole step (forward, backward, clipping, AdamW) replayed as one CUDA graph per
input shape, for small models whose steps are bound by kernel launches (the MQAR probe)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from hymba.config import TrainConfig
from hymba.runtime import autocast_context, cuda_graph_capture


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN or infinite."""


def no_decay(name: str, p: Tensor) -> bool:
    """Parameters left out of weight decay: norms and biases (ndim < 2), embeddings, meta tokens, and the SSM's
    A_log (decay would pull A towards -1, i.e. change the state's time constants, not shrink a weight)."""
    return p.ndim < 2 or "embed" in name or "meta_tokens" in name or name.endswith("A_log")


def build_optimizer(model: nn.Module, train_cfg: TrainConfig, capturable: bool = False) -> torch.optim.AdamW:
    """AdamW over two parameter groups: with and without weight decay (:func:`no_decay`); fused on CUDA.
    ``capturable``: a CUDA-graph-safe optimizer (:class:`GraphedStep`) whose learning rate is a device tensor
    (:func:`set_lr` changes it in place)."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": train_cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    device = next(model.parameters()).device
    fused = device.type == "cuda"
    if capturable and not fused:
        raise ValueError(f"a capturable optimizer needs CUDA parameters, not {device}")
    lr = torch.tensor(train_cfg.lr, device=device) if capturable else train_cfg.lr
    betas, eps = (train_cfg.beta1, train_cfg.beta2), train_cfg.eps
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None, capturable=capturable)


def compile_model(model: nn.Module, fullgraph: bool = False) -> nn.Module:
    """``torch.compile`` of a model for training, as the trainer runs it (``fullgraph``: as torch.compile's, for
    tests). Inductor's defaults: turning its prologue fusion off (which session 20 suspected of FlexAttention's
    3.4x slower compiled backward) changed nothing on an H100, 60.2 against 60.6 ms a seed row-13 step
    (benchmarks/results/2026-12-07-h100-s21.md)."""
    return torch.compile(model, fullgraph=fullgraph)


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


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate (in place where it is a tensor, as a captured step reads it)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Make a loaded optimizer capturable again (as :func:`build_optimizer` with ``capturable=True`` built it):
    a state dict saved by plain steps puts back ``capturable=False``, which AdamW refuses inside a CUDA graph,
    and a float learning rate, which a graph would keep (:func:`set_lr` would change nothing it reads). Every
    group gets ``capturable=True`` and its learning rate as a device tensor; AdamW's step counts move to the
    device."""
    for group in optimizer.param_groups:
        group["capturable"] = True
        if not isinstance(group["lr"], Tensor):
            group["lr"] = torch.tensor(float(group["lr"]), device=device)
    for state in optimizer.state.values():
        step = state.get("step")
        if isinstance(step, Tensor) and step.device != device:
            state["step"] = step.to(device=device, dtype=torch.float32)


def accumulate(
    forward: Callable[..., object],
    parts: Iterable[tuple[Tensor, Tensor, float]],
    device: torch.device,
    amp: torch.dtype | None,
    sync: Callable[[int], contextlib.AbstractContextManager] | None = None,
) -> Tensor:
    """Forward and backward of micro-batches ``(x, y, weight)``: each part's loss times its weight, gradients
    summed into ``.grad``. ``sync(i)`` wraps part i's forward and backward (data parallelism skips the
    all-reduce of all but the last). Returns the weighted loss sum as a device tensor (no host sync)."""
    total = torch.zeros((), device=device)
    for i, (x, y, weight) in enumerate(parts):
        with sync(i) if sync is not None else contextlib.nullcontext():
            with autocast_context(device, amp):
                loss = forward(x, labels=y).loss * weight
            loss.backward()
        total += loss.detach().float()
    return total


def check_finite(loss: float, grad_norm: float, message: Callable[[], str]) -> None:
    """Raise :class:`TrainingDiverged` with ``message()`` when the loss or the gradient norm is not finite."""
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        raise TrainingDiverged(message())


class GraphedStep:
    """A whole training step of ``model`` on one batch, forward, backward, gradient clipping and the optimizer
    step, replayed as one CUDA graph per input shape.

    ``optimizer`` must be capturable (:func:`build_optimizer` with ``capturable=True``): the graph reads its
    learning rate from a device tensor, so :func:`set_lr` before a call takes effect. The first ``warmup``
    calls of each shape run eagerly on a side stream (real steps: lazy initialisation, the optimizer state,
    autotuning happen there, as capture requires); the next one captures the step and replays it, and every
    later call of that shape only copies the batch in and replays. A call returns ``[loss, grad_norm]``
    (fp32, on the device, not synchronised). The same arithmetic as the eager step: the graph records the
    same kernels (autocast's weight cache is off inside it, which changes no value)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        amp: torch.dtype | None,
        grad_clip: float,
        warmup: int = 2,
    ):
        self.model, self.optimizer, self.amp = model, optimizer, amp
        self.grad_clip = grad_clip or math.inf
        self.warmup = warmup
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, Tensor, Tensor, Tensor]] = {}
        self._calls: dict[tuple, int] = {}
        self._pool = torch.cuda.graph_pool_handle()

    def _step(self, x: Tensor, y: Tensor) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        ctx = torch.autocast("cuda", dtype=self.amp, cache_enabled=False) if self.amp else contextlib.nullcontext()
        with ctx:
            loss = self.model(x, labels=y).loss
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        return torch.stack([loss.detach().float(), norm.detach().float()])

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        key = (tuple(x.shape), x.dtype, tuple(y.shape))
        if key in self._graphs:
            graph, sx, sy, out = self._graphs[key]
            sx.copy_(x, non_blocking=True)
            sy.copy_(y, non_blocking=True)
            graph.replay()
            return out.clone()
        device = self.params[0].device
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        calls = self._calls[key] = self._calls.get(key, 0) + 1
        if calls <= self.warmup:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                out = self._step(x, y)
            torch.cuda.current_stream(device).wait_stream(side)
            return out
        sx, sy = x.clone(), y.clone()
        self.optimizer.zero_grad(set_to_none=True)  # the graph allocates (and then owns) the gradients
        graph = torch.cuda.CUDAGraph()
        with cuda_graph_capture(graph, pool=self._pool):
            out = self._step(sx, sy)
        self._graphs[key] = (graph, sx, sy, out)
        graph.replay()  # capture records the step without running it
        return out.clone()

    @property
    def captured(self) -> int:
        """How many input shapes have a captured graph."""
        return len(self._graphs)


__all__ = [
    "GraphedStep",
    "TrainingDiverged",
    "accumulate",
    "build_optimizer",
    "check_finite",
    "lr_at",
    "make_capturable",
    "no_decay",
    "set_lr",
]
