"""The results of one ablation directory: ``results.json`` (the record) and ``results.csv`` (a flat mirror).

Both are rewritten whole after every row through a temporary file, fsync and ``os.replace``, so a crash or a
kill leaves either the previous or the new version, never a torn file: at most the row in flight is lost.
A file that cannot be read is never overwritten: loading it raises, naming the file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from hymba.ablation.metrics import ROW_METRICS
from hymba.io import atomic_write, finite, lock_directory
from hymba.rundir import RunDir

FORMAT = 1
# a row's status: trained and measured, failed, or recall only (`hymba ablate --recall-only`: not trained yet)
UNTRAINED = "untrained"
STATUSES = ("done", "failed", UNTRAINED)

# results.csv columns (record keys); nested values (model config, breakdowns) stay in results.json
CSV_FIELDS = (
    "id",
    "name",
    "status",
    "error",
    *(m.key for m in ROW_METRICS if m.csv),
    "device",
    "seconds",
    "finished_at",
    "run_dir",
)


class ResultsError(ValueError):
    """A results file exists but cannot be used (corrupt, or from a run with different settings)."""


class CorruptResults(ResultsError):
    """A results file that cannot be parsed or does not have the expected structure."""


def read_results(out_dir: str | Path) -> dict[str, Any]:
    """Parse and check ``out_dir/results.json``; raises ``FileNotFoundError`` or :class:`ResultsError`."""
    path = RunDir(out_dir).results
    if not path.is_file():
        raise FileNotFoundError(f"no ablation results in {out_dir} ({RunDir.RESULTS} missing)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptResults(f"{path} is corrupt ({e}); it was left untouched") from None
    problem = None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        problem = f"not an ablation results file of format {FORMAT}"
    elif not isinstance(data.get("rows"), dict) or not isinstance(data.get("settings"), dict):
        problem = "'rows' or 'settings' missing"
    else:
        for key, rec in data["rows"].items():
            if not isinstance(rec, dict) or str(rec.get("id")) != key or rec.get("status") not in STATUSES:
                problem = f"row entry {key!r} is malformed"
                break
    if problem:
        raise CorruptResults(f"{path} is corrupt ({problem}); it was left untouched")
    return data


class ResultsStore:
    """Finished rows of one ablation directory, saved after every row.

    Holds an exclusive lock on ``out_dir/.lock`` while open, so two runs cannot interleave their writes.
    """

    def __init__(self, out_dir: str | Path, settings: dict[str, Any], meta: dict[str, Any] | None = None):
        self.dir = Path(out_dir)
        self.settings = settings
        self.meta = dict(meta or {})
        self.rows: dict[int, dict[str, Any]] = {}
        self._lock_file = None

    # ---- opening --------------------------------------------------------------------------------------
    def open(self, *, force: bool = False) -> list[str]:
        """Lock the directory and load earlier results. Returns notes for the user (e.g. a set-aside file).

        Existing results from different settings, or a corrupt file, raise :class:`ResultsError` unless
        ``force``, in which case the old file is kept beside as ``results.json.<timestamp>.bak`` and the
        run starts empty.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock_file = lock_directory(self.dir, "`hymba ablate`")
        except ValueError as e:
            raise ResultsError(str(e)) from None
        path = RunDir(self.dir).results
        if not path.exists():
            return []
        from hymba.ablation.settings import settings_diff

        try:
            data = read_results(self.dir)
            diff = settings_diff(data["settings"], self.settings)
            if diff:
                raise ResultsError(
                    f"{path} holds results of different settings ({'; '.join(diff[:6])}"
                    f"{'; ...' if len(diff) > 6 else ''}); use another --out, or --force to "
                    "set the old results aside and start over"
                )
        except ResultsError as e:
            if not force:
                if isinstance(e, CorruptResults):
                    raise CorruptResults(
                        f"{e}; delete or move it, or pass --force to set it aside and start over"
                    ) from None
                raise
            backup = path.with_name(f"{RunDir.RESULTS}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
            os.replace(path, backup)
            return [f"--force: {e}; set aside as {backup}"]
        self.rows = {int(k): v for k, v in data["rows"].items()}
        return []

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- rows -----------------------------------------------------------------------------------------
    def done(self, row: int) -> bool:
        return self.rows.get(row, {}).get("status") == "done"

    def put(self, record: dict[str, Any]) -> None:
        """Record one row and save both files at once."""
        self.rows[int(record["id"])] = finite(record)
        self.save()

    def save(self) -> None:
        data = {
            "format": FORMAT,
            "settings": self.settings,
            "meta": self.meta,
            "rows": {str(k): self.rows[k] for k in sorted(self.rows)},
        }
        # CSV first: if we die between the two, results.json (the record) is still the older, consistent one
        rd = RunDir(self.dir)
        atomic_write(rd.results_csv, records_csv([self.rows[k] for k in sorted(self.rows)]))
        atomic_write(rd.results, json.dumps(data, indent=2) + "\n")


def records_csv(records: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})
    return buf.getvalue()


__all__ = [
    "CSV_FIELDS",
    "STATUSES",
    "UNTRAINED",
    "CorruptResults",
    "ResultsError",
    "ResultsStore",
    "read_results",
    "records_csv",
]
