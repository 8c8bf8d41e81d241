"""Data-parallel and sharded training on PyTorch's own engine, applied outside the model (torchtitan style).

``torchrun --nproc_per_node N -m hymba train ...`` starts N processes; torchrun's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``) says which one this is. :func:`start` reads it, resolves ``train.parallel``
(``auto`` = DDP with more than one process, else none), picks the device (``cuda:LOCAL_RANK`` on CUDA), and
owns the process group (NCCL on CUDA, gloo on CPU): set up on entry, destroyed on exit. Outside torchrun,
``ddp`` and ``fsdp`` run as a world of one process, which exercises the same path.

:class:`Parallel` is what the trainer asks: wrap the model (DDP, or FSDP2 ``fully_shard`` per block then the
root, bf16 parameters / fp32 gradient reduction where the run autocasts to bf16), turn the gradient
all-reduce off on inner accumulation steps, average a loss over the ranks, agree on a stop, run a step on rank
0 alone (reading or writing the run directory) and tell the others whether it failed, and gather the full
model and optimizer state as one process holds it (``torch.distributed.checkpoint.state_dict`` with
``full_state_dict=True``), so a checkpoint loads in any number of processes, or in one without torchrun.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from hymba.config import TrainConfig
from hymba.errors import UsageError
from hymba.runtime import autocast_dtype, resolve_device

T = TypeVar("T")

# rank 0 may tokenize a corpus or verify a large checkpoint while the others wait for it
TIMEOUT = datetime.timedelta(minutes=60)


class RankZeroFailed(RuntimeError):
    """On a rank other than 0: a step that only rank 0 performs failed there (rank 0 reports the error itself).
    ``usage`` is true when rank 0's error was bad input (a ``ValueError``, missing file or ``UsageError``)."""

    def __init__(self, message: str, usage: bool):
        super().__init__(message)
        self.usage = usage


@dataclass(frozen=True)
class Launch:
    """Where torchrun put this process: its rank, its rank on this node, and the number of processes."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1  # processes on this node
    torchrun: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ | None = None) -> Launch:
        env = os.environ if env is None else env
        names = ("RANK", "LOCAL_RANK", "WORLD_SIZE")
        if not any(n in env for n in names):
            return cls()
        try:
            rank, local, world = (int(env[n]) for n in names)
        except (KeyError, ValueError):
            shown = ", ".join(f"{n}={env.get(n)!r}" for n in names)
            raise ValueError(f"torchrun environment is incomplete or malformed ({shown})") from None
        if not (0 <= rank < world and 0 <= local < world):
            raise ValueError(
                f"torchrun environment is inconsistent: RANK={rank}, LOCAL_RANK={local}, WORLD_SIZE={world}"
            )
        try:
            local_world = int(env.get("LOCAL_WORLD_SIZE", local + 1))
        except ValueError:
            shown = env["LOCAL_WORLD_SIZE"]
            raise ValueError(f"torchrun environment is malformed: LOCAL_WORLD_SIZE={shown!r}") from None
        return cls(rank, local, world, local_world, True)


def launch() -> Launch:
    """This process's place in a torchrun launch (rank 0 of 1 outside torchrun)."""
    return Launch.from_env()


def resolve_mode(requested: str, world_size: int) -> str:
    """``train.parallel`` for a world of ``world_size``: ``auto`` is ``ddp`` with more than one process, else
    ``none``; ``none`` with several processes is refused (each would train alone and all write one directory)."""
    if requested == "auto":
        return "ddp" if world_size > 1 else "none"
    if requested == "none" and world_size > 1:
        raise UsageError(
            f"train.parallel='none' with {world_size} torchrun processes: each would train the same model alone; "
            "set train.parallel=ddp or fsdp, or launch one process"
        )
    return requested


def _backend(mode: str, device: torch.device) -> str:
    import torch.distributed as dist

    if not dist.is_available():
        raise UsageError(f"train.parallel={mode!r} needs torch.distributed, which this PyTorch build lacks")
    if device.type == "cuda":
        if not dist.is_nccl_available():
            raise UsageError(f"train.parallel={mode!r} on CUDA needs NCCL, which this PyTorch build lacks")
        return "nccl"
    if not dist.is_gloo_available():
        raise UsageError(f"train.parallel={mode!r} on CPU needs the gloo backend, which this PyTorch build lacks")
    return "gloo"


