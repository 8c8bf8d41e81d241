"""Efficiency measurements as the paper takes them: KV-cache size and generation throughput.

Generation is reported per decode mode against the memory-bandwidth floor: the bytes a decode step must read
(weights, K/V cache, SSM state) over the copy bandwidth measured in the same run.

Both measure real objects: ``cache_size`` allocates the model's :class:`~hymba.HybridCache` (on the meta
device, so an 8K cache of a 1.5B model costs no memory) and counts its bytes; ``generation_throughput``
times the decode phase of ``HymbaLM.generate``'s own prefill/decode path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from hymba.config import ModelConfig, load_sections
from hymba.model import HybridCache, HymbaLM

log = logging.getLogger("hymba.bench")
MB = 1e6  # the paper's MB (Hymba-1.5B: 78.9e6 bytes = "79 MB")


def load_model_config(path: str | Path) -> ModelConfig:
    """A model config TOML with a ``[model]`` table (e.g. ``configs/models/hymba-1.5b.toml``)."""
    return load_sections(path, {"model": ModelConfig})["model"]


def cache_size(
    cfg: ModelConfig, seq_len: int = 8192, dtype: torch.dtype = torch.float16, batch: int = 1
) -> dict[str, float]:
    """KV-cache and SSM-state size for ``seq_len`` tokens (meta tokens extra), as allocated.

    Returns kv_bytes, ssm_bytes, kv_mb, ssm_mb (MB = 1e6 bytes) and the number of KV-holding layers.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len={seq_len} must be >= 1")
    cache = HybridCache.allocate(cfg, batch, seq_len, device="meta", dtype=dtype, ssm_dtype=dtype)
    n = cache.nbytes()
    return {
        "kv_bytes": n["kv"],
        "ssm_bytes": n["ssm"],
        "kv_mb": n["kv"] / MB,
        "ssm_mb": n["ssm"] / MB,
        "kv_layers": len(cache.kv),
        "seq_len": seq_len,
    }


# eager steps; a CUDA graph of them; of the compiled step; either graph with the SSM branch on a second stream
DECODE_MODES = ("eager", "cuda_graph", "compiled_graph", "cuda_graph_overlap", "compiled_graph_overlap")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: str | torch.device, nbytes: int | None = None, iters: int = 10) -> float:
    """Bytes per second that a large device-to-device copy moves, reads and writes counted (the memory
    bandwidth a decode step is held against, measured in the same run). ``nbytes`` per buffer: 2 GiB on CUDA
    (far past any cache), 64 MiB elsewhere."""
    device = torch.device(device)
    nbytes = nbytes or (2**31 if device.type == "cuda" else 2**26)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        dst.copy_(src)
    _sync(device)
    seconds = time.perf_counter() - t0
    del src, dst
    return 2 * nbytes * iters / seconds


def decode_step_bytes(model: HymbaLM, cache: HybridCache) -> dict[str, int]:
    """Bytes one decode step must read: every weight once (an untied embedding table is a lookup of one row
    per sequence, not counted), the whole K/V cache as allocated and the SSM conv and recurrent state.

    Returns weights, kv, state, total (= step_bytes) and reread: the K/V that KV-sharing consumers read again
    from their producer (real traffic that the one-read floor does not count)."""
    lookup = None if model.config.tie_embeddings else model.embed.weight
    # parameters() yields a tied weight once
    weights = sum(p.numel() * p.element_size() for p in model.parameters() if p is not lookup)
    n = cache.nbytes()

    def size(t: torch.Tensor) -> int:
        return t.numel() * t.element_size()

    reread = sum(
        size(cache.kv[p.kv_producer].k) + size(cache.kv[p.kv_producer].v)
        for p in model.plan
        if p.attention and not p.has_kv
    )
    return {"weights": weights, "kv": n["kv"], "state": n["ssm"], "total": weights + n["total"], "reread": reread}


def _snapshot(cache: HybridCache) -> list[torch.Tensor]:
    return [t.clone() for t in _cache_tensors(cache)]


def _cache_tensors(cache: HybridCache) -> list[torch.Tensor]:
    kv = [t for e in cache.kv.values() for t in (e.k, e.v, e.pos, e.valid)]
    return [cache.step, cache.next_pos, *kv, *cache.conv.values(), *cache.ssm.values()]


