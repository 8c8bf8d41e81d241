"""The per-layer plan: what each layer of a :class:`~hymba.config.ModelConfig` is, worked out once.

Attention span (global or a sliding window), K/V producer or consumer (cross-layer KV sharing), the SSM head
kind and the shapes of its decoding state. The block, the decoding cache and the FLOP count all read it, so
no two of them derive a layer's layout on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from hymba.config import ModelConfig
from hymba.model.ssm import SSMHead, SSMState, ssm_head_class


@dataclass(frozen=True)
class LayerPlan:
    index: int
    attention: bool  # has an attention branch
    window: int | None  # sliding window of its attention; None = global (or no attention)
    kv_producer: int  # the layer whose K/V it attends over: its own index unless it is a KV-sharing consumer
    ssm: type[SSMHead] | None  # the SSM head kind; None = no SSM branch
    ssm_state: SSMState[tuple[int, ...]] | None  # one row's decoding-state shapes of that head

    @property
    def has_kv(self) -> bool:
        """Computes and caches its own K/V (an attention layer that is not a sharing consumer)."""
        return self.attention and self.kv_producer == self.index

    @property
    def is_global(self) -> bool:
        return self.attention and self.window is None


def layer_plans(c: ModelConfig) -> list[LayerPlan]:
    """One :class:`LayerPlan` per layer of ``c``."""
    swa = set(c.swa_layers())
    producer = c.kv_producer()
    head = ssm_head_class(c)
    state = head.state_shapes(c) if head is not None else None
    return [
        LayerPlan(i, c.n_heads > 0, c.window if i in swa else None, producer[i], head, state) for i in range(c.n_layers)
    ]


__all__ = ["LayerPlan", "layer_plans"]
