"""Decoding from a CUDA graph: one capture of a decode step per cache, replayed for every token.

A decode step of a small model is launch-bound (hundreds of kernels of microseconds each per token), so the
host, not the GPU, sets the pace. The hybrid cache has static shapes (preallocated global slots, fixed
rings, fixed SSM state) and :meth:`HymbaLM.decode_step_graphable` indexes it with device tensors only,
so the whole step can be captured once (``torch.cuda.CUDAGraph``) and replayed. The eager
:meth:`HymbaLM.decode_step` is the reference it is tested against.

With ``compile=True`` the captured step is the ``torch.compile``'d one (Inductor, default mode: its own
kernels fuse the step's elementwise glue, norms, rotary and casts, between the matmuls and our decode kernels,
which are custom ops; ``max-autotune`` was slower, 8.17 against 7.72 ms per Hymba-1.5B step on an H200).
The graph is still ours: compiled during the warm-up runs, then captured like the eager step.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from hymba.model.cache import HybridCache
from hymba.runtime import cuda_graph_capture


class GraphedDecoder:
    """``decode_step`` for one prefilled CUDA cache, replayed from a CUDA graph.

    >>> _, cache = model.prefill(ids, max_len=T + n)
    >>> step = GraphedDecoder(model, cache)
    >>> logits = step(next_ids)   # same as model.decode_step(next_ids, cache)
    """

    def __init__(self, model, cache: HybridCache, warmup: int = 2, compile: bool = False, overlap: bool = False):
        if cache.next_pos is None or cache.next_pos.device.type != "cuda":
            raise ValueError("GraphedDecoder needs a cache prefilled on a CUDA device")
        self.model, self.cache = model, cache
        # the graph reads this copy at replay: held here, or its memory would go back to the allocator
        self.head = model.padded_lm_head()
        self.ssm_weights = model.ssm_step_weights()  # x_proj, dt_proj padded to aligned GEMMs (same reason)
        # overlap: each hybrid layer's SSM branch on this stream, forked and joined inside the captured graph
        self.side = torch.cuda.Stream() if overlap else None
        step = partial(model.decode_step_graphable, head=self.head, side=self.side, ssm_weights=self.ssm_weights)
        if compile:
            # every model instance (and batch) is a recompile of the one method; past dynamo's default limit
            # of 8 it would silently run eagerly
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            step = torch.compile(step, dynamic=False)
        self.ids = torch.zeros(cache.next_pos.shape[0], 1, dtype=torch.long, device=cache.next_pos.device)
        with torch.no_grad():
            # Warm-up runs (Triton autotuning, cuBLAS handles) write one token; put the state back after each.
            # The K/V they leave in slot `step` is overwritten by the first real step.
            saved = self._state()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(max(warmup, 1)):
                    step(self.ids, cache)
                    self._restore(saved)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with cuda_graph_capture(self.graph):  # recorded, not run: the cache is untouched
                self.logits = step(self.ids, cache)

    def _state(self) -> list[Tensor]:
        c = self.cache
        return [t.clone() for t in (c.step, c.next_pos, *c.conv.values(), *c.ssm.values())]

    def _restore(self, saved: list[Tensor]) -> None:
        c = self.cache
        for dst, src in zip((c.step, c.next_pos, *c.conv.values(), *c.ssm.values()), saved):
            dst.copy_(src)

    def __call__(self, next_ids: Tensor) -> Tensor:
        """next_ids [B] or [B, 1] -> logits [B, 1, vocab] (a buffer overwritten by the next call)."""
        self.cache.check_room()
        self.ids.copy_(next_ids.view(-1, 1))
        self.graph.replay()
        self.cache.length += 1
        return self.logits
