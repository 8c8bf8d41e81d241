"""hymba.io: atomic writes with the umask's modes, strict JSON, the output-directory lock."""

import json
import math
import os
import stat
import threading

import pytest

from hymba.io import _umask, atomic_write, json_dumps, lock_directory


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_respects_the_umask_like_open(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "atomic.json", "{}\n")
        (tmp_path / "plain.json").write_text("{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "atomic.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == mode
    assert (tmp_path / "atomic.json").read_text() == "{}\n" and sorted(os.listdir(tmp_path)) == [
        "atomic.json",
        "plain.json",
    ]


def test_json_dumps_writes_null_for_nan_and_inf():
    text = json_dumps({"a": math.nan, "b": [math.inf, 1.5], "c": {"d": -math.inf}})
    assert json.loads(text, parse_constant=pytest.fail) == {"a": None, "b": [None, 1.5], "c": {"d": None}}


def test_lock_directory_is_exclusive_and_names_its_holder(tmp_path):
    held = lock_directory(tmp_path, "`hymba train`")
    with pytest.raises(ValueError, match=rf"`hymba train` \(pid {os.getpid()}\) is already writing to {tmp_path}"):
        lock_directory(tmp_path, "`hymba ablate`")
    held.close()
    lock_directory(tmp_path, "`hymba ablate`").close()  # released


def test_reading_the_umask_leaves_it_unchanged_for_other_threads(tmp_path):
    old = os.umask(0o027)
    try:
        seen, stop = set(), threading.Event()

        def watch():
            while not stop.is_set():
                seen.add(_umask())

        t = threading.Thread(target=watch)
        t.start()
        for i in range(200):
            atomic_write(tmp_path / f"f{i}", "x")
        stop.set()
        t.join()
        assert seen == {0o027}
        assert all((tmp_path / f"f{i}").stat().st_mode & 0o777 == 0o640 for i in range(200))
    finally:
        os.umask(old)
