"""Hymba: attention heads and Mamba SSM heads side by side in every layer.

Dong et al., "Hymba: A Hybrid-head Architecture for Small Language Models", arXiv 2411.13676 (ICLR 2025).
One input projection per layer yields Q, K, V and the SSM head's inputs (Mamba-1: the stream x and gate z;
layers that reuse another layer's K/V project no K, V). The SSM head is its own module
(:mod:`hymba.model.ssm`); what each layer is (window, K/V producer, SSM state) comes from its
:class:`~hymba.model.plan.LayerPlan`. The branch outputs are fused by paper Eq. 3,
    Y = W_out((beta1 * norm(attn) + beta2 * norm(ssm)) / 2),
or by one projection of their concatenation. Learned meta tokens are prepended to every sequence.

Sequence layout inside the model: ``[left padding][meta tokens][tokens]``. Padding sits before the meta
tokens so that, for every row, meta tokens start at position 0 and the SSM and its conv see exactly what an
unpadded row sees (padding enters neither the state nor attention).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hymba.config import ModelConfig
from hymba.kernels.attention import MaskSpec, attention, auto_takes_flex, rotary_qk
from hymba.kernels.norm import rms_norm, rms_norm_mean
from hymba.model.cache import HybridCache
from hymba.model.layers import RMSNorm, Rotary, SwiGLU
from hymba.model.plan import LayerPlan, layer_plans
from hymba.runtime import available_memory


@dataclass
class ModelOutput:
    logits: Tensor  # [B, T, vocab], real tokens only
    loss: Tensor | None = None


@dataclass
class _Context:
    """What every layer of one forward call shares."""

    spec: MaskSpec  # global-attention mask spec (SWA layers add their window)
    cos: Tensor | None
    sin: Tensor | None
    valid: Tensor | None  # [B, S] False at padding (None: no padding)
    cache: HybridCache | None = None
    decoding: bool = False
    shared_kv: dict[int, tuple[Tensor, Tensor, MaskSpec]] = field(default_factory=dict)
    pad: Tensor | None = None  # [B] left padding per row (prefill)
    side: torch.cuda.Stream | None = None  # decoding: the SSM branch's CUDA stream, beside attention's
    ssm_weights: dict[int, tuple[Tensor, ...]] | None = None  # decoding: layer -> its SSM head's step_weights()
    slots: dict[tuple[int, int], Tensor] = field(default_factory=dict)  # decoding: the token's slot per (M, C)


class HymbaBlock(nn.Module):
    """Pre-norm hybrid mixer (attention + SSM heads in parallel) and a SwiGLU FFN, each with its own norm."""

    def __init__(self, c: ModelConfig, plan: LayerPlan):
        super().__init__()
        self.c, self.plan, self.i = c, plan, plan.index
        H, Hkv, dk, dv = c.n_heads, c.kv_heads, c.qk_head_dim, c.value_head_dim
        kv = plan.has_kv
        # widths of Q, K, V (0 wide when absent) and of the SSM head's inputs in the one input projection
        self.split = [
            H * dk,
            Hkv * dk if kv else 0,
            Hkv * dv if kv else 0,
            *(plan.ssm.in_widths(c) if plan.ssm is not None else ()),
        ]
        self.mixer_norm = RMSNorm(c.d_model, c.norm_eps)
        self.in_proj = nn.Linear(c.d_model, sum(self.split), bias=False)
        self.ssm = plan.ssm(c) if plan.ssm is not None else None
        a_out = c.attn_out_dim if plan.attention else 0
        s_out = plan.ssm.out_width(c) if plan.ssm is not None else 0
        both = plan.attention and plan.ssm is not None
        if both and c.fusion == "mean":  # beta1, beta2 of Eq. 3 (fusion_norm=false: the ablation without them)
            self.attn_norm = RMSNorm(a_out, c.norm_eps) if c.fusion_norm else nn.Identity()
            self.ssm_norm = RMSNorm(s_out, c.norm_eps) if c.fusion_norm else nn.Identity()
        out_in = a_out + s_out if both and c.fusion == "concat" else (s_out or a_out)
        if both and c.split_out_proj:  # the paper's ablation layout: W_out split per branch, attention's here
            self.attn_proj = nn.Linear(a_out, c.d_model, bias=False)
        self.out_proj = nn.Linear(out_in, c.d_model, bias=False)
        self.ffn_norm = RMSNorm(c.d_model, c.norm_eps)
        self.ffn = SwiGLU(c.d_model, c.ffn_dim)

    def _attention(self, q: Tensor, k: Tensor | None, v: Tensor | None, ctx: _Context) -> Tensor:
        c = self.c
        B, S = q.shape[:2]
        q = q.view(B, S, c.n_heads, c.qk_head_dim).transpose(1, 2)  # (B, H, S, Dk)
        if self.plan.has_kv:
            k = k.view(B, S, c.kv_heads, c.qk_head_dim).transpose(1, 2)  # (B, Hkv, S, Dk)
            v = v.view(B, S, c.kv_heads, c.value_head_dim).transpose(1, 2)  # (B, Hkv, S, Dv)
        if c.rope and not torch.is_grad_enabled():  # prefill, evaluation: one op for q and k (a kernel on CUDA)
            q, k = rotary_qk(q, k if self.plan.has_kv else None, ctx.cos, ctx.sin)
        elif c.rope:
            q = Rotary.apply(q, ctx.cos, ctx.sin)
            k = Rotary.apply(k, ctx.cos, ctx.sin) if self.plan.has_kv else k
        if self.plan.has_kv:
            spec = ctx.spec.with_window(self.plan.window)
            if ctx.cache is not None:
                k, v, spec = self._cache_kv(k, v, spec, ctx)
            ctx.shared_kv[self.i] = (k, v, spec)
        k, v, spec = ctx.shared_kv[self.plan.kv_producer]  # post-RoPE K/V, own or the producer's
        o = attention(q, k, v, spec, backend=c.attn_backend)  # (B, H, S, Dv)
        return o.transpose(1, 2).reshape(B, S, c.attn_out_dim)

    def _cache_kv(self, k: Tensor, v: Tensor, spec: MaskSpec, ctx: _Context):
        """Prefill: store K/V, attend over the fresh ones. Decode: store the new token, attend over the cache."""
        entry, cache, M = ctx.cache.kv[self.i], ctx.cache, self.c.n_meta_tokens
        if not ctx.decoding:
            B = k.shape[0]
            rows = torch.arange(B, device=k.device)[:, None]
            meta_idx = ctx.pad[:, None] + torch.arange(M, device=k.device)  # (B, M) meta slots per row
            entry.write_meta(
                k.transpose(1, 2)[rows, meta_idx].transpose(1, 2), v.transpose(1, 2)[rows, meta_idx].transpose(1, 2)
            )
            # Token slots hold columns M.. of [pad][meta][tokens]; in a row padded by p those columns begin
            # with p pad or meta columns, and meta already has its pinned slots: only positions >= M are tokens.
            pos = spec.q_pos[:, M:]
            valid = pos >= M if ctx.valid is None else ctx.valid[:, M:] & (pos >= M)
            entry.write(0, k[:, :, M:], v[:, :, M:], pos, valid)
            return k, v, spec
        # the slot once per capacity, not once per layer; entries of one capacity share pos and valid, which the
        # first of them (in layer order) writes (HybridCache.allocate)
        key = (entry.n_meta, entry.capacity)
        if key not in ctx.slots:
            ctx.slots[key] = entry.slot(cache.step)
        entry.append(cache.step, k, v, spec.q_pos, slot=ctx.slots[key], bookkeeping=entry.keeps_books)
        return entry.k, entry.v, MaskSpec(spec.q_pos, entry.pos, entry.is_meta(), entry.valid, self.plan.window)

    def _ssm(self, inputs: list[Tensor], ctx: _Context) -> Tensor:
        """The SSM head on its inputs [B, S, w]; prefill stores its final state, decoding advances it."""
        if ctx.decoding:
            weights = ctx.ssm_weights.get(self.i) if ctx.ssm_weights else None
            return self.ssm.step(*(t[:, 0] for t in inputs), state=ctx.cache.ssm_state(self.i), weights=weights)[
                :, None
            ]
        if ctx.cache is None:
            return self.ssm(*inputs, valid=ctx.valid)
        y, state = self.ssm(*inputs, valid=ctx.valid, return_state=True)
        for buf, t in zip(ctx.cache.ssm_state(self.i), state):
            buf.copy_(t)
        return y

    def forward(self, x: Tensor, ctx: _Context) -> Tensor:
        q, k, v, *s_in = self.in_proj(self.mixer_norm(x)).split(self.split, dim=-1)
        a = self._attention(q, k, v, ctx) if self.plan.attention else None
        s = self._ssm(s_in, ctx) if self.ssm is not None else None
        return self._fuse_ffn(x, a, s, fused=not torch.is_grad_enabled())

    def _fuse_ffn(self, x: Tensor, a: Tensor | None, s: Tensor | None, fused: bool) -> Tensor:
        """The branches' fusion, W_out, the residual and the FFN. ``fused`` (decoding, and any forward without
        autograd: prefill, evaluation): each norm site one op (the residual add fused into the FFN's norm, the
        two branch norms and their mean into one; Triton kernels on CUDA), op for op the same values."""

        def norm(t: Tensor, n: RMSNorm, residual: Tensor | None = None):
            return rms_norm(t, n.weight, n.eps, residual=residual)

        if a is not None and s is not None:
            if self.c.split_out_proj:  # Eq. 3 with W_out = [W_attn | W_ssm] acting on each branch
                y = (self.attn_proj(self.attn_norm(a)) + self.out_proj(self.ssm_norm(s))) / 2
            elif self.c.fusion == "mean":
                an, sn = self.attn_norm, self.ssm_norm
                one_op = fused and self.c.fusion_norm
                y = self.out_proj(rms_norm_mean(a, an.weight, s, sn.weight, an.eps) if one_op else (an(a) + sn(s)) / 2)
            else:
                y = self.out_proj(torch.cat([a, s], dim=-1))
        else:
            y = self.out_proj(a if a is not None else s)
        if not fused:
            x = x + y
            return x + self.ffn(self.ffn_norm(x))
        h, x = norm(y, self.ffn_norm, residual=x)  # x + y, and its norm
        return x + self.ffn(h)

    # ---- decoding: one token per row, on the decode ops (fused kernels on CUDA, the references on CPU) ------
    def step(self, x: Tensor, ctx: _Context) -> Tensor:
        """:meth:`forward` for one decoding token (x [B, 1, d_model], ``ctx.decoding``), op for op the same
        values: each norm site one op (see :meth:`_fuse_ffn`), RoPE of q and k one op, A = -exp(A_log) inside
        the SSM state update."""
        q, k, v, *s_in = self.in_proj(rms_norm(x, self.mixer_norm.weight, self.mixer_norm.eps)).split(self.split, -1)
        if ctx.side is not None and self.plan.attention and self.ssm is not None:
            # the branches meet only at the fusion: the SSM's small, latency-bound kernels run on a side stream
            # while attention reads the KV cache (forked after in_proj, joined before the fusion norm)
            main = torch.cuda.current_stream()
            ctx.side.wait_stream(main)
            with torch.cuda.stream(ctx.side):
                s = self._ssm(s_in, ctx)
            a = self._attention_step(q, k, v, ctx)
            main.wait_stream(ctx.side)
            return self._fuse_ffn(x, a, s, fused=True)
        a = self._attention_step(q, k, v, ctx) if self.plan.attention else None
        s = self._ssm(s_in, ctx) if self.ssm is not None else None
        return self._fuse_ffn(x, a, s, fused=True)

    def _attention_step(self, q: Tensor, k: Tensor | None, v: Tensor | None, ctx: _Context) -> Tensor:
        c = self.c
        B = q.shape[0]
        q = q.view(B, 1, c.n_heads, c.qk_head_dim).transpose(1, 2)  # (B, H, 1, Dk)
        if self.plan.has_kv:
            k = k.view(B, 1, c.kv_heads, c.qk_head_dim).transpose(1, 2)  # (B, Hkv, 1, Dk)
            v = v.view(B, 1, c.kv_heads, c.value_head_dim).transpose(1, 2)  # (B, Hkv, 1, Dv)
        if c.rope:
            q, k = rotary_qk(q, k if self.plan.has_kv else None, ctx.cos, ctx.sin)
        if self.plan.has_kv:
            ctx.shared_kv[self.i] = self._cache_kv(k, v, ctx.spec.with_window(self.plan.window), ctx)
        k, v, spec = ctx.shared_kv[self.plan.kv_producer]
        o = attention(q, k, v, spec, backend=c.attn_backend)  # (B, H, 1, Dv)
        return o.transpose(1, 2).reshape(B, 1, c.attn_out_dim)


class HymbaLM(nn.Module):
    """The Hymba language model; every row of the paper's design roadmap is a :class:`ModelConfig`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.meta_tokens = nn.Parameter(torch.empty(c.n_meta_tokens, c.d_model)) if c.n_meta_tokens else None
        self.rotary = Rotary(c.qk_head_dim, c.rope_base) if c.n_heads and c.rope else None
        self.plan = layer_plans(c)
        self.layers = nn.ModuleList(HymbaBlock(c, p) for p in self.plan)
        self.norm = RMSNorm(c.d_model, c.norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        c = self.config
        keep = {
            f"layers.{layer.i}.ssm.{n}" for layer in self.layers if layer.ssm is not None for n in layer.ssm.keeps_init
        }
        for name, p in self.named_parameters():
            if p.ndim >= 2 and name not in keep:
                # residual output projections scaled down with depth (GPT-2)
                scale = 1 / math.sqrt(2 * c.n_layers) if name.endswith(("out_proj.weight", "w_down.weight")) else 1
                nn.init.normal_(p, std=c.init_std * scale)
        for layer in self.layers:
            if layer.ssm is not None:
                layer.ssm.reset_parameters()

    # ---- forward -----------------------------------------------------------------------------------
    def _embed(self, input_ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """Embeddings [B, S, d], positions [B, S], validity [B, S] or None, left padding [B]."""
        B, T = input_ids.shape
        M = self.config.n_meta_tokens
        dev = input_ids.device
        tok = self.embed(input_ids)
        if attention_mask is None:
            x = tok if not M else torch.cat([self.meta_tokens.expand(B, M, -1).to(tok.dtype), tok], dim=1)
            pos = torch.arange(M + T, device=dev).expand(B, M + T)
            return x, pos, None, torch.zeros(B, dtype=torch.long, device=dev)
        mask = attention_mask.bool()
        if (mask[:, 1:].int() < mask[:, :-1].int()).any():
            raise ValueError("attention_mask must be left-padded (zeros before ones in every row)")
        pad = T - mask.sum(1)  # (B,)
        s = torch.arange(M + T, device=dev)[None]
        pos = s - pad[:, None]  # meta tokens at 0..M-1, tokens after them
        valid = pos >= 0
        x = tok.gather(1, (s - M).clamp(min=0)[..., None].expand(B, M + T, tok.shape[-1]))
        if M:
            is_meta = valid & (pos < M)
            meta = self.meta_tokens.to(tok.dtype)[pos.clamp(0, M - 1)]
            x = torch.where(is_meta[..., None], meta, x)
        x = x.masked_fill(~valid[..., None], 0.0)
        return x, pos.clamp(min=0), valid, pad

    def _run(self, x: Tensor, ctx: _Context) -> Tensor:
        for layer in self.layers:
            x = layer(x, ctx)
        return x

    def _context(self, pos: Tensor, valid: Tensor | None, dtype: torch.dtype, **kw) -> _Context:
        M = self.config.n_meta_tokens
        B, S = pos.shape
        is_meta = (pos < M) if valid is None else (pos < M) & valid
        plain = valid is None and not kw.get("decoding", False)  # keys == queries, [meta][tokens]
        spec = MaskSpec(pos, pos, is_meta, valid, None, M if plain else None)
        cos, sin = self.rotary.cos_sin(pos, dtype) if self.rotary is not None else (None, None)
        return _Context(spec, cos, sin, valid, **kw)

    def forward(
        self,
        input_ids: Tensor,
        labels: Tensor | None = None,
        attention_mask: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> ModelOutput:
        """Args:
            input_ids: [B, T] token ids.
            labels: [B, T] targets aligned with ``input_ids`` (labels[:, t] is the token after position t);
                -100 is ignored. With ``positions``: [B, K], the targets at those positions.
            attention_mask: [B, T], 1 for tokens and 0 for left padding.
            positions: [B, K] token positions: the LM head (and the loss) only there, for a loss that labels
                a few positions (MQAR's queries), where the full logits would be most of the memory.
        Returns:
            :class:`ModelOutput` with logits [B, T, vocab] of the real tokens ([B, K, vocab] with ``positions``)
            and the mean cross-entropy.
        """
        x, pos, valid, _ = self._embed(input_ids, attention_mask)
        x = self._run(x, self._context(pos, valid, x.dtype))[:, self.config.n_meta_tokens :]
        if positions is not None:
            x = x.gather(1, positions[..., None].expand(-1, -1, x.shape[-1]))
        logits = self.lm_head(self.norm(x))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        return ModelOutput(logits, loss)

    # ---- decoding ----------------------------------------------------------------------------------
    def allocate_cache(
        self, batch: int, max_len: int, dtype: torch.dtype | None = None, ssm_dtype: torch.dtype | None = None
    ) -> HybridCache:
        """A cache in ``dtype`` (default: the weights'), the SSM recurrent state in ``ssm_dtype`` (default fp32;
        the released code keeps it in the model's dtype, which halves the state's bytes at every decode step and
        rounds the state to that dtype after every token)."""
        p = self.embed.weight
        return HybridCache.allocate(
            self.config, batch, max_len, device=p.device, dtype=dtype or p.dtype, ssm_dtype=ssm_dtype or torch.float32
        )

    @torch.no_grad()
    def prefill(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        max_len: int | None = None,
        cache: HybridCache | None = None,
        last_only: bool = False,
        batch_chunk: int | None = None,
        ssm_dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, HybridCache]:
        """Run the prompt (meta tokens included) once and fill a fresh cache.

        Args:
            input_ids: [B, T]; attention_mask: [B, T] for left-padded prompts; max_len: token columns the
                cache must hold (prompt + new tokens; default T + 256); last_only: logits of the last
                position only (generation needs no more, and [B, T, vocab] can be the largest tensor);
                batch_chunk: prefill at most this many rows at a time into the one cache, which bounds the
                activation memory of long prompts (the paper's 8K x batch 128) by the chunk, not the batch;
                ssm_dtype: the SSM state's dtype in a fresh cache (:meth:`allocate_cache`).
        Returns:
            logits [B, T, vocab] (or [B, 1, vocab]) and the cache.
        """
        B, T = input_ids.shape
        cache = cache or self.allocate_cache(B, max_len or T + 256, ssm_dtype=ssm_dtype)
        if batch_chunk is not None and batch_chunk < B:
            parts = [
                self.prefill(
                    input_ids[i : i + batch_chunk],
                    None if attention_mask is None else attention_mask[i : i + batch_chunk],
                    cache=cache.narrow(i, min(batch_chunk, B - i)),
                    last_only=last_only,
                )
                for i in range(0, B, batch_chunk)
            ]
            self._start(cache, T, torch.cat([c.next_pos for _, c in parts]))
            return torch.cat([lg for lg, _ in parts]), cache
        x, pos, valid, pad = self._embed(input_ids, attention_mask)
        x = self._run(x, self._context(pos, valid, x.dtype, cache=cache, pad=pad))
        self._start(cache, T, pos[:, -1] + 1)
        x = x[:, -1:] if last_only else x[:, self.config.n_meta_tokens :]
        return self.lm_head(self.norm(x)), cache

    @staticmethod
    def _start(cache: HybridCache, T: int, next_pos: Tensor) -> None:
        cache.length = T
        cache.next_pos = next_pos.clone()
        cache.step = torch.full((1,), T, dtype=torch.long, device=next_pos.device)

    @torch.no_grad()
    def decode_step(self, next_ids: Tensor, cache: HybridCache) -> Tensor:
        """Feed one token per row ([B] or [B, 1]); returns logits [B, 1, vocab] and advances the cache."""
        cache.check_room()
        logits = self.decode_step_graphable(next_ids.view(-1, 1), cache)
        cache.length += 1
        return logits

    def decode_step_graphable(
        self,
        ids: Tensor,
        cache: HybridCache,
        head: Tensor | None = None,
        side: torch.cuda.Stream | None = None,
        ssm_weights: dict[int, tuple[Tensor, ...]] | None = None,
    ) -> Tensor:
        """The device work of :meth:`decode_step` (ids [B, 1]): no host sync and no Python-side state, so
        that :class:`hymba.model.graphs.GraphedDecoder` can capture it once and replay it. Advances
        ``cache.step`` and ``cache.next_pos`` in place; the caller advances ``cache.length``. ``head``: the
        LM head's weight padded (:meth:`padded_lm_head`); the logits are then a view of the vocabulary's rows.
        ``side``: a CUDA stream on which each hybrid layer's SSM branch runs beside its attention.
        ``ssm_weights``: the SSM heads' weights laid out for the step (:meth:`ssm_step_weights`)."""
        x = self.embed(ids)
        ctx = self._context(
            cache.next_pos[:, None], None, x.dtype, cache=cache, decoding=True, side=side, ssm_weights=ssm_weights
        )
        for layer in self.layers:
            x = layer.step(x, ctx)
        cache.step.add_(1)
        cache.next_pos.add_(1)
        h = rms_norm(x, self.norm.weight, self.norm.eps)
        if head is None:
            return self.lm_head(h)
        return F.linear(h, head)[..., : self.config.vocab_size]

    def ssm_step_weights(self) -> dict[int, tuple[Tensor, ...]]:
        """Layer -> copies of its SSM head's weights laid out for the decode step's GEMMs
        (:meth:`~hymba.model.ssm.SSMHead.step_weights`; for Hymba-1.5B x_proj and dt_proj zero-padded to
        multiples of 8, +49 MB), for layers where that pays. Taken once per graphed decoder, like
        :meth:`padded_lm_head`."""
        out = {}
        for layer in self.layers:
            w = layer.ssm.step_weights() if layer.ssm is not None else None
            if w is not None:
                out[layer.i] = w
        return out

    def padded_lm_head(self) -> Tensor | None:
        """A copy of the LM head's weight with its rows padded to a multiple of 64, for decoding on CUDA when
        the vocabulary is no multiple of 8 (Hymba's 32,001): at that width cuBLAS takes an unaligned kernel
        about 4x slower (H200, batch 128: 134 against 34 us per step; writing the logits into padded rows
        does not help, 134 us). None where no copy pays (CPU, an aligned vocabulary). The copy is
        taken once per decoder (+102 MB for Hymba-1.5B) and does not follow later in-place edits of the weight."""
        w = self.lm_head.weight
        V = w.shape[0]
        if w.device.type != "cuda" or V % 8 == 0:
            return None
        head = w.new_zeros(-(-V // 64) * 64, w.shape[1])
        head[:V] = w.detach()
        return head

    def decoder(
        self, cache: HybridCache, cuda_graph: bool = False, compile: bool = False, overlap: bool = False
    ) -> Callable[[Tensor], Tensor]:
        """``step(next_ids) -> logits [B, 1, vocab]`` for a prefilled cache: :meth:`decode_step`, or the same
        step replayed from a CUDA graph (:class:`~hymba.model.graphs.GraphedDecoder`, captured here), with
        ``compile`` the ``torch.compile``'d step captured, with ``overlap`` each hybrid layer's SSM branch on a
        second stream of the graph."""
        for flag, on in (("compile", compile), ("overlap", overlap)):
            if on and not cuda_graph:
                raise ValueError(
                    f"decoder({flag}=True) changes the step a CUDA graph captures: it needs cuda_graph=True"
                )
        if not cuda_graph:
            return partial(self.decode_step, cache=cache)
        from hymba.model.graphs import GraphedDecoder

        return GraphedDecoder(self, cache, compile=compile, overlap=overlap)

    def generation_bytes(self, batch: int, prompt_len: int, max_len: int, padded: bool = False) -> int:
        """About the peak memory (bytes) a prefill of ``batch`` x ``prompt_len`` tokens into a cache of
        ``max_len`` columns needs beyond the weights, for a check before anything is allocated: the cache as
        allocated, a layer's activations, and, where attention runs on ``sdpa`` (as
        :func:`~hymba.kernels.attention.auto_takes_flex` decides for ``auto``: CPU, padded batches), the
        scores and masks of one layer, which grow with the prompt length squared (about ``n_heads * 8 + 16``
        bytes per query-key pair, measured on CPU: tests/model/test_decoding.py)."""
        c, p = self.config, next(self.parameters())
        cache = HybridCache.allocate(c, batch, max_len, device="meta", dtype=p.dtype)
        T = prompt_len + c.n_meta_tokens
        total = sum(cache.nbytes().values()) + batch * T * c.d_model * 32 * p.element_size()
        flex = c.attn_backend == "flex" or (
            c.attn_backend == "auto" and auto_takes_flex(p.device.type, not padded, c.qk_head_dim, c.value_head_dim, T)
        )
        if not flex and any(plan.attention for plan in self.plan):
            total += batch * T * T * (c.n_heads * 8 + 16)
        return total

    def _check_memory(self, batch: int, prompt_len: int, max_len: int, padded: bool) -> None:
        device = next(self.parameters()).device
        free = available_memory(device)
        need = self.generation_bytes(batch, prompt_len, max_len, padded)
        if free is not None and need > 0.9 * free:
            raise ValueError(
                f"generate: a prefill of {batch} x {prompt_len:,} tokens needs about {need / 1e9:.1f} GB on "
                f"{device} but {free / 1e9:.1f} GB is free (attention over the whole prompt grows with its "
                f"length squared); shorten the prompt or use fewer prompts at once"
            )

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        seed: int | None = None,
        attention_mask: Tensor | None = None,
        eos_id: int | None = None,
        cuda_graph: bool = False,
        ssm_dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Sample ``max_new_tokens`` after each (left-padded) prompt; temperature 0 = greedy.

        ``cuda_graph`` replays the decode step from a CUDA graph (:class:`~hymba.model.graphs.GraphedDecoder`;
        CUDA only, same tokens, several times faster for small models), with each hybrid layer's SSM branch on
        a second stream (``decoder(overlap=True)``, the fastest measured step). ``ssm_dtype``: the SSM
        state's dtype in the cache (default fp32; see :meth:`allocate_cache`). Returns the new tokens
        [B, max_new_tokens]; rows that emitted ``eos_id`` are filled with it. ``max_new_tokens=0`` returns an
        empty [B, 0] tensor without running the model. A negative or non-finite ``temperature``, a negative
        ``max_new_tokens`` or a ``top_k`` below 1 is a ``ValueError`` naming the argument.
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"generate(max_new_tokens={max_new_tokens!r}): must be an integer >= 0")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"generate(temperature={temperature!r}): must be a finite number >= 0 (0 = greedy)")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"generate(top_k={top_k!r}): must be an integer >= 1, or None for all tokens")
        if input_ids.dim() != 2 or input_ids.shape[1] < 1:
            raise ValueError(f"generate(input_ids): expected [batch, prompt length >= 1], got {list(input_ids.shape)}")
        B, T = input_ids.shape
        if max_new_tokens == 0:
            return input_ids.new_empty((B, 0))
        gen = None
        if seed is not None:
            gen = torch.Generator(device=input_ids.device).manual_seed(seed)
        if cuda_graph and input_ids.device.type != "cuda":
            raise ValueError(f"generate(cuda_graph=True) needs CUDA tensors, got {input_ids.device}")
        padded = attention_mask is not None and not bool(attention_mask.all())
        self._check_memory(B, T, T + max_new_tokens, padded)
        logits, cache = self.prefill(
            input_ids, attention_mask, max_len=T + max_new_tokens, last_only=True, ssm_dtype=ssm_dtype
        )
        last = logits[:, -1]
        decode = self.decoder(cache, cuda_graph, overlap=cuda_graph)
        out = []
        done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        for step in range(max_new_tokens):
            nxt = sample_next(last.float(), temperature, top_k, gen)
            if eos_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
                done |= nxt == eos_id
            out.append(nxt)
            if step + 1 == max_new_tokens or (eos_id is not None and bool(done.all())):
                break
            last = decode(nxt)[:, -1]
        if len(out) < max_new_tokens:
            out += [torch.full_like(out[0], eos_id)] * (max_new_tokens - len(out))
        return torch.stack(out, dim=1)

    # ---- the released checkpoint format (hymba.model.pretrained) ------------------------------------
    @classmethod
    def from_pretrained(
        cls, path, device: str | torch.device | None = None, dtype: torch.dtype | str | None = None
    ) -> HymbaLM:
        """A model from a directory in NVIDIA's released layout (``config.json`` + ``model.safetensors`` or
        shards with ``model.safetensors.index.json``, official tensor names), in eval mode on ``device``
        (default CPU) in ``dtype`` (default: as stored). See :mod:`hymba.model.pretrained`."""
        from hymba.model.pretrained import load_pretrained

        return load_pretrained(path, device=device, dtype=dtype)

    def save_pretrained(self, path, extra_config: dict | None = None, max_shard_bytes: int | None = None) -> None:
        """Write the model in the released layout (what :meth:`from_pretrained` and the official code read);
        ``max_shard_bytes`` splits the weights into shards. See :func:`hymba.model.pretrained.save_pretrained`."""
        from hymba.model.pretrained import save_pretrained

        save_pretrained(self, path, extra_config=extra_config, max_shard_bytes=max_shard_bytes)

    # ---- accounting --------------------------------------------------------------------------------
    def param_breakdown(self) -> dict[str, int]:
        """Parameter counts by group: attention, ssm, ffn, embedding, norm, meta, total.

        The input projection is split by its Q/K/V vs SSM-input rows; a shared W_out by its input columns
        (mean fusion: half to each branch, both inputs being d_inner wide; concat: by the concatenated widths).
        """
        groups = dict.fromkeys(("attention", "ssm", "ffn", "embedding", "norm", "meta"), 0)
        c = self.config
        for name, p in self.named_parameters():
            n = p.numel()
            if name == "meta_tokens":
                groups["meta"] += n
            elif name.startswith(("embed", "lm_head")):
                groups["embedding"] += n
            elif ".ssm." in name:
                groups["ssm"] += n
            elif ".ffn." in name:
                groups["ffn"] += n
            elif name.endswith("in_proj.weight"):
                layer = self.layers[int(name.split(".")[1])]
                qkv = sum(layer.split[:3])
                groups["attention"] += qkv * c.d_model
                groups["ssm"] += n - qkv * c.d_model
            elif name.endswith("attn_proj.weight"):
                groups["attention"] += n
            elif name.endswith("out_proj.weight"):
                plan = self.plan[int(name.split(".")[1])]
                a_in = c.attn_out_dim if plan.attention and not c.split_out_proj else 0
                s_in = plan.ssm.out_width(c) if plan.ssm is not None else 0
                if c.fusion == "mean" and a_in and s_in:
                    a_in = s_in  # Eq. 3 feeds W_out the (d_inner wide) average of both branches
                a = n * a_in // (a_in + s_in)
                groups["attention"] += a
                groups["ssm"] += n - a
            elif "norm" in name:
                groups["norm"] += n
            else:
                raise AssertionError(f"parameter {name} has no group")
        groups["total"] = sum(p.numel() for p in self.parameters())
        return groups

    def attn_mamba_ratio(self) -> tuple[int, int]:
        """(attention, Mamba) parameters as the paper's "Param ratio Attn:Mamba" column counts them.

        In a layer with both branches the attention heads are their Q, K and V projections (the released code's
        attention has no projection of its own, ``attn_only_wo_proj=True``), and the Mamba heads the rest of the
        mixer: the x/z projection, conv, x_proj, dt_proj, A, D, their norms and the output projection W_out,
        which a Mamba-only layer has too (a concat W_out whole). The paper layout's own attention projection
        (``attn_proj``) is counted in neither. So counted, the `paper-layout` preset gives the paper's rows 2-4
        (1:8.48, 1:4.24, 1:2.12) and 5 (1:3.64) to the printed digits; counting attn_proj as attention gives
        1:6.36 / 3.18 / 1.59, and :meth:`param_breakdown`'s split of a shared W_out by its input columns is
        further off still (benchmarks/results/2026-12-07-cpu-s23-paper-layout.md). Attention-only layers
        count their output projection as attention."""
        c = self.config
        attn = ssm = 0
        for layer in self.layers:
            qkv = sum(layer.split[:3]) * c.d_model
            attn += qkv
            ssm += layer.in_proj.weight.numel() - qkv
            if layer.ssm is not None:
                ssm += sum(p.numel() for p in layer.ssm.parameters()) + layer.out_proj.weight.numel()
            else:
                attn += layer.out_proj.weight.numel()
        return attn, ssm

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token: 6 x matmul params, the attention term of each layer's
        span, and each SSM head's own count (:meth:`hymba.model.ssm.SSMHead.flops_per_token`)."""
        c = self.config
        b = self.param_breakdown()
        heads = [layer.ssm for layer in self.layers if layer.ssm is not None]
        dense = b["total"] - b["norm"] - b["meta"] - sum(p.numel() for h in heads for p in h.parameters())
        if not c.tie_embeddings:
            dense -= self.embed.weight.numel()  # lookup, not a matmul
        flops = 6 * dense
        S = seq_len + c.n_meta_tokens
        for plan in self.plan:
            if plan.attention:
                ctx = (S + 1) / 2 if plan.window is None else min(plan.window, (S + 1) / 2) + c.n_meta_tokens
                flops += 6 * c.n_heads * (c.qk_head_dim + c.value_head_dim) * ctx
        return float(flops + sum(h.flops_per_token(S) for h in heads))


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token lists of different lengths -> ids and attention mask [B, T], padding on the left (the layout
    :meth:`HymbaLM.prefill` and :meth:`HymbaLM.generate` take)."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, T - len(r) :] = 1
    return ids, mask


def sample_next(logits: Tensor, temperature: float, top_k: int | None, gen: torch.Generator | None) -> Tensor:
    """Next token per row from logits [B, vocab]: argmax at temperature 0, else top-k softmax sampling."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=gen)[:, 0]
