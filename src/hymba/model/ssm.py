"""The SSM heads of a Hymba layer, each kind one class behind the small interface of :class:`SSMHead`.

A head owns its parameters and says what the rest of the model needs to know about it: the widths it reads
from the block's fused input projection, the width of its output, the shapes of its decoding state (the
cache allocates them), and its FLOPs. It runs a full sequence (``forward``, which can also return the final
state to prefill a cache) or one decoding token (``step``, updating that state in place). The scan itself is
a kernel chosen by backend name (:mod:`hymba.kernels.scan`).

:data:`SSM_KINDS` maps a kind's name to its class; :func:`ssm_head_class` picks the class of a config. Today
the only kind is Mamba-1 (Gu & Dao 2023), the SSM of the released Hymba; a second kind is one class here, its
entry in :data:`SSM_KINDS` and the config value that names it.
"""

from __future__ import annotations

import math
from typing import ClassVar, Generic, NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hymba.config import ModelConfig
from hymba.kernels.norm import rms_norm_split
from hymba.kernels.scan import causal_conv1d, causal_conv1d_update, selective_scan, selective_state_update
from hymba.model.layers import RMSNorm

T = TypeVar("T")


class SSMState(NamedTuple, Generic[T]):
    """One layer's SSM decoding state: tensors in a cache, or (from ``state_shapes``) one row's shapes."""

    conv: T  # [B, channels, d_conv - 1]: the last conv inputs, in the cache dtype
    ssm: T  # [B, ...]: the recurrent state, fp32 unless the cache is allocated otherwise


