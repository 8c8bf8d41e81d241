"""The paper's 13 design-roadmap rows as model configurations, read from ``roadmap.toml``.

Each row is derived from the row it names by a few changed fields (row 5 = row 4 + GQA, row 13 = row 9 +
meta tokens, ...), over a base scale: ``tiny`` (CPU seconds), ``seed`` (the seed notebook's size) or
``paper`` (about 300M parameters).
"""

from __future__ import annotations

from typing import Any

from hymba.config import ModelConfig
from hymba.config.scales import SCALES, roadmap, scale_settings


def _rows() -> dict[int, dict[str, Any]]:
    return {int(r["id"]): r for r in roadmap()["rows"]}


ROW_NAMES: dict[int, str] = {i: r["name"] for i, r in _rows().items()}


def row_overrides(row: int) -> dict[str, Any]:
    """The model fields row ``row`` sets, its ancestors' changes applied first."""
    rows = _rows()
    if row not in rows:
        raise ValueError(f"unknown ablation row {row!r}; expected 1..{len(rows)}")
    r = rows[row]
    out = row_overrides(int(r["from"])) if "from" in r else {}
    out.update(r.get("set", {}))
    return out


def scale_row_sets(scale: str) -> dict[int, dict[str, Any]]:
    """A scale's own changes to single rows (``[scales.<name>.rows]``: row id = {field = value}), applied over
    the row's deltas at that scale only, and not inherited by the rows derived from it."""
    sets = scale_settings(scale).get("rows", {})
    rows = _rows()
    for key, fields in sets.items():
        if not str(key).isdigit() or int(key) not in rows or not isinstance(fields, dict):
            raise ValueError(
                f"roadmap.toml: [scales.{scale}.rows] {key} = {fields!r}: expected a row id 1..{len(rows)}"
            )
    return {int(k): dict(v) for k, v in sets.items()}


def row_config(
    row: int,
    base: str | dict[str, Any] = "tiny",
    *,
    row_sets: dict[int, dict[str, Any]] | None = None,
    **model_overrides: Any,
) -> ModelConfig:
    """Model configuration of one roadmap row: the row's deltas over a base model table (``base``: a scale's
    name, or the table itself, e.g. a scale's with ``--set`` overrides applied), the scale's own changes to this
    row (``row_sets``; by default, for a scale's name, :func:`scale_row_sets`), then ``model_overrides``.
    The base's ``n_meta_tokens`` is the count of the rows that use meta tokens; the other rows have none."""
    if isinstance(base, str):
        row_sets = scale_row_sets(base) if row_sets is None else row_sets
        base = scale_settings(base)["model"]
    model = dict(base)
    n_meta = model.pop("n_meta_tokens", 0)
    fields = row_overrides(row)
    use_meta = fields.pop("use_meta", False)
    model.update(fields)
    model.update((row_sets or {}).get(row, {}))
    model["n_meta_tokens"] = n_meta if use_meta else 0
    model.update(model_overrides)
    return ModelConfig.from_dict(model, where=f"row {row}")


def ablation_rows(base: str = "tiny", **model_overrides: Any) -> dict[int, ModelConfig]:
    """``{1: ModelConfig, ..., 13: ModelConfig}`` for one base scale."""
    return {i: row_config(i, base, **model_overrides) for i in sorted(_rows())}


__all__ = [
    "ROW_NAMES",
    "SCALES",
    "ablation_rows",
    "roadmap",
    "row_config",
    "row_overrides",
    "scale_row_sets",
    "scale_settings",
]
