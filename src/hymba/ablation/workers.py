"""Independent tasks (ablation rows) in worker processes, one per GPU at a time: ``hymba ablate --gpus``.

A :class:`Slot` is one place a worker computes: a GPU (the worker sees only it, through
``CUDA_VISIBLE_DEVICES``, as ``cuda:0``) or, for tests and CPU-only machines, a share of the CPU threads. Each
task gets a fresh spawned process on a free slot, so one task per GPU runs at a time and its timings are not
shared with another task's. The parent alone writes results: :func:`run_tasks` yields each task's outcome as
its worker ends, with the result the worker sent back, or, if the worker died without one (a crash, the OOM
killer, SIGKILL), why it died. An interrupt of the parent (Ctrl-C, SIGTERM, or any error there) terminates
the workers, and a worker whose parent dies (even by SIGKILL) is sent SIGTERM.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

import torch

from hymba.errors import UsageError


@dataclass(frozen=True)
class Slot:
    """Where a worker runs: ``device`` as the worker names it, ``label`` as the user reads it, the environment
    it starts with and its intra-op threads (CPU workers)."""

    device: str
    label: str
    env: dict[str, str] = field(default_factory=dict)
    threads: int | None = None


def parse_gpus(spec: str) -> list[int]:
    """``--gpus``: ``auto`` (every visible CUDA device) or ids like ``0,1,3``, checked against this machine."""
    flag = f"--gpus {spec}"
    if not torch.cuda.is_available():
        raise UsageError(f"{flag}: CUDA is not available here (--gpus trains one row per GPU)")
    count = torch.cuda.device_count()
    if spec.strip() == "auto":
        return list(range(count))
    ids: list[int] = []
    for part in spec.split(","):
        try:
            gpu = int(part.strip())
        except ValueError:
            raise UsageError(f"{flag}: {part.strip()!r} is not a GPU id; give ids like 0,1 or auto") from None
        if not 0 <= gpu < count:
            raise UsageError(f"{flag}: there is no GPU {gpu}; this machine has {count} (ids 0-{count - 1})")
        if gpu in ids:
            raise UsageError(f"{flag}: GPU {gpu} is listed twice")
        ids.append(gpu)
    return ids


def gpu_slots(gpus: list[int]) -> list[Slot]:
    """One slot per GPU id (an index into this process's visible devices, as ``cuda:N`` counts them)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [v.strip() for v in visible.split(",")] if visible else None
    return [Slot("cuda:0", f"cuda:{g}", {"CUDA_VISIBLE_DEVICES": names[g] if names else str(g)}) for g in gpus]


def cpu_slots(n: int) -> list[Slot]:
    """``n`` CPU workers sharing this process's intra-op threads (the tests' stand-in for GPUs)."""
    threads = max(1, torch.get_num_threads() // n)
    return [Slot("cpu", f"cpu worker {i}", {"CUDA_VISIBLE_DEVICES": ""}, threads) for i in range(n)]


@dataclass(frozen=True)
class Outcome:
    """A task's end: the worker's ``result``, or ``None`` and the ``error`` that says how it died."""

    task: Any
    slot: Slot
    result: Any
    error: str | None


PR_SET_PDEATHSIG = 1  # prctl(2)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker when its parent dies, even by SIGKILL (elsewhere: a no-op)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _worker(fn: Callable[[Any, str], Any], task: Any, slot: Slot, conn) -> None:
    from hymba.runtime import keep_freed_memory

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which terminates the workers
    _die_with_parent()
    keep_freed_memory()
    if slot.threads:
        torch.set_num_threads(slot.threads)
    try:
        result = fn(task, slot.device)
    except KeyboardInterrupt:  # SIGINT/SIGTERM reached the task (a training run checkpoints and raises)
        return  # the parent is stopping: no result, and no traceback on the terminal
    conn.send(result)
    conn.close()


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """``env`` set while a worker is spawned (it copies the parent's environment when it starts)."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"{signal.Signals(signum).name}")


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"the worker process was killed by {signal.Signals(-exitcode).name}"
    return f"the worker process exited with code {exitcode} before reporting a result"


def run_tasks(
    fn: Callable[[Any, str], Any],
    tasks: list[Any],
    slots: list[Slot],
    started: Callable[[Any, Slot, int], None] = lambda task, slot, pid: None,
) -> Iterator[Outcome]:
    """``fn(task, slot.device)`` for every task, each in its own spawned process, one per slot at a time, in
    the order given; yields each :class:`Outcome` as its worker ends (``started`` is told each worker's pid).
    ``fn`` and the tasks must be picklable; ``fn`` should catch its own errors (an escaped one kills the
    worker, and the outcome says so). Closing the generator early terminates the workers still running: use it
    under ``contextlib.closing``, so that an exception in the caller's loop closes it at once."""
    ctx = multiprocessing.get_context("spawn")
    pending, free = list(tasks), list(slots)
    running: dict[Any, list[Any]] = {}  # sentinel -> [process, connection, task, slot, result]
    old_term = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM stops the workers, like Ctrl-C
        old_term = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while pending or running:
            while pending and free:
                task, slot = pending.pop(0), free.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker, args=(fn, task, slot, send), name=f"hymba-{slot.label}")
                with _environ(slot.env):
                    proc.start()
                send.close()
                running[proc.sentinel] = [proc, recv, task, slot, None]
                started(task, slot, proc.pid)
            # wait for results and for exits: a large result must be read before its worker can exit
            conns = {entry[1]: s for s, entry in running.items() if not entry[1].closed}
            for ready in wait([*conns, *running]):
                if ready in conns:
                    entry = running[conns[ready]]
                    try:
                        entry[4] = (ready.recv(),)
                    except EOFError:  # died before sending
                        pass
                    ready.close()
            for s in [s for s, entry in running.items() if not entry[0].is_alive()]:
                proc, recv, task, slot, got = running.pop(s)
                if not recv.closed:
                    if recv.poll():
                        with contextlib.suppress(EOFError):
                            got = (recv.recv(),)
                    recv.close()
                proc.join()
                free.append(slot)
                if got is not None:
                    yield Outcome(task, slot, got[0], None)
                else:
                    yield Outcome(task, slot, None, _death(proc.exitcode))
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        for proc, *_ in running.values():
            proc.terminate()  # SIGTERM: a training worker checkpoints its step and stops
        for proc, recv, *_ in running.values():
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
            recv.close()


__all__ = ["Outcome", "Slot", "cpu_slots", "gpu_slots", "parse_gpus", "run_tasks"]