class SSMHead(nn.Module):
    """The interface every SSM head kind implements (construction: ``Head(config)``).

    The block splits its fused input projection into ``in_widths(config)`` parts after Q, K and V and passes
    them to ``forward`` / ``step`` in that order; the head's output [B, S, out_width(config)] goes to the
    block's fusion with the attention branch.
    """

    # parameters (names inside the head) that HymbaLM's normal init leaves as constructed
    keeps_init: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def in_widths(cls, c: ModelConfig) -> tuple[int, ...]:
        """Widths of the parts of the block's input projection this head reads."""
        raise NotImplementedError

    @classmethod
    def out_width(cls, c: ModelConfig) -> int:
        raise NotImplementedError

    @classmethod
    def state_shapes(cls, c: ModelConfig) -> SSMState[tuple[int, ...]]:
        """Shapes of one row's decoding state (the cache prepends the batch)."""
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """The head's own initialisation, run after HymbaLM's normal init of every matrix."""
        raise NotImplementedError

    def forward(
        self, *inputs: Tensor, valid: Tensor | None = None, return_state: bool = False
    ) -> Tensor | tuple[Tensor, SSMState[Tensor]]:
        """A full sequence: inputs [B, S, w] for w in ``in_widths``; valid [B, S] False at left padding.
        Returns y [B, S, out_width], and with ``return_state`` the state after the last position."""
        raise NotImplementedError

    def step(self, *inputs: Tensor, state: SSMState[Tensor], weights: tuple[Tensor, ...] | None = None) -> Tensor:
        """One decoding token: inputs [B, w]; updates ``state`` in place. Returns y [B, out_width]. ``weights``:
        the head's :meth:`step_weights`, where the caller holds them."""
        raise NotImplementedError

    def step_weights(self) -> tuple[Tensor, ...] | None:
        """Copies of weights laid out for the decode step's GEMMs (held by a graphed decoder, which takes them
        once; they do not follow later edits of the parameters), or None where the parameters' own layout is as
        fast."""
        return None

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token of this head: its own weights and its scan (the
        projection rows it reads from the block are counted with the block's matmuls)."""
        raise NotImplementedError


class Mamba1(SSMHead):
    """Mamba-1 selective scan on the x stream, gated by z (Gu & Dao 2023), with RMSNorm on dt, B and C as
    released. Reads x and z [B, S, d_inner] from the block's projection; state: the last ``d_conv - 1`` conv
    inputs [d_inner, d_conv - 1] and the recurrent state [d_inner, d_state]."""

    keeps_init = ("conv1d.weight",)  # PyTorch's default conv init, as in mamba_ssm

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.c = c
        d_in, r, n = c.d_inner, c.ssm_dt_rank, c.d_state
        self.conv1d = nn.Conv1d(d_in, d_in, c.d_conv, groups=d_in, padding=c.d_conv - 1)
        self.x_proj = nn.Linear(d_in, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, d_in, bias=False)
        self.dt_bias = nn.Parameter(torch.empty(d_in))
        self.A_log = nn.Parameter(torch.empty(d_in, n))
        self.D = nn.Parameter(torch.empty(d_in))
        self.dt_norm = RMSNorm(r, c.norm_eps)
        self.B_norm = RMSNorm(n, c.norm_eps)
        self.C_norm = RMSNorm(n, c.norm_eps)

    @classmethod
    def in_widths(cls, c: ModelConfig) -> tuple[int, int]:
        return c.d_inner, c.d_inner  # x, z

    @classmethod
    def out_width(cls, c: ModelConfig) -> int:
        return c.d_inner

    @classmethod
    def state_shapes(cls, c: ModelConfig) -> SSMState[tuple[int, ...]]:
        return SSMState((c.d_inner, c.d_conv - 1), (c.d_inner, c.d_state))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The standard Mamba initialisation: S4D-real A, dt log-uniform in [dt_min, dt_max]."""
        c = self.c
        std = c.ssm_dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(c.d_inner) * (math.log(c.dt_max) - math.log(c.dt_min)) + math.log(c.dt_min))
        dt = dt.clamp(min=c.dt_init_floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log.copy_(torch.log(torch.arange(1, c.d_state + 1, dtype=torch.float32)).repeat(c.d_inner, 1))
        self.D.fill_(1.0)

    def _dt_B_C(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r, n = self.c.ssm_dt_rank, self.c.d_state
        dt, B, C = self.x_proj(u).split([r, n, n], dim=-1)
        return self.dt_proj(self.dt_norm(dt)), self.B_norm(B), self.C_norm(C)

    def forward(
        self, x: Tensor, z: Tensor, valid: Tensor | None = None, return_state: bool = False
    ) -> Tensor | tuple[Tensor, SSMState[Tensor]]:
        """x, z [B, S, d_inner] -> y [B, S, d_inner] (and the final state). Everything stays in the [B, S, D]
        layout of the block's projection: the scan reads transposed views, and where the Triton kernels run
        (no gradient: prefill, evaluation) no tensor is copied to another layout."""
        A = -torch.exp(self.A_log.float())
        S = x.shape[1]
        backend = self.c.scan_backend
        u = causal_conv1d(x, self.conv1d.weight, self.conv1d.bias, valid=valid, silu=True, backend=backend)
        dt, B, C = self._dt_B_C(u)
        out = selective_scan(
            u.transpose(1, 2),
            dt.transpose(1, 2),
            A,
            B.transpose(1, 2),
            C.transpose(1, 2),
            self.D.float(),
            z.transpose(1, 2),
            self.dt_bias.float(),
            delta_softplus=True,
            return_last_state=return_state,
            backend=backend,
        )
        if not return_state:
            return out.transpose(1, 2)
        y, state = out
        k = self.c.d_conv - 1
        tail = x[:, -k:] if valid is None else x[:, -k:].masked_fill(~valid[:, -k:, None], 0.0)
        conv = F.pad(tail.transpose(1, 2), (max(0, k - S), 0))  # (B, d_inner, d_conv - 1), zeros before a short prompt
        return y.transpose(1, 2), SSMState(conv, state)

    def step(
        self, x: Tensor, z: Tensor, state: SSMState[Tensor], weights: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        """x, z [B, d_inner] -> y [B, d_inner]; shifts the conv inputs and advances the recurrent state, each
        in place by one kernel (the scan backend's decode ops). The dt, B and C norms of ``_dt_B_C`` run as one
        op on x_proj's output (:func:`hymba.kernels.norm.rms_norm_split`), A = -exp(A_log) is formed inside the
        state update, and D and the dt bias are read in their own dtype. ``weights``: x_proj's and dt_proj's
        weights zero-padded (:meth:`step_weights`)."""
        backend = self.c.scan_backend
        u = causal_conv1d_update(state.conv, x, self.conv1d.weight, self.conv1d.bias, silu=True, backend=backend)
        x_w, dt_w = weights or (self.x_proj.weight, self.dt_proj.weight)
        norms = (self.dt_norm, self.B_norm, self.C_norm)
        dt, B, C = rms_norm_split(
            F.linear(u, x_w), tuple(n.weight for n in norms), self.dt_norm.eps, first_width=dt_w.shape[1]
        )
        return selective_state_update(
            state.ssm,
            u,
            F.linear(dt, dt_w),
            self.A_log,
            B,
            C,
            self.D,
            z,
            self.dt_bias,
            delta_softplus=True,
            backend=backend,
            A_is_log=True,
        )

    def step_weights(self) -> tuple[Tensor, Tensor] | None:
        """x_proj's weight with its rows (dt, B, C) padded with zeros to a multiple of 8, and dt_proj's with its
        columns (K = the dt rank) padded so: at batch 128 on an H200 cuBLAS takes an align-2 kernel for Hymba's
        132 rows and K = 100 (x_proj 7.9 against 6.4 us, dt_proj 4.6 against 2.8 us a layer). None when both
        are aligned already. The split norm writes dt zero-padded to the padded K (``first_width``)."""
        r, n = self.c.ssm_dt_rank, self.c.d_state
        rows, k = -(-(r + 2 * n) // 8) * 8, -(-r // 8) * 8
        if rows == r + 2 * n and k == r:
            return None
        return F.pad(self.x_proj.weight.detach(), (0, 0, 0, rows - r - 2 * n)), F.pad(
            self.dt_proj.weight.detach(), (0, k - r)
        )

    def flops_per_token(self, seq_len: int) -> float:
        """6 x the weights (A, D and dt bias act elementwise; the few RMSNorm weights count, as they always
        have) plus the scan: 9 FLOPs per channel and state forward (mamba_ssm's count), x3 with backward."""
        c = self.c
        weights = sum(p.numel() for p in self.parameters())
        weights -= self.A_log.numel() + self.D.numel() + self.dt_bias.numel()
        return float(6 * weights + 3 * 9 * c.d_inner * c.d_state)


SSM_KINDS: dict[str, type[SSMHead]] = {"mamba1": Mamba1}


def ssm_head_class(c: ModelConfig) -> type[SSMHead] | None:
    """The SSM head class of config ``c``, None without an SSM branch (``ssm=False``). Every SSM is Mamba-1
    today; a second kind reads its name from a config field here."""
    return SSM_KINDS["mamba1"] if c.ssm else None


__all__ = ["SSMHead", "SSMState", "Mamba1", "SSM_KINDS", "ssm_head_class"]