def _timed_generation(
    model: HymbaLM,
    batch: int,
    prompt_len: int,
    new_tokens: int,
    device: torch.device,
    warmup: int,
    prefill_chunk: int,
    modes: tuple[str, ...],
    bandwidth: float | None,
    on_result,
    ssm_dtype: torch.dtype,
) -> list[dict[str, float]]:
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt_len), generator=g).to(device)
    chunk = min(prefill_chunk, batch)
    for _ in range(warmup):  # compiles kernels for the timed shapes (a prefill chunk, a decode step)
        _, c = model.prefill(ids[:chunk], max_len=prompt_len + 2, last_only=True, ssm_dtype=ssm_dtype)
        model.decode_step(ids[:chunk, -1], c)
        del c
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    logits, cache = model.prefill(
        ids, max_len=prompt_len + new_tokens, last_only=True, batch_chunk=chunk, ssm_dtype=ssm_dtype
    )
    first = logits[:, -1].argmax(-1)
    _sync(device)
    prefill_s = time.perf_counter() - t0
    prefill_peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    nbytes = decode_step_bytes(model, cache)
    saved = _snapshot(cache) if len(modes) > 1 else None
    saved_gb = sum(t.numel() * t.element_size() for t in saved) / 1e9 if saved else 0.0  # not the protocol's memory
    length = cache.length
    out = []
    for i, mode in enumerate(modes):
        if i:  # every mode decodes the same tokens from the same prefilled cache
            for dst, src in zip(_cache_tensors(cache), saved):
                dst.copy_(src)
            cache.length = length
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # a graph capture (and a compile) is a one-off cost, like compilation: not timed
        step = model.decoder(
            cache,
            cuda_graph=mode != "eager",
            compile=mode.startswith("compiled_graph"),
            overlap=mode.endswith("_overlap"),
        )
        nxt = first
        _sync(device)
        t1 = time.perf_counter()
        for _ in range(new_tokens):
            nxt = step(nxt)[:, -1].argmax(-1)
        _sync(device)
        decode_s = time.perf_counter() - t1
        step_s = decode_s / new_tokens
        r = {
            "decode": mode,
            "tokens_per_s": batch * new_tokens / decode_s,
            "step_ms": 1e3 * step_s,
            "step_bytes": nbytes["total"],
            "step_gb": nbytes["total"] / 1e9,
            "weights_gb": nbytes["weights"] / 1e9,
            "kv_gb": nbytes["kv"] / 1e9,
            "state_gb": nbytes["state"] / 1e9,
            "kv_reread_gb": nbytes["reread"] / 1e9,
            "floor_ms": None if bandwidth is None else 1e3 * nbytes["total"] / bandwidth,
            "hbm_fraction": None if bandwidth is None else nbytes["total"] / step_s / bandwidth,
            "copy_bw_gbs": None if bandwidth is None else bandwidth / 1e9,
            "batch_used": batch,
            "prompt_len": prompt_len,
            "new_tokens": new_tokens,
            "prefill_s": prefill_s,
            "decode_s": decode_s,
            "cache_mb": cache.nbytes()["total"] / MB,
            "prefill_chunk": chunk,
            "ssm_state_dtype": str(ssm_dtype).removeprefix("torch."),
        }
        if device.type == "cuda":
            r["prefill_peak_mem_gb"] = prefill_peak
            r["peak_mem_gb"] = max(prefill_peak, torch.cuda.max_memory_allocated(device) / 1e9 - saved_gb)
        out.append(r)
        if on_result is not None:
            on_result(r)
        del step
    return out


