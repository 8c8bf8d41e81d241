"""Typed, validated configuration of one training run: ``[model]`` + ``[data]`` + ``[train]`` read from TOML.

A run TOML may start from a scale of the design roadmap (``scale = "tiny"`` at the top: that scale's
``[model]``, ``[data]`` and ``[train]`` tables of ``hymba/presets/roadmap.toml``) and keep only what differs;
``--set section.field=value`` overrides apply last (:func:`hymba.config.section.load_sections`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from hymba.config.model import ModelConfig
from hymba.config.scales import scale_settings
from hymba.config.section import Section, dump_sections, load_sections, section_from_dict

PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
# how a torchrun launch shares the work (hymba.train.parallel): auto = ddp with more than one process, else none
PARALLEL = ("auto", "none", "ddp", "fsdp")


@dataclass
class DataConfig(Section):
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

    SECTION = "data"

    def validate(self) -> None:
        if not self.source:
            self.invalid("source", 'give "builtin", a path, a directory or a dataset name')
        self.check_ints("char_budget", low=0, note=" (0 = whole corpus)")
        self.check_interval("val_fraction", 0, 1, "()")
        self.check_ints("vocab_size", low=8)
        specials = (self.pad_token, self.bos_token, self.eos_token)
        if len(set(specials)) != 3 or not all(specials):
            self.invalid("pad_token/bos_token/eos_token", "must be three distinct non-empty strings", specials)

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        return Path(os.environ.get("HYMBA_CACHE") or Path.home() / ".cache" / "hymba")


COMPILE_MIN_STEPS = 5000  # train.compile = "auto" compiles runs of at least this many steps (TrainConfig.compiles)


@dataclass
class TrainConfig(Section):
    """Optimisation, evaluation and bookkeeping of one training run (``hymba.train.train``)."""

    seed: int = 0
    device: str = "auto"  # "auto" = cuda when available
    precision: str = "auto"  # "auto" = bf16 autocast on CUDA, fp32 on CPU
    # torch.compile the model: true, false, or "auto" = on CUDA for runs of 5000+ steps (TrainConfig.compiles)
    compile: bool | Literal["auto"] = "auto"
    # replay each whole step (forward, backward, clipping, AdamW) as one CUDA graph (hymba.train.step.GraphedStep):
    # no kernel launches or host work inside a step. CUDA, one process, grad_accum 1; off until it is measured
    # against plain steps (benchmarks/train_throughput.py --set train.cuda_graphs=true)
    cuda_graphs: bool = False
    parallel: str = "auto"  # under torchrun: ddp, fsdp (FSDP2 sharding) or none; auto = ddp when world size > 1
    seq_len: int = 128
    batch_size: int = 16  # sequences per micro-batch, per rank under torchrun
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
    # start from the weights, model config and tokenizer of this directory (a released Hymba checkpoint or a
    # `hymba train` run; hymba.train.init); "" = a freshly initialised model
    init: str = ""

    SECTION = "train"

    def compiles(self, device_type: str) -> bool:
        """Whether the trainer runs the model under ``torch.compile`` on this device type. ``auto``: on CUDA for
        runs of at least :data:`COMPILE_MIN_STEPS` steps. Compiled, the trainer ran seed-preset rows 1.23x (row 13:
        63.7 against 78.2 ms a step) and 1.19x (row 1: 40.4 against 47.9) as fast as eager on an H100, but a
        first compile took 58-69 s (row 13) and 26 s (row 1), which a run pays back after ~4,000-4,800 and ~3,500
        steps (benchmarks/results/2026-12-07-h100-s21.md): the ablation's 150-step rows stay eager. Not on CPU,
        where compiling takes longer than the short runs it serves. The compile time is never counted in
        tokens/s."""
        if isinstance(self.compile, bool):
            return self.compile
        return device_type == "cuda" and self.max_steps >= COMPILE_MIN_STEPS

    def validate(self) -> None:
        self.check_numbers("lr", "eps", strict=True)
        self.check_numbers("weight_decay", "grad_clip", "peak_flops")
        self.check_ints("seq_len", "batch_size", "grad_accum", "max_steps", "log_every", "keep_checkpoints")
        self.check_ints(
            "warmup_steps",
            "eval_every",
            "eval_batch_size",
            "eval_max_tokens",
            "ckpt_every",
            "throughput_skip_steps",
            low=0,
        )
        if not (isinstance(self.device, str) and self.device.startswith("cuda:")):
            self.check_choice("device", DEVICES, " or cuda:N")
        self.check_choice("precision", PRECISIONS)
        self.check_choice("parallel", PARALLEL)
        if self.compile not in (True, False, "auto"):
            self.invalid("compile", 'must be true, false or "auto"')
        if not isinstance(self.cuda_graphs, bool):
            self.invalid("cuda_graphs", "must be true or false")
        if self.cuda_graphs and self.grad_accum != 1:
            self.invalid(
                "cuda_graphs", f"needs train.grad_accum = 1 (a graph replays one whole step), not {self.grad_accum}"
            )
        self.check_interval("min_lr_ratio", 0, 1, "[]")
        self.check_interval("beta1", 0, 1, "[)")
        self.check_interval("beta2", 0, 1, "[)")


def tiny_model() -> ModelConfig:
    """The ``tiny`` base scale of the design roadmap (``hymba.config.scales``): CPU seconds per run."""
    return ModelConfig.from_dict(dict(scale_settings("tiny")["model"]), where="scales.tiny.model")


@dataclass
class RunConfig:
    """One training run: ``[model]``, ``[data]``, ``[train]``."""

    model: ModelConfig = dataclasses.field(default_factory=tiny_model)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    SECTIONS: ClassVar[dict[str, type]] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
        """From a TOML file (``None`` = the tiny model on the built-in corpus) and ``--set`` overrides.
        The file's ``[model]`` table starts from ``ModelConfig`` defaults, not from the tiny preset, unless
        the file names a scale (``scale = "tiny"``)."""
        defaults = {"model": tiny_model().to_dict()} if path is None else {}
        return cls(**load_sections(path, cls.SECTIONS, overrides, defaults=defaults))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: getattr(self, name).to_dict() for name in self.SECTIONS}

    def to_toml(self) -> str:
        return dump_sections({name: getattr(self, name) for name in self.SECTIONS})

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> RunConfig:
        unknown = sorted(set(d) - set(cls.SECTIONS))
        if unknown:
            raise ValueError(
                f"{where}: unknown section(s) {', '.join(unknown)}; valid sections: {', '.join(cls.SECTIONS)}"
            )
        return cls(
            **{
                name: section_from_dict(sc, d.get(name, {}), where=f"{where} {name}")
                for name, sc in cls.SECTIONS.items()
            }
        )


__all__ = ["DEVICES", "PARALLEL", "PRECISIONS", "DataConfig", "RunConfig", "TrainConfig", "tiny_model"]
