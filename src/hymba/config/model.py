"""Typed, validated configuration for the Hymba model.

Every field of :class:`ModelConfig` changes the computation; the 13 rows of the paper's design roadmap
(``hymba.presets``) are configurations of one model class. Validation happens at construction and every
error names the field, the value and what would be valid.
"""

from __future__ import annotations

import functools
import importlib
import math
from dataclasses import dataclass

from hymba.config.section import Section

SWA_PLANS = ("none", "all", "default")
FUSIONS = ("mean", "concat")


@functools.cache
def backends(op: str) -> tuple[str, ...]:
    """The backend names ``hymba.kernels.<op>`` dispatches on (``op``: "attention" or "scan"), from the kernels'
    own registry. Imported when a config is checked, not when this module is: the kernels import torch."""
    return tuple(importlib.import_module(f"hymba.kernels.{op}").BACKENDS)


@dataclass
class ModelConfig(Section):
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
    # V head dim. None = the released layout: d_inner / n_heads in hybrid layers (the attention output is as
    # wide as the SSM's, one shared W_out), the Q/K head dim in attention-only layers. An integer = the paper's
    # ablation layout: V heads of that size everywhere and, in hybrid mean-fusion layers, each branch projected
    # on its own (Eq. 3 with W_out split per branch), so attention parameters and KV cache scale with the heads.
    v_head_dim: int | None = None
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
    # mean fusion: each branch RMS-normalised before the mean (beta1, beta2 of Eq. 3, as released). False: an
    # ablation outside the paper, W_out((attn + ssm) / 2); the branch norms slow the MQAR probe's lookup
    # (benchmarks/results/2026-12-07-h100-s27.md). No effect in concat fusion or single-branch layers.
    fusion_norm: bool = True
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

    SECTION = "model"

    def validate(self) -> None:
        self.check_numbers("rope_base", "dt_min", "dt_max", "norm_eps", "init_std", strict=True)
        self.check_numbers("dt_init_floor")
        if self.dt_max < self.dt_min:
            self.invalid("dt_max", f"must be >= model.dt_min={self.dt_min!r}")
        self.check_ints("vocab_size", "d_model", "n_layers", "d_state", "d_conv", "expand")
        self.check_ints("n_heads", low=0, note=" (0 = no attention branch)")
        if self.n_heads == 0 and not self.ssm:
            self.invalid("ssm", "both branches are off (n_heads=0 and ssm=False); enable at least one")
        if self.n_heads > 0:
            kv = self.n_kv_heads if self.n_kv_heads is not None else self.n_heads
            if not isinstance(kv, int) or kv < 1 or self.n_heads % kv != 0:
                self.invalid("n_kv_heads", f"must be >= 1 and divide n_heads={self.n_heads}")
            if self.head_dim is None and self.d_model % self.n_heads != 0:
                self.invalid("n_heads", f"must divide d_model={self.d_model} (or set head_dim explicitly)")
            if self.head_dim is not None and (self.head_dim < 2 or self.head_dim % 2):
                self.invalid("head_dim", "must be an even integer >= 2 (RoPE rotates pairs)")
            if self.v_head_dim is not None:
                self.check_ints("v_head_dim", note=" (or unset: the released layout)")
            elif self.ssm and self.d_inner % self.n_heads != 0:
                self.invalid(
                    "n_heads", f"must divide d_inner={self.d_inner} (V head dim = d_inner / n_heads in hybrid layers)"
                )
        elif self.n_kv_heads not in (None, 0):
            self.invalid("n_kv_heads", "needs attention heads (n_heads > 0)")
        self.check_choice("fusion", FUSIONS)
        if not isinstance(self.fusion_norm, bool):
            self.invalid("fusion_norm", "must be true or false")
        self.check_ints("window")
        if isinstance(self.swa_plan, str):
            self.check_choice("swa_plan", SWA_PLANS, " or a list of global layers")
        else:
            plan = list(self.swa_plan)
            if any(not isinstance(i, int) or not 0 <= i < self.n_layers for i in plan):
                self.invalid("swa_plan", f"global layer indices must lie in [0, {self.n_layers})")
            self.swa_plan = sorted(set(plan))
        if self.swa_plan != "none" and self.n_heads == 0:
            self.invalid("swa_plan", "sliding-window attention needs attention heads (n_heads > 0)")
        if self.kv_share:
            if self.n_heads == 0:
                self.invalid("kv_share", "KV sharing needs attention heads (n_heads > 0)")
            groups = self.kv_groups()
            swa = set(self.swa_layers())
            seen: set[int] = set()
            for g in groups:
                if len(g) < 1 or any(i not in swa for i in g) or seen & set(g):
                    self.invalid(
                        "kv_share_groups",
                        "groups must be disjoint lists of SWA layers (global layers are never shared)",
                    )
                if g != list(range(g[0], g[0] + len(g))):
                    self.invalid("kv_share_groups", "each group must be consecutive layers")
                seen |= set(g)
        elif self.kv_share_groups is not None:
            self.invalid("kv_share_groups", "set kv_share=true to use explicit groups")
        self.check_ints("n_meta_tokens", low=0)
        self.check_choice("attn_backend", backends("attention"))
        self.check_choice("scan_backend", backends("scan"))
        if self.d_ff is not None:
            self.check_ints("d_ff")

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
    def value_head_dim(self) -> int:
        """The V head dim in use: ``v_head_dim`` when set; else, as released, d_inner / n_heads in hybrid layers
        (attention output width = SSM inner width) and the Q/K head dim in attention-only layers (Llama)."""
        if self.n_heads == 0:
            return 0
        if self.v_head_dim is not None:
            return self.v_head_dim
        return self.d_inner // self.n_heads if self.ssm else self.qk_head_dim

    @property
    def attn_out_dim(self) -> int:
        return self.n_heads * self.value_head_dim

    @property
    def split_out_proj(self) -> bool:
        """Hybrid mean-fusion layers project each branch on its own (the paper's ablation layout, ``v_head_dim``
        set); the released layout shares one W_out."""
        return self.v_head_dim is not None and self.n_heads > 0 and self.ssm and self.fusion == "mean"

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
            groups += [run[j : j + 2] for j in range(first, len(run), 2)]
        return groups

    def kv_producer(self) -> list[int]:
        """kv_producer()[i] = the layer whose K/V layer i uses (itself unless it is a sharing consumer)."""
        owner = list(range(self.n_layers))
        for g in self.kv_groups():
            for i in g[1:]:
                owner[i] = g[0]
        return owner


__all__ = ["FUSIONS", "SWA_PLANS", "ModelConfig", "backends"]