def generation_benchmark(
    model: HymbaLM,
    *,
    prompt_len: int = 8192,
    batch: int = 128,
    new_tokens: int = 64,
    device: str | torch.device | None = None,
    warmup: int = 1,
    min_batch: int = 1,
    prefill_tokens: int = 65536,
    modes: tuple[str, ...] | None = None,
    bandwidth: float | None = None,
    on_result: Callable[[dict], None] | None = None,
    ssm_dtype: torch.dtype = torch.float32,
) -> list[dict[str, float]]:
    """Paper protocol: a batch of random prompts, halve the batch on out-of-memory until it fits, prefill
    once, then generate ``new_tokens`` greedily in each decode mode (:data:`DECODE_MODES`; default
    ``cuda_graph`` on CUDA, ``eager`` elsewhere) from the same prefilled cache.

    The prompts are prefilled ``prefill_tokens // prompt_len`` rows at a time into the one cache (activation
    memory bounded by the chunk, not the batch); a graph capture or compile is not timed. Warm-up runs at the
    timed shapes are excluded; the device is synchronised around every timed region. ``bandwidth`` (bytes/s;
    default :func:`copy_bandwidth` measured now) turns the bytes a step must read
    (:func:`decode_step_bytes`) into the step's floor and the fraction of it reached. ``on_result`` is called
    with each mode's dict as soon as it is measured (a long compile of a later mode loses no earlier result).
    ``ssm_dtype``: the SSM state's dtype in the cache (fp32; the released code's is the model's dtype).

    Returns one dict per mode: decode, tokens_per_s, step_ms, step_bytes (and its parts in GB: weights_gb,
    kv_gb, state_gb; kv_reread_gb beside it), floor_ms, hbm_fraction, copy_bw_gbs, batch_used, prompt_len,
    new_tokens, prefill_s, decode_s, cache_mb, prefill_chunk, ssm_state_dtype, and on CUDA prefill_peak_mem_gb and
    peak_mem_gb (prefill or this mode's decoding, whichever is higher; the copy of the prefilled cache that lets
    every mode start from it is left out).
    """
    if prompt_len < 1 or batch < 1 or new_tokens < 1:
        raise ValueError(f"prompt_len={prompt_len}, batch={batch}, new_tokens={new_tokens} must all be >= 1")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    modes = tuple(modes or (("cuda_graph",) if device.type == "cuda" else ("eager",)))
    for mode in modes:
        if mode not in DECODE_MODES:
            raise ValueError(f"decode mode {mode!r} unknown; expected one of {DECODE_MODES}")
        if mode != "eager" and device.type != "cuda":
            raise ValueError(f"decode mode {mode!r} needs a CUDA device, got {device}")
    if bandwidth is None:
        bandwidth = copy_bandwidth(device)
    chunk = max(1, prefill_tokens // prompt_len)
    model.eval()
    while True:
        try:
            return _timed_generation(
                model, batch, prompt_len, new_tokens, device, warmup, chunk, modes, bandwidth, on_result, ssm_dtype
            )
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if batch // 2 < min_batch:
                raise
            log.warning("out of memory at batch %d; halving", batch)
            batch //= 2


def generation_throughput(model: HymbaLM, *, cuda_graph: bool | None = None, **kw) -> dict[str, float]:
    """:func:`generation_benchmark` in one decode mode: a CUDA graph on CUDA (``cuda_graph`` None = on for
    CUDA), eager steps otherwise; keyword arguments as there."""
    device = torch.device(kw["device"]) if kw.get("device") is not None else next(model.parameters()).device
    if cuda_graph and device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a CUDA device, got {device}")
    if cuda_graph is None:
        cuda_graph = device.type == "cuda"
    return generation_benchmark(model, modes=("cuda_graph" if cuda_graph else "eager",), **kw)[0]


def hf_llama_config(c: ModelConfig):
    """transformers' ``LlamaConfig`` of an attention-only row with global attention (row 6): the same widths,
    heads, RoPE base and tying, for side-by-side benchmarks (the ``hf`` extra)."""
    import transformers

    if c.ssm or c.n_meta_tokens or c.swa_plan != "none" or c.kv_share:
        raise ValueError("a transformers Llama matches attention-only rows with global attention (row 6)")
    return transformers.LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.d_model,
        intermediate_size=c.ffn_dim,
        num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads,
        num_key_value_heads=c.kv_heads,
        head_dim=c.qk_head_dim,
        rms_norm_eps=c.norm_eps,
        rope_theta=c.rope_base,
        tie_word_embeddings=c.tie_embeddings,
        max_position_embeddings=1 << 16,
    )


__all__ = [
    "cache_size",
    "copy_bandwidth",
    "decode_step_bytes",
    "generation_benchmark",
    "generation_throughput",
    "hf_llama_config",
    "load_model_config",
    "DECODE_MODES",
    "MB",
]
