"""Efficiency measurements as the paper takes them: KV-cache size and generation throughput.

Both measure real objects: ``cache_size`` allocates the model's :class:`~hymba.HybridCache` (on the meta
device, so an 8K cache of a 1.5B model costs no memory) and counts its bytes; ``generation_throughput``
times the decode phase of ``HymbaLM.generate``'s own prefill/decode path.
"""

from __future__ import annotations

import logging
import time
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_generation(
    model: HymbaLM,
    batch: int,
    prompt_len: int,
    new_tokens: int,
    device: torch.device,
    warmup: int,
    prefill_chunk: int,
    cuda_graph: bool,
) -> dict[str, float]:
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt_len), generator=g).to(device)
    chunk = min(prefill_chunk, batch)
    for _ in range(warmup):  # compiles kernels for the timed shapes (a prefill chunk, a decode step)
        _, c = model.prefill(ids[:chunk], max_len=prompt_len + 2, last_only=True)
        model.decode_step(ids[:chunk, -1], c)
        del c
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    logits, cache = model.prefill(ids, max_len=prompt_len + new_tokens, last_only=True, batch_chunk=chunk)
    nxt = logits[:, -1].argmax(-1)
    _sync(device)
    prefill_s = time.perf_counter() - t0
    step = model.decoder(cache, cuda_graph)  # a graph capture is a one-off cost, like compilation: not timed
    _sync(device)
    t1 = time.perf_counter()
    for _ in range(new_tokens):
        nxt = step(nxt)[:, -1].argmax(-1)
    _sync(device)
    t2 = time.perf_counter()
    out = {
        "tokens_per_s": batch * new_tokens / (t2 - t1),
        "batch_used": batch,
        "prompt_len": prompt_len,
        "new_tokens": new_tokens,
        "prefill_s": prefill_s,
        "decode_s": t2 - t1,
        "cache_mb": cache.nbytes()["total"] / MB,
        "prefill_chunk": chunk,
        "decode": "cuda_graph" if cuda_graph else "eager",
    }
    if device.type == "cuda":
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return out


def generation_throughput(
    model: HymbaLM,
    *,
    prompt_len: int = 8192,
    batch: int = 128,
    new_tokens: int = 64,
    device: str | torch.device | None = None,
    warmup: int = 1,
    min_batch: int = 1,
    prefill_tokens: int = 65536,
    cuda_graph: bool | None = None,
) -> dict[str, float]:
    """Paper protocol: a batch of random prompts, halve the batch on out-of-memory until it fits, generate
    ``new_tokens`` greedily, report generated tokens per second of the decode phase (prefill timed apart).

    The prompts are prefilled ``prefill_tokens // prompt_len`` rows at a time into the one cache (activation
    memory bounded by the chunk, not the batch); decode steps replay a CUDA graph on CUDA (``cuda_graph``
    None = on for CUDA; the capture is not timed). Warm-up runs at the timed shapes are excluded; the device
    is synchronised around every timed region. Returns tokens_per_s, batch_used, prefill_s, decode_s,
    cache_mb, prefill_chunk, decode ("cuda_graph" or "eager"), and peak_mem_gb on CUDA.
    """
    if prompt_len < 1 or batch < 1 or new_tokens < 1:
        raise ValueError(f"prompt_len={prompt_len}, batch={batch}, new_tokens={new_tokens} must all be >= 1")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if cuda_graph is None:
        cuda_graph = device.type == "cuda"
    elif cuda_graph and device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a CUDA device, got {device}")
    chunk = max(1, prefill_tokens // prompt_len)
    model.eval()
    while True:
        try:
            return _timed_generation(model, batch, prompt_len, new_tokens, device, warmup, chunk, cuda_graph)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if batch // 2 < min_batch:
                raise
            log.warning("out of memory at batch %d; halving", batch)
            batch //= 2


__all__ = ["cache_size", "generation_throughput", "load_model_config", "MB"]
