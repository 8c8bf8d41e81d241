"""``hymba generate RUN_DIR --prompt TEXT [--prompt TEXT ...]``: sample text from a trained checkpoint.

Several prompts run as one left-padded batch through the decoding cache (``HymbaLM.generate``); each row
stops at the end-of-text token.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hymba.cli import UsageError
from hymba.model.hymba import left_pad


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="run directory written by `hymba train`")
    p.add_argument("--prompt", action="append", required=True, help="prompt text (repeatable: one batch)")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=50, help="sample among the k most likely tokens (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--cuda-graph", action="store_true", help="decode steps from a CUDA graph (CUDA only)")
    p.add_argument("--json", action="store_true", help="one JSON line per prompt")


def generate_text(model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float = 0.8,
                  top_k: int | None = 50, seed: int | None = 0, cuda_graph: bool = False) -> list[str]:
    """Completions of ``prompts`` (one left-padded batch), each cut at the end-of-text token."""
    encoded = [tokenizer.encode(p) for p in prompts]
    if any(not e for e in encoded):
        raise UsageError("--prompt: an empty prompt encodes to no tokens")
    dev = next(model.parameters()).device
    ids, mask = left_pad(encoded, tokenizer.eos_id)
    out = model.generate(ids.to(dev), max_new_tokens, temperature=temperature, top_k=top_k or None, seed=seed,
                         attention_mask=mask.to(dev), eos_id=tokenizer.eos_id, cuda_graph=cuda_graph)
    texts = []
    for row in out.tolist():
        row = row[:row.index(tokenizer.eos_id)] if tokenizer.eos_id in row else row
        texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return texts


def run(args: argparse.Namespace) -> int:
    from hymba.eval.checkpoint import load_run

    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens {args.max_new_tokens}: must be >= 1")
    if args.temperature < 0 or args.top_k < 0:
        raise UsageError("--temperature and --top-k must be >= 0")
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    if args.cuda_graph and not str(device).startswith("cuda"):
        raise UsageError(f"--cuda-graph needs a CUDA device, got --device {args.device}")
    model, tokenizer, _ = load_run(args.run_dir, device=device)
    texts = generate_text(model, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.top_k,
                          args.seed, cuda_graph=args.cuda_graph)
    for prompt, text in zip(args.prompt, texts):
        print(json.dumps({"prompt": prompt, "completion": text}) if args.json else f"{prompt}{text}\n")
    return 0