def _device(tc: TrainConfig, where: Launch, mode: str) -> torch.device:
    device = resolve_device(tc.device, key="train.device")
    if mode == "none" or device.type != "cuda":
        return device
    if where.world_size > 1 and device.index is not None:
        raise UsageError(
            f"train.device={tc.device!r} under torchrun: each process uses cuda:LOCAL_RANK; set train.device=cuda"
        )
    count = torch.cuda.device_count()
    if where.local_world_size > count:  # checked alike on every rank of the node, so rank 0 reports it too
        raise UsageError(
            f"{where.local_world_size} processes on this node need one CUDA device each, but it has {count}; "
            "launch at most that many (--nproc_per_node)"
        )
    index = device.index if device.index is not None else where.local_rank
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


class Parallel:
    """The parallel layout of one training process (see the module docstring); ``mode`` is none, ddp or fsdp."""

    def __init__(
        self, mode: str, rank: int, world_size: int, device: torch.device, precision: str = "auto", backend: str = ""
    ):
        self.mode, self.rank, self.world_size, self.device, self.backend = mode, rank, world_size, device, backend
        self.amp = autocast_dtype(precision, device)

    @property
    def distributed(self) -> bool:
        return self.mode != "none"

    @property
    def is_rank0(self) -> bool:
        return self.rank == 0

    @property
    def evaluates(self) -> bool:
        """Whether this rank runs the validation forward: rank 0, or every rank under FSDP (whose forward
        all-gathers the parameters from every rank)."""
        return self.is_rank0 or self.mode == "fsdp"

    def describe(self) -> str:
        if not self.distributed:
            return "one process"
        return f"{self.mode.upper()} over {self.world_size} process(es), {self.backend}"

    # ---- the model --------------------------------------------------------------------------------------
    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP, or FSDP2: each of ``model.layers`` sharded as one unit, then the root (embedding, meta tokens,
        final norm and head). Identity without parallelism."""
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(model, device_ids=ids)
        if self.mode == "fsdp":
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            # compute in bf16 where the run autocasts to bf16; reduce gradients in fp32 either way
            mp = MixedPrecisionPolicy(param_dtype=self.amp, reduce_dtype=torch.float32 if self.amp else None)
            for block in model.layers:
                fully_shard(block, mp_policy=mp)
            fully_shard(model, mp_policy=mp)
        return model

    def unwrap(self, wrapped: nn.Module) -> nn.Module:
        """The model itself (DDP's ``module``; an FSDP2 model is its own, with sharded parameters)."""
        return getattr(wrapped, "module", wrapped) if self.mode == "ddp" else wrapped

    def grad_sync(self, wrapped: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """Context of one micro-step's forward and backward: with ``sync`` false (an inner accumulation step)
        gradients stay local, and only the last micro-step all-reduces (or reduce-scatters) them."""
        if self.mode == "ddp" and not sync:
            return wrapped.no_sync()
        if self.mode == "fsdp":
            wrapped.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()

    def loss_and_clip(self, loss: torch.Tensor, wrapped: nn.Module, max_norm: float) -> tuple[float, float]:
        """The step's loss averaged over the ranks, and the gradients clipped to ``max_norm`` (global norm over
        every rank's shard): both read back to the host in one synchronisation (a host read waits for the GPU
        to finish, and the GPU then waits for the host's next launches)."""
        loss = loss.detach().float()
        if self.distributed:  # gloo has no AVG: sum, then divide
            import torch.distributed as dist

            loss = loss.clone()
            dist.all_reduce(loss)
            loss = loss / self.world_size
        norm = torch.nn.utils.clip_grad_norm_(wrapped.parameters(), max_norm)
        if hasattr(norm, "full_tensor"):  # a DTensor under FSDP
            norm = norm.full_tensor()
        loss_val, norm_val = torch.stack([loss, norm.float().to(loss.device)]).tolist()
        return loss_val, norm_val

    # ---- collectives ------------------------------------------------------------------------------------

    def max(self, value: int) -> int:
        """The largest of every rank's ``value`` (e.g. the signal one of them received)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        t = torch.tensor(value, dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t)

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (small Python objects)."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_rank0(self, fn: Callable[[], T]) -> T | None:
        """Run ``fn`` on rank 0 only (its result there, ``None`` elsewhere). Every rank must call this at the
        same point: if ``fn`` raises, rank 0 raises it and the others raise :class:`RankZeroFailed`."""
        if not self.distributed:
            return fn()
        failure: tuple[str, bool] | None = None
        result = None
        if self.is_rank0:
            try:
                result = fn()
            except BaseException as e:
                usage = isinstance(e, (ValueError, FileNotFoundError, NotADirectoryError, UsageError))
                self.broadcast((f"rank 0 failed: {type(e).__name__}: {e}", usage))
                raise
        failure = self.broadcast(failure)
        if failure is not None:
            raise RankZeroFailed(*failure)
        return result

    # ---- state ------------------------------------------------------------------------------------------
    def full_state(
        self, wrapped: nn.Module, optimizer: torch.optim.Optimizer | None = None
    ) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any] | None]:
        """``(model state dict, optimizer state dict)`` as one process holds them, on CPU, on rank 0; ``(None,
        None)`` on the other ranks. The optimizer state is keyed by parameter index like
        ``optimizer.state_dict()``, so it loads into a plain optimizer. A collective under FSDP: every rank
        calls it."""
        if not self.distributed:
            model = self.unwrap(wrapped)
            return model.state_dict(), (optimizer.state_dict() if optimizer is not None else None)
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        weights = get_model_state_dict(wrapped, options=opts)
        optim = get_optimizer_state_dict(wrapped, optimizer, options=opts) if optimizer is not None else None
        if not self.is_rank0:
            return None, None
        return weights, (_by_index(optim) if optim is not None else None)

    def load_full_state(
        self,
        wrapped: nn.Module,
        optimizer: torch.optim.Optimizer,
        weights: dict[str, torch.Tensor] | None,
        optim_state: dict[str, Any] | None,
    ) -> None:
        """Load rank 0's full ``weights`` and index-keyed ``optim_state`` (as :func:`full_state` returns them,
        or a checkpoint holds them) into every rank's (sharded) model and optimizer; the other ranks pass
        ``None``."""
        if not self.distributed:
            if weights is not None:
                self.unwrap(wrapped).load_state_dict(weights)
            optimizer.load_state_dict(optim_state)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        set_model_state_dict(wrapped, weights if self.is_rank0 else {}, options=opts)
        by_fqn = _by_fqn(optim_state, self.unwrap(wrapped), optimizer) if self.is_rank0 else {}
        set_optimizer_state_dict(wrapped, optimizer, by_fqn, options=opts)


def _by_index(optim: dict[str, Any]) -> dict[str, Any]:
    """``optim``, keyed by parameter name (as ``torch.distributed.checkpoint`` gives it), re-keyed by index:
    the parameters numbered group by group, as ``torch.optim.Optimizer.state_dict`` numbers them."""
    index = {name: i for i, name in enumerate(n for g in optim["param_groups"] for n in g["params"])}
    return {
        "state": {index[name]: s for name, s in optim["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in optim["param_groups"]],
    }


def _by_fqn(optim: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The reverse of :func:`_by_index`, naming the parameters of ``optimizer`` as ``model`` names them."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    if len(order) != sum(len(g["params"]) for g in optim["param_groups"]):
        raise ValueError("the checkpoint's optimizer state does not fit this model's parameters")
    return {
        "state": {order[i]: s for i, s in optim["state"].items()},
        "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in optim["param_groups"]],
    }


@contextlib.contextmanager
def start(tc: TrainConfig) -> Iterator[Parallel]:
    """The :class:`Parallel` layout of this process for ``tc`` (``train.parallel``, ``train.device``), with the
    process group set up for the block and destroyed after it (one set up by the caller is used and left)."""
    where = launch()
    mode = resolve_mode(tc.parallel, where.world_size)
    device = _device(tc, where, mode)
    if mode == "none":
        yield Parallel(mode, 0, 1, device, tc.precision)
        return
    import torch.distributed as dist

    backend = _backend(mode, device)
    own = not dist.is_initialized()
    if own and where.torchrun:
        dist.init_process_group(backend, timeout=TIMEOUT)
    elif own:  # a world of one, without torchrun's rendezvous
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=TIMEOUT)
    try:
        yield Parallel(mode, dist.get_rank(), dist.get_world_size(), device, tc.precision, dist.get_backend())
    finally:
        if own:
            dist.destroy_process_group()


__all__ = ["Launch", "Parallel", "RankZeroFailed", "launch", "resolve_mode", "start"]
