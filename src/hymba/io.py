"""Crash-safe file writes (readers see the old file or the new one, never a partial one), JSON without NaN,
and the lock that keeps two processes out of one output directory."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

LOCK_FILE = ".lock"
_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    # Linux reports the umask without changing it; elsewhere it can only be read by setting it, and the lock
    # keeps this module's other threads from seeing the temporary 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0)
        os.umask(mask)
    return mask


def umask_mode(path: str | Path, directory: bool = False) -> None:
    """Give ``path`` (made by ``mkstemp``/``mkdtemp``, which use 0600/0700) the mode a plain ``open`` or
    ``mkdir`` would: 0666 or 0777 less the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def fsync_path(path: str | Path) -> None:
    """fsync a file or a directory (a directory: so that a rename inside it survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write the new file to; on success it is fsynced and renamed onto
    ``path`` (and the directory fsynced, so the rename survives a crash), on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask_mode(tmp)  # after writing: a writer may have replaced the file (safetensors does)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text is UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def finite(v: Any) -> Any:
    """``v`` with every NaN or infinite float (in dicts, lists, tuples) replaced by ``None``: JSON has neither."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite(x) for x in v]
    return v


def json_dumps(v: Any, **kwargs: Any) -> str:
    """Strict JSON: non-finite floats become ``null`` (:func:`finite`), never the invalid ``NaN``."""
    return json.dumps(finite(v), allow_nan=False, **kwargs)


def lock_directory(path: str | Path, owner: str) -> IO[str]:
    """Take the exclusive lock of directory ``path`` (``flock`` on ``path/.lock``) for ``owner`` (e.g.
    "`hymba train`") and return the open lock file: closing it, or the process ending, releases the lock.
    Another process holding it raises ``ValueError`` naming that holder."""
    f = open(Path(path) / LOCK_FILE, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise ValueError(
            f"{holder} is already writing to {path}; wait for it to finish or choose another --out"
        ) from None
    f.truncate(0)
    f.write(f"{owner} (pid {os.getpid()})\n")
    f.flush()
    return f
