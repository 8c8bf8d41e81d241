"""Typed, validated configuration for the Hymba model.

Every field of :class:`ModelConfig` changes the computation; the 13 rows of the paper's design roadmap
(``hymba.presets``) are configurations of one model class. Validation happens at construction and every
error names the field, the value and what would be valid.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing as _typing
from dataclasses import dataclass
from typing import Any

SWA_PLANS = ("none", "all", "default")
FUSIONS = ("mean", "concat")
ATTN_BACKENDS = ("auto", "sdpa", "flex")
SCAN_BACKENDS = ("auto", "ref", "triton", "mamba_ssm")


def _fail(name: str, value: Any, valid: str) -> None:
    raise ValueError(f"model.{name}={value!r} is invalid: {valid}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return _typing.get_type_hints(cls)


def _check_floats(obj: Any, section: str, ranges: dict[str, tuple[float, bool]]) -> None:
    """Every float field of dataclass ``obj`` must be finite (NaN and inf never pass a range check by
    accident); ``ranges[name] = (low, inclusive)`` bounds it below. Errors read ``section.name=value``."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if hints[f.name] is not float or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if not math.isfinite(v):
            raise ValueError(f"{section}.{f.name}={v!r} is invalid: must be a finite number")
        if f.name in ranges:
            low, inclusive = ranges[f.name]
            if v < low or (v == low and not inclusive):
                raise ValueError(f"{section}.{f.name}={v!r} is invalid: must be {'>=' if inclusive else '>'} {low:g}")


