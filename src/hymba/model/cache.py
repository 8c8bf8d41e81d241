"""The hybrid decoding cache: K/V per KV-producing layer, SSM conv and recurrent state per layer.

- Global layers: a preallocated buffer of ``max_len`` token slots.
- Sliding-window layers: a ring buffer of exactly ``window`` slots (memory independent of sequence length).
- Both keep the meta tokens' K/V in ``n_meta`` pinned slots; meta tokens are processed once at prefill.
- KV-sharing consumers hold nothing: they read their producer's entry.
- SSM layers: the conv inputs and the recurrent state of the shapes their head declares
  (:meth:`hymba.model.ssm.SSMHead.state_shapes`; Mamba-1: [d_inner, d_conv - 1] and [d_inner, d_state]).

Which layers hold what comes from the per-layer plan (:func:`hymba.model.plan.layer_plans`).

Slots are addressed by token index j (the column of ``input_ids``, padding included, same for every row);
each slot records its position and validity, and attention masks are built from positions, so the ring's
out-of-order slots and left padding need no special cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from hymba.config import ModelConfig
from hymba.model.plan import layer_plans
from hymba.model.ssm import SSMState


@dataclass
class LayerKV:
    """K/V of one producing layer: ``n_meta`` pinned meta slots, then C token slots."""

    k: Tensor  # [B, Hkv, M + C, Dk]
    v: Tensor  # [B, Hkv, M + C, Dv]
    pos: Tensor  # [B, M + C] long
    valid: Tensor  # [B, M + C] bool
    n_meta: int
    window: int | None  # None = global (C = max_len); else a ring of C = window slots
    # False: pos and valid are shared with an earlier layer's entry, which writes them at each decode step
    keeps_books: bool = True
    meta: Tensor = field(init=False)  # [1, M + C] bool, the pinned meta slots (built once, read every step)

    def __post_init__(self) -> None:
        self.meta = (torch.arange(self.k.shape[2], device=self.k.device) < self.n_meta)[None]

    @property
    def capacity(self) -> int:
        return self.k.shape[2] - self.n_meta

    def write_meta(self, k: Tensor, v: Tensor) -> None:
        """The meta tokens' K/V [B, Hkv, M, D], written once at prefill."""
        M = self.n_meta
        self.k[:, :, :M] = k
        self.v[:, :, :M] = v
        self.pos[:, :M] = torch.arange(M, device=self.pos.device)
        self.valid[:, :M] = True

    def write(self, j0: int, k: Tensor, v: Tensor, pos: Tensor, valid: Tensor) -> None:
        """Store tokens j0 .. j0+T-1 (k, v [B, Hkv, T, D]; pos, valid [B, T]); a ring keeps the last C."""
        T, C, M = k.shape[2], self.capacity, self.n_meta
        if self.window is None and j0 + T > C:
            raise ValueError(f"cache full: {j0 + T} tokens > max_len={C} given at prefill")
        start = max(0, T - C)
        first = j0 + start if self.window is None else (j0 + start) % C
        if first + T - start <= C:  # contiguous slots
            idx = slice(M + first, M + first + T - start)
        else:
            idx = M + torch.arange(j0 + start, j0 + T, device=k.device) % C
        self.k[:, :, idx] = k[:, :, start:].to(self.k.dtype)
        self.v[:, :, idx] = v[:, :, start:].to(self.v.dtype)
        self.pos[:, idx] = pos[:, start:]
        self.valid[:, idx] = valid[:, start:]

    def slot(self, j: Tensor) -> Tensor:
        """The [1] slot of token index ``j`` (a global cache is never full here: decode_step checks)."""
        return self.n_meta + j % self.capacity

    def append(
        self, j: Tensor, k: Tensor, v: Tensor, pos: Tensor, slot: Tensor | None = None, bookkeeping: bool = True
    ) -> None:
        """Decode: store one token (k, v [B, Hkv, 1, D]; pos [B, 1]) at token index ``j``, a [1] long tensor
        on the cache's device. Device ops only (no host sync), so a decode step can run as a CUDA graph.
        ``slot``: :meth:`slot` of ``j`` where the caller has it; ``bookkeeping=False`` leaves ``pos`` and
        ``valid`` alone (the entry sharing them that ``keeps_books`` has written them this step)."""
        slot = self.slot(j) if slot is None else slot
        self.k.index_copy_(2, slot, k.to(self.k.dtype))
        self.v.index_copy_(2, slot, v.to(self.v.dtype))
        if bookkeeping:
            self.pos.index_copy_(1, slot, pos)
            self.valid.index_fill_(1, slot, True)

    def is_meta(self) -> Tensor:
        """[1, M + C] bool."""
        return self.meta


