"""The scales of the design roadmap: ``[scales.<name>]`` of ``hymba/presets/roadmap.toml``.

A scale holds a base model size (``[model]``) and the run settings that go with it (``[data]``, ``[train]``,
``[bench]``, ``[recall]``). ``hymba ablate --preset <name>`` runs the roadmap's rows at one; a run TOML starts
from one with ``scale = "<name>"``. The rows themselves are :mod:`hymba.presets`'s: that package reads this
module, never the other way round.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from typing import Any

# offered to users (the test suite's `micro` is hidden)
SCALES = ("tiny", "seed", "seed-capacity", "paper", "paper-layout")


@cache
def roadmap() -> dict[str, Any]:
    """The parsed ``roadmap.toml`` shipped with the package (scales and rows)."""
    text = resources.files("hymba").joinpath("presets").joinpath("roadmap.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def scale_names() -> list[str]:
    """Every scale of ``roadmap.toml``, hidden ones included."""
    return list(roadmap()["scales"])


def scale_settings(name: str) -> dict[str, Any]:
    """All tables of one scale (``model`` and whatever run settings it carries). A scale with
    ``extends = "<other>"`` starts from that scale's tables, field by field overridden by its own."""
    scales = roadmap()["scales"]
    if name not in scales:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(scales)}")
    own = {k: v for k, v in scales[name].items() if k != "extends"}
    if "extends" not in scales[name]:
        return own
    base = scale_settings(scales[name]["extends"])
    return {k: {**base.get(k, {}), **own.get(k, {})} for k in {**base, **own}}


__all__ = ["SCALES", "roadmap", "scale_names", "scale_settings"]