@dataclass
class ModelConfig:
    """One Hymba language model.

    Attention and SSM heads run in parallel inside every layer (paper Sec. 2.1). ``n_heads=0`` removes the
    attention branch, ``ssm=False`` the SSM branch (the "Llama" rows).

    Sliding-window convention: a query at position i sees keys j with ``i - window < j <= i``, i.e. itself
    and the ``window - 1`` tokens before it; meta tokens are always visible.
    """

    vocab_size: int = 512
    d_model: int = 64
    n_layers: int = 4
    # attention heads
    n_heads: int = 4
    n_kv_heads: int | None = None  # None = n_heads (no GQA); fewer = GQA
    head_dim: int | None = None  # Q/K head dim; None = d_model // n_heads
    rope: bool = True
    rope_base: float = 10000.0
    # SSM heads (Mamba-1)
    ssm: bool = True
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None  # None = ceil(d_model / 16)
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    # fusion of the two branches
    fusion: str = "mean"
    # attention span per layer: "none" (all global), "all" (all SWA), "default" (global in first, middle,
    # last layer), or an explicit list of global layer indices
    swa_plan: str | list[int] = "none"
    window: int = 256
    # cross-layer KV sharing among consecutive SWA layers
    kv_share: bool = False
    kv_share_groups: list[list[int]] | None = None  # None = consecutive pairs (odd run: first group of 3)
    # meta tokens prepended at training and prefill
    n_meta_tokens: int = 0
    # FFN / norms / embeddings
    d_ff: int | None = None  # None = 8/3 * d_model rounded up to a multiple of 32
    norm_eps: float = 1e-6
    tie_embeddings: bool = True
    init_std: float = 0.02
    # kernel backends
    attn_backend: str = "auto"
    scan_backend: str = "auto"

    def __post_init__(self) -> None:
        _check_floats(self, "model", {"rope_base": (0, False), "dt_min": (0, False), "dt_max": (0, False),
                                      "dt_init_floor": (0, True), "norm_eps": (0, False), "init_std": (0, False)})
        if self.dt_max < self.dt_min:
            _fail("dt_max", self.dt_max, f"must be >= model.dt_min={self.dt_min!r}")
        for name in ("vocab_size", "d_model", "n_layers", "d_state", "d_conv", "expand"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                _fail(name, v, "must be a positive integer")
        if not isinstance(self.n_heads, int) or self.n_heads < 0:
            _fail("n_heads", self.n_heads, "must be an integer >= 0 (0 = no attention branch)")
        if self.n_heads == 0 and not self.ssm:
            _fail("ssm", self.ssm, "both branches are off (n_heads=0 and ssm=False); enable at least one")
        if self.n_heads > 0:
            kv = self.n_kv_heads if self.n_kv_heads is not None else self.n_heads
            if not isinstance(kv, int) or kv < 1 or self.n_heads % kv != 0:
                _fail("n_kv_heads", self.n_kv_heads, f"must be >= 1 and divide n_heads={self.n_heads}")
            if self.head_dim is None and self.d_model % self.n_heads != 0:
                _fail("n_heads", self.n_heads,
                      f"must divide d_model={self.d_model} (or set head_dim explicitly)")
            if self.head_dim is not None and (self.head_dim < 2 or self.head_dim % 2):
                _fail("head_dim", self.head_dim, "must be an even integer >= 2 (RoPE rotates pairs)")
            if self.ssm and self.d_inner % self.n_heads != 0:
                _fail("n_heads", self.n_heads,
                      f"must divide d_inner={self.d_inner} (V head dim = d_inner / n_heads in hybrid layers)")
        elif self.n_kv_heads not in (None, 0):
            _fail("n_kv_heads", self.n_kv_heads, "needs attention heads (n_heads > 0)")
        if self.fusion not in FUSIONS:
            _fail("fusion", self.fusion, f"expected one of {FUSIONS}")
        if not isinstance(self.window, int) or self.window < 1:
            _fail("window", self.window, "must be an integer >= 1")
        if isinstance(self.swa_plan, str):
            if self.swa_plan not in SWA_PLANS:
                _fail("swa_plan", self.swa_plan, f"expected one of {SWA_PLANS} or a list of global layers")
        else:
            plan = list(self.swa_plan)
            if any(not isinstance(i, int) or not 0 <= i < self.n_layers for i in plan):
                _fail("swa_plan", self.swa_plan, f"global layer indices must lie in [0, {self.n_layers})")
            self.swa_plan = sorted(set(plan))
        if self.swa_plan != "none" and self.n_heads == 0:
            _fail("swa_plan", self.swa_plan, "sliding-window attention needs attention heads (n_heads > 0)")
        if self.kv_share:
            if self.n_heads == 0:
                _fail("kv_share", self.kv_share, "KV sharing needs attention heads (n_heads > 0)")
            groups = self.kv_groups()
            swa = set(self.swa_layers())
            seen: set[int] = set()
            for g in groups:
                if len(g) < 1 or any(i not in swa for i in g) or seen & set(g):
                    _fail("kv_share_groups", self.kv_share_groups,
                          "groups must be disjoint lists of SWA layers (global layers are never shared)")
                if g != list(range(g[0], g[0] + len(g))):
                    _fail("kv_share_groups", self.kv_share_groups, "each group must be consecutive layers")
                seen |= set(g)
        elif self.kv_share_groups is not None:
            _fail("kv_share_groups", self.kv_share_groups, "set kv_share=true to use explicit groups")
        if not isinstance(self.n_meta_tokens, int) or self.n_meta_tokens < 0:
            _fail("n_meta_tokens", self.n_meta_tokens, "must be an integer >= 0")
        if self.attn_backend not in ATTN_BACKENDS:
            _fail("attn_backend", self.attn_backend, f"expected one of {ATTN_BACKENDS}")
        if self.scan_backend not in SCAN_BACKENDS:
            _fail("scan_backend", self.scan_backend, f"expected one of {SCAN_BACKENDS}")
        if self.d_ff is not None and self.d_ff < 1:
            _fail("d_ff", self.d_ff, "must be a positive integer")

    # ---- derived sizes -------------------------------------------------------------------------------
    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def kv_heads(self) -> int:
        return 0 if self.n_heads == 0 else (self.n_kv_heads or self.n_heads)

    @property
    def qk_head_dim(self) -> int:
        return 0 if self.n_heads == 0 else (self.head_dim or self.d_model // self.n_heads)

    @property
    def v_head_dim(self) -> int:
        """Hybrid layers: d_inner / n_heads, so attention output width equals the SSM inner width (as
        released). Attention-only layers: the standard Llama layout, V head dim = Q/K head dim."""
        if self.n_heads == 0:
            return 0
        return self.d_inner // self.n_heads if self.ssm else self.qk_head_dim

    @property
    def attn_out_dim(self) -> int:
        return self.n_heads * self.v_head_dim

    @property
    def ssm_dt_rank(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)

    @property
    def ffn_dim(self) -> int:
        return self.d_ff or 32 * math.ceil(8 * self.d_model / 3 / 32)

    # ---- layer plans --------------------------------------------------------------------------------
    def global_layers(self) -> list[int]:
        if self.n_heads == 0:
            return []
        L = self.n_layers
        if self.swa_plan == "none":
            return list(range(L))
        if self.swa_plan == "all":
            return []
        if self.swa_plan == "default":
            return sorted({0, L // 2, L - 1})
        return list(self.swa_plan)

    def swa_layers(self) -> list[int]:
        if self.n_heads == 0:
            return []
        g = set(self.global_layers())
        return [i for i in range(self.n_layers) if i not in g]

    def kv_groups(self) -> list[list[int]]:
        """Groups of consecutive SWA layers sharing one K/V (first layer produces). Default: pairs within
        each run of consecutive SWA layers; an odd run gives its first group three layers, as released."""
        if not self.kv_share:
            return []
        if self.kv_share_groups is not None:
            return [list(g) for g in self.kv_share_groups]
        runs: list[list[int]] = []
        for i in self.swa_layers():
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        groups = []
        for run in runs:
            if len(run) < 2:
                continue
            first = 3 if len(run) % 2 else 2
            groups.append(run[:first])
            groups += [run[j:j + 2] for j in range(first, len(run), 2)]
        return groups

    def kv_producer(self) -> list[int]:
        """kv_producer()[i] = the layer whose K/V layer i uses (itself unless it is a sharing consumer)."""
        owner = list(range(self.n_layers))
        for g in self.kv_groups():
            for i in g[1:]:
                owner[i] = g[0]
        return owner

    # ---- (de)serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "model") -> "ModelConfig":
        """From a TOML table: unknown keys and wrong types are errors naming ``[where]`` and the key."""
        return section_from_dict(cls, d, where)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


__all__ = ["ModelConfig"]


# ---- run configuration (data, train) ----
# A run is ``[model]`` + ``[data]`` + ``[train]`` read from TOML. The loading machinery below is generic over
# dataclass sections, so other commands (the ablation runner) reuse it for their own sections and ``--set``.

import os as _os
import tomllib as _tomllib
import types as _types
from pathlib import Path as _Path

PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")


def _bad(section: str, name: str, value: Any, valid: str) -> None:
    raise ValueError(f"{section}.{name}={value!r} is invalid: {valid}")


@dataclass
class DataConfig:
    """Where the text comes from and how it becomes tokens (``hymba.data.prepare``)."""

    # "builtin" (Shakespeare), a text file, a directory of .txt files, or a Hugging Face dataset name/builder
    source: str = "builtin"
    dataset_config: str = ""  # datasets.load_dataset(name, dataset_config)
    split: str = "train"
    data_files: str = ""  # for builders such as "text" or "json"
    text_column: str = ""  # "" = detect
    streaming: bool = False
    char_budget: int = 0  # 0 = the whole corpus
    val_fraction: float = 0.1  # the last part of the text (cut at a line break) is validation
    # tokenizer: trained on the training split unless `tokenizer` names an existing tokenizer.json
    tokenizer: str = ""
    vocab_size: int = 2048  # requested; the trained vocabulary can be smaller
    pad_token: str = "<|pad|>"
    bos_token: str = "<|bos|>"
    eos_token: str = "<|eos|>"
    cache_dir: str = ""  # "" = $HYMBA_CACHE or ~/.cache/hymba

    def __post_init__(self) -> None:
        _check_floats(self, "data", {})
        if not self.source:
            _bad("data", "source", self.source, 'give "builtin", a path, a directory or a dataset name')
        if not isinstance(self.char_budget, int) or self.char_budget < 0:
            _bad("data", "char_budget", self.char_budget, "must be an integer >= 0 (0 = whole corpus)")
        if not 0.0 < self.val_fraction < 1.0:
            _bad("data", "val_fraction", self.val_fraction, "must lie strictly between 0 and 1")
        if not isinstance(self.vocab_size, int) or self.vocab_size < 8:
            _bad("data", "vocab_size", self.vocab_size, "must be an integer >= 8")
        specials = (self.pad_token, self.bos_token, self.eos_token)
        if len(set(specials)) != 3 or not all(specials):
            _bad("data", "pad_token/bos_token/eos_token", specials, "must be three distinct non-empty strings")

    def resolved_cache_dir(self) -> _Path:
        if self.cache_dir:
            return _Path(self.cache_dir).expanduser()
        return _Path(_os.environ.get("HYMBA_CACHE") or _Path.home() / ".cache" / "hymba")


@dataclass
class TrainConfig:
    """Optimisation, evaluation and bookkeeping of one training run (``hymba.train.train``)."""

    seed: int = 0
    device: str = "auto"  # "auto" = cuda when available
    precision: str = "auto"  # "auto" = bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the model
    seq_len: int = 128
    batch_size: int = 16  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 300  # optimizer steps
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at max_steps
    warmup_steps: int = 30
    weight_decay: float = 0.1  # not applied to norms, biases, embeddings, meta tokens
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 = off
    eval_every: int = 0  # steps between validation passes; 0 = only at the end
    eval_batch_size: int = 0  # 0 = batch_size
    eval_max_tokens: int = 0  # cap for the periodic passes (0 = whole split); the final pass is always whole
    log_every: int = 10
    ckpt_every: int = 100  # steps between checkpoints (one is also saved at the end and on SIGINT/SIGTERM)
    keep_checkpoints: int = 2
    throughput_skip_steps: int = 5  # warm-up/compile steps left out of tokens/s
    peak_flops: float = 0.0  # accelerator peak FLOP/s for MFU; 0 = look up the GPU's bf16 dense peak
    progress: bool = True  # tqdm progress bar
    tensorboard: bool = False  # needs the `tensorboard` extra

    def __post_init__(self) -> None:
        _check_floats(self, "train", {"lr": (0, False), "eps": (0, False), "weight_decay": (0, True),
                                      "grad_clip": (0, True), "peak_flops": (0, True)})
        for name in ("seq_len", "batch_size", "grad_accum", "max_steps", "log_every", "keep_checkpoints"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                _bad("train", name, v, "must be a positive integer")
        for name in ("warmup_steps", "eval_every", "eval_batch_size", "eval_max_tokens", "ckpt_every",
                     "throughput_skip_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                _bad("train", name, v, "must be an integer >= 0")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            _bad("train", "device", self.device, f"expected one of {DEVICES} or cuda:N")
        if self.precision not in PRECISIONS:
            _bad("train", "precision", self.precision, f"expected one of {PRECISIONS}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            _bad("train", "min_lr_ratio", self.min_lr_ratio, "must lie in [0, 1]")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                _bad("train", name, getattr(self, name), "must lie in [0, 1)")


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether a TOML value fits a (resolved) dataclass field annotation."""
    if tp is Any:
        return True
    origin = _typing.get_origin(tp)
    if origin in (_typing.Union, _types.UnionType):
        return any(_type_ok(value, a) for a in _typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin in (list, tuple):
        args = _typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_type_ok(v, a) for v, a in zip(value, args))
        return not args or all(_type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if origin is _typing.Literal:
        return value in _typing.get_args(tp)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) if isinstance(tp, type) else str(tp).replace("typing.", "")


def section_from_dict(cls: type, d: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from a TOML table; unknown keys and wrongly typed values are errors naming
    ``[where]``, the key and (for types) the expected type."""
    if not isinstance(d, dict):
        raise ValueError(f"[{where}] must be a table, got {d!r}")
    hints = _typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ValueError(f"unknown key(s) in [{where}]: {', '.join(unknown)}; valid keys: {', '.join(names)}")
    for k, v in d.items():
        if not _type_ok(v, hints[k]):
            raise ValueError(f"[{where}] {k} = {v!r} has the wrong type: expected {_type_name(hints[k])}")
    values = {k: (float(v) if hints[k] is float else v) for k, v in d.items()}
    return cls(**values)


def parse_override(item: str) -> tuple[str, str, Any]:
    """``"section.field=value"`` -> (section, field, value). The value is read as TOML (``3``, ``1e-3``,
    ``true``, ``[0, 5]``, ``"x"``); anything that is not a TOML value is taken as a bare string, so paths
    and dataset names need no quotes."""
    key, sep, raw = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ValueError(f"--set {item!r}: expected section.field=value, e.g. train.max_steps=100")
    raw = raw.strip()
    try:
        value = _tomllib.loads(f"v = {raw}")["v"]
    except _tomllib.TOMLDecodeError:
        value = raw
    return section, name, value


def apply_overrides(tables: dict[str, dict[str, Any]], overrides: list[str] | tuple[str, ...],
                    sections: dict[str, type]) -> dict[str, dict[str, Any]]:
    """Apply ``--set section.field=value`` items to raw TOML tables (copies); unknown sections or fields are
    errors listing the valid ones. Types are checked when the sections are built."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in tables.items()}
    for item in overrides:
        section, name, value = parse_override(item)
        if section not in sections:
            raise ValueError(f"--set {item!r}: unknown section [{section}]; valid sections: {', '.join(sections)}")
        valid = [f.name for f in dataclasses.fields(sections[section])]
        if name not in valid:
            raise ValueError(f"--set {item!r}: unknown key {name!r} in [{section}]; valid keys: {', '.join(valid)}")
        hint = _typing.get_type_hints(sections[section])[name]
        if isinstance(value, (int, float, bool)) and not _type_ok(value, hint) and _type_ok(str(value), hint):
            value = item.partition("=")[2].strip()  # e.g. data.source=2024 is a name, not a number
        out.setdefault(section, {})[name] = value
    return out


def load_sections(path: str | _Path | None, sections: dict[str, type], overrides: list[str] | tuple[str, ...] = (),
                  defaults: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Read a TOML file (or nothing) into dataclass sections: ``defaults`` tables first, then the file's
    tables (a file table replaces the default table of the same name only field by field), then ``--set``
    overrides. Unknown top-level tables are rejected."""
    tables: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (defaults or {}).items()}
    if path is not None:
        path = _Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = _tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); TOML files are UTF-8") from None
        except _tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML: {e}") from e
        unknown = sorted(set(data) - set(sections))
        if unknown:
            raise ValueError(f"{path}: unknown section(s) {', '.join(unknown)}; valid sections: {', '.join(sections)}")
        for k, v in data.items():
            if not isinstance(v, dict):
                raise ValueError(f"{path}: [{k}] must be a table")
            tables.setdefault(k, {}).update(v)
    tables = apply_overrides(tables, overrides, sections)
    where = f"{path}: " if path is not None else ""
    return {name: section_from_dict(cls, tables.get(name, {}), where=f"{where}{name}".strip())
            for name, cls in sections.items()}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def dump_sections(sections: dict[str, Any]) -> str:
    """TOML text for dataclass sections (fields that are ``None`` are left out: None is their default)."""
    lines: list[str] = []
    for name, obj in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in dataclasses.asdict(obj).items() if v is not None]
        lines.append("")
    return "\n".join(lines)


def tiny_model() -> ModelConfig:
    """The ``tiny`` base scale of the design roadmap (``hymba.presets``): CPU seconds per run."""
    from hymba.presets import scale_settings

    return ModelConfig.from_dict(dict(scale_settings("tiny")["model"]), where="presets tiny model")


@dataclass
class RunConfig:
    """One training run: ``[model]``, ``[data]``, ``[train]``."""

    model: ModelConfig = dataclasses.field(default_factory=tiny_model)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    SECTIONS: _typing.ClassVar[dict[str, type]] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}

    @classmethod
    def load(cls, path: str | _Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> "RunConfig":
        """From a TOML file (``None`` = the tiny model on the built-in corpus) and ``--set`` overrides.
        The file's ``[model]`` table starts from ``ModelConfig`` defaults, not from the tiny preset."""
        defaults = {"model": tiny_model().to_dict()} if path is None else {}
        return cls(**load_sections(path, cls.SECTIONS, overrides, defaults=defaults))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in self.SECTIONS}

    def to_toml(self) -> str:
        return dump_sections({name: getattr(self, name) for name in self.SECTIONS})

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> "RunConfig":
        unknown = sorted(set(d) - set(cls.SECTIONS))
        if unknown:
            raise ValueError(f"{where}: unknown section(s) {', '.join(unknown)}; valid sections: "
                             f"{', '.join(cls.SECTIONS)}")
        return cls(**{name: section_from_dict(sc, d.get(name, {}), where=f"{where} {name}")
                      for name, sc in cls.SECTIONS.items()})


__all__ += ["DataConfig", "TrainConfig", "RunConfig", "load_sections", "apply_overrides", "parse_override",
            "section_from_dict", "dump_sections", "tiny_model"]
