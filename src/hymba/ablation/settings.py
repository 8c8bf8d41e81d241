"""What one ablation run is: a scale of ``roadmap.toml`` plus ``--set`` overrides, resolved and validated.

A scale holds ``[model]`` (the base architecture the 13 row deltas apply to), ``[data]`` (``DataConfig``),
``[train]`` (``TrainConfig``), ``[bench]`` (:class:`BenchSettings`) and ``[recall]`` (``MQARSettings``).
Every row shares data, tokenizer, training settings and seed; only the row's model fields differ.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from hymba.config import (
    DataConfig,
    ModelConfig,
    Section,
    TrainConfig,
    load_tables,
    scale_names,
    scale_settings,
    section_from_dict,
)
from hymba.eval.mqar import MQARSettings
from hymba.presets import ROW_NAMES, SCALES, roadmap, row_config, scale_row_sets
from hymba.runtime import DTYPES

PRESETS = ("auto", *SCALES)  # what --preset offers (tests also use the hidden `micro` scale)
CACHE_SEQ_LEN = 8192  # the paper's cache column: KV cache at 8K tokens, FP16
CACHE_DTYPE = torch.float16


@dataclass
class BenchSettings(Section):
    """Generation throughput, paper protocol (``hymba.bench.generation_throughput``): ``batch`` random prompts
    of ``prompt_len`` tokens, ``new_tokens`` generated greedily, batch halved on out-of-memory. The paper uses
    8192-token prompts at batch 128 on one A100; CPU scales shrink both."""

    prompt_len: int = 8192
    batch: int = 128
    new_tokens: int = 64
    warmup: int = 1
    dtype: str = "auto"  # weights during generation: "auto" = bf16 on CUDA, fp32 on CPU; or fp16, bf16, fp32

    SECTION = "bench"

    def validate(self) -> None:
        self.check_ints("prompt_len", "batch", "new_tokens")
        self.check_ints("warmup", low=0)
        self.check_choice("dtype", ("auto", *DTYPES))

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return DTYPES[self.dtype]


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "bench": BenchSettings,
    "recall": MQARSettings,
}


def _row_fields() -> frozenset[str]:
    """The model fields the rows of ``roadmap.toml`` set (``use_meta`` is a row switch, not a model field: the
    base's ``n_meta_tokens`` stays overridable), plus ``kv_share_groups``, which no row sets but which shapes
    the layer groups of every KV-sharing row, so the ablation fixes it too."""
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    set_keys = {key for r in roadmap()["rows"] for key in r.get("set", {})}
    return frozenset(set_keys & model_fields) | {"kv_share_groups"}


# the fields the rows vary: overriding them would make rows identical
ROW_FIELDS = _row_fields()
# training-settings fields that do not change a result (left out of the run's fingerprint)
COSMETIC = {
    "train": {"progress", "log_every", "tensorboard", "ckpt_every", "keep_checkpoints", "parallel"},
    "data": {"cache_dir"},
}


def available_scales() -> list[str]:
    return scale_names()


def resolve_preset(preset: str, cuda: bool | None = None) -> str:
    """``auto`` -> ``seed`` on a GPU, ``tiny`` on CPU; any other name must be a scale of ``roadmap.toml``."""
    if preset == "auto":
        cuda = torch.cuda.is_available() if cuda is None else cuda
        return "seed" if cuda else "tiny"
    if preset not in available_scales():
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    return preset


def parse_rows(spec: str | None) -> list[int]:
    """``"1,5,13"`` or ``"1-4,13"`` -> row ids in the order given (repeats dropped), so ``13,1`` runs row 13
    first; ``None``/``"all"`` -> every row in order. Tables are sorted by id whatever the run order."""
    if spec is None or spec.strip().lower() == "all":
        return sorted(ROW_NAMES)
    rows: dict[int, None] = {}  # ordered set
    for part in spec.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            ids = range(int(lo), int(hi) + 1) if dash else [int(part)]
        except ValueError:
            raise ValueError(f"--rows {spec!r}: {part!r} is not a row id; give ids like 1,5,13 or 1-4") from None
        if dash and int(lo) > int(hi):
            raise ValueError(f"--rows {spec!r}: the range {part!r} is reversed; write {int(hi)}-{int(lo)}")
        for i in ids:
            if i not in ROW_NAMES:
                raise ValueError(f"--rows {spec!r}: no row {i}; rows are {min(ROW_NAMES)}..{max(ROW_NAMES)}")
            rows[i] = None
    if not rows:
        raise ValueError(f"--rows {spec!r}: no rows given")
    return list(rows)


@dataclass
class AblationSettings:
    """One resolved ablation run. ``model`` is the base model table (row deltas not applied)."""

    preset: str
    model: dict[str, Any]
    data: DataConfig
    train: TrainConfig
    bench: BenchSettings
    recall: MQARSettings
    row_sets: dict[int, dict[str, Any]] = field(default_factory=dict)  # the scale's own changes to single rows

    @classmethod
    def load(cls, preset: str, overrides: list[str] | tuple[str, ...] = ()) -> AblationSettings:
        """Scale ``preset`` of ``roadmap.toml`` with ``--set section.field=value`` overrides; every row's model
        config is built once here so that a bad override fails before any training."""
        preset = resolve_preset(preset)
        tables = load_tables(None, SECTIONS, overrides, scale=preset)
        model, base = tables["model"], scale_settings(preset).get("model", {})
        for key in sorted(set(model) & ROW_FIELDS):
            if key not in base or model[key] != base[key]:
                raise ValueError(
                    f"model.{key} cannot be overridden: it is what the ablation rows vary "
                    f"(see roadmap.toml); fixed model fields: {', '.join(sorted(ROW_FIELDS))}"
                )
        if "vocab_size" in model:
            raise ValueError(
                "model.vocab_size cannot be set: the model takes the tokenizer's vocabulary "
                "(set data.vocab_size instead)"
            )
        where = f"scales.{preset}"
        out = cls(
            preset=preset,
            model=model,
            row_sets=scale_row_sets(preset),
            **{
                name: section_from_dict(SECTIONS[name], tables[name], where=f"{where}.{name}")
                for name in ("data", "train", "bench", "recall")
            },
        )
        for row in ROW_NAMES:
            try:
                out.row_model(row)
            except ValueError as e:
                raise ValueError(f"row {row} ({ROW_NAMES[row]}) at preset {preset}: {e}") from None
        return out

    def row_model(self, row: int, vocab_size: int | None = None) -> ModelConfig:
        """The model of row ``row``: the row's deltas over this run's base model table (the scale's, with the
        model overrides; its meta token count goes to the rows that use meta tokens)."""
        extra = {} if vocab_size is None else {"vocab_size": vocab_size}
        return row_config(row, self.model, row_sets=self.row_sets, **extra)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"preset": self.preset, "model": dict(self.model)}
        if self.row_sets:
            d["rows"] = {str(k): dict(v) for k, v in self.row_sets.items()}
        for name in ("data", "train", "bench", "recall"):
            d[name] = getattr(self, name).to_dict()
        return d

    def fingerprint(self) -> dict[str, Any]:
        """The settings that shape the training/benchmark results of a row (recall is tracked per row)."""
        d = self.to_dict()
        d.pop("recall")
        for section, keys in COSMETIC.items():
            d[section] = {k: v for k, v in d[section].items() if k not in keys}
        return d


def _section_defaults() -> dict[str, dict[str, Any]]:
    return {
        name: {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        for name, cls in (("data", DataConfig), ("train", TrainConfig), ("bench", BenchSettings))
    }


def settings_diff(
    old: dict[str, Any], new: dict[str, Any], prefix: str = "", defaults: dict[str, Any] | None = None
) -> list[str]:
    """``["train.max_steps: 300 -> 20", ...]`` between two nested settings dicts. A key that only one side
    has (a setting added or removed in a newer version) counts as a change only when its value is not that
    setting's default (``defaults``: by section, the config classes' defaults when not given), so results
    written before a new setting existed stay usable."""
    defaults = _section_defaults() if defaults is None else defaults
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += settings_diff(a, b, f"{prefix}{key}.", defaults.get(key, {}))
        elif (key not in old or key not in new) and key in defaults and (b if key in new else a) == defaults[key]:
            continue
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


__all__ = [
    "AblationSettings",
    "BenchSettings",
    "CACHE_DTYPE",
    "CACHE_SEQ_LEN",
    "PRESETS",
    "SECTIONS",
    "available_scales",
    "parse_rows",
    "resolve_preset",
    "settings_diff",
]