@dataclass
class HybridCache:
    config: ModelConfig
    kv: dict[int, LayerKV] = field(default_factory=dict)
    conv: dict[int, Tensor] = field(default_factory=dict)  # [B, *SSMState.conv] (Mamba-1: [B, d_inner, d_conv - 1])
    ssm: dict[int, Tensor] = field(default_factory=dict)  # [B, *SSMState.ssm] (Mamba-1: [B, d_inner, d_state])
    length: int = 0  # token columns consumed (padding included)
    next_pos: Tensor | None = None  # [B] position of the next token
    step: Tensor | None = None  # [1] long, ``length`` on the device (decode indexes slots with it)

    @classmethod
    def allocate(
        cls,
        config: ModelConfig,
        batch: int,
        max_len: int,
        *,
        device="cpu",
        dtype: torch.dtype = torch.float32,
        ssm_dtype: torch.dtype = torch.float32,
    ) -> HybridCache:
        """Allocate every buffer up front (``device="meta"`` sizes a cache without memory). Entries of one
        capacity share their slots' positions and validity (the same tokens land in the same slots of each):
        a decode step writes them once per capacity, not once per layer."""
        c = config
        cache = cls(c)
        M = c.n_meta_tokens
        books: dict[int, tuple[Tensor, Tensor]] = {}  # slots -> (pos, valid) of the first entry that size
        for plan in layer_plans(c):
            i, window = plan.index, plan.window
            if plan.has_kv:
                S = M + (window if window is not None else max_len)
                kw = dict(device=device, dtype=dtype)
                keeps = S not in books
                if keeps:
                    books[S] = (
                        torch.zeros(batch, S, dtype=torch.long, device=device),
                        torch.zeros(batch, S, dtype=torch.bool, device=device),
                    )
                cache.kv[i] = LayerKV(
                    torch.zeros(batch, c.kv_heads, S, c.qk_head_dim, **kw),
                    torch.zeros(batch, c.kv_heads, S, c.value_head_dim, **kw),
                    *books[S],
                    M,
                    window,
                    keeps,
                )
            if plan.ssm_state is not None:
                cache.conv[i] = torch.zeros(batch, *plan.ssm_state.conv, device=device, dtype=dtype)
                cache.ssm[i] = torch.zeros(batch, *plan.ssm_state.ssm, device=device, dtype=ssm_dtype)
        return cache

    def ssm_state(self, i: int) -> SSMState[Tensor]:
        """Layer ``i``'s SSM state buffers (the head's ``step`` updates them in place)."""
        return SSMState(self.conv[i], self.ssm[i])

    def narrow(self, start: int, n: int) -> HybridCache:
        """Rows ``start .. start+n-1`` as a cache of views: prefilling it fills those rows of this cache."""

        def rows(t: Tensor) -> Tensor:
            return t.narrow(0, start, n)

        kv = {
            i: LayerKV(rows(e.k), rows(e.v), rows(e.pos), rows(e.valid), e.n_meta, e.window, e.keeps_books)
            for i, e in self.kv.items()
        }
        return HybridCache(
            self.config, kv, {i: rows(t) for i, t in self.conv.items()}, {i: rows(t) for i, t in self.ssm.items()}
        )

    def check_room(self) -> None:
        """Raise if a global (non-ring) layer has no free slot for one more token."""
        for e in self.kv.values():
            if e.window is None and self.length >= e.capacity:
                raise ValueError(f"cache full: {self.length + 1} tokens > max_len={e.capacity} given at prefill")

    def nbytes(self) -> dict[str, int]:
        """Bytes actually allocated: K/V (meta slots included) and SSM (conv + recurrent) state."""

        def size(t: Tensor) -> int:
            return t.numel() * t.element_size()

        kv = sum(size(e.k) + size(e.v) for e in self.kv.values())
        ssm = sum(size(t) for t in self.conv.values()) + sum(size(t) for t in self.ssm.values())
        return {"kv": kv, "ssm": ssm, "total": kv + ssm}
