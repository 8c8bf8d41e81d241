"""``hymba generate RUN_DIR --prompt TEXT [--prompt TEXT ...]``: sample text from a trained checkpoint.

Several prompts run as one left-padded batch through the decoding cache (``HymbaLM.generate``); each row
stops at the end-of-text token. A prompt plus its new tokens must fit ``--max-length`` (default: the length the
model was trained at, ``train.seq_len``), checked before anything is allocated.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from hymba.cli import UsageError, parse_device
from hymba.model.hymba import left_pad


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="run directory written by `hymba train`")
    p.add_argument("--prompt", action="append", required=True, help="prompt text (repeatable: one batch)")
    p.add_argument("--max-new-tokens", type=int, default=100, help="tokens to generate per prompt (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=None,
                   help="longest prompt + new tokens (default: the run's training length train.seq_len)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature, 0 = greedy (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=50,
                   help="sample among the k most likely tokens, 0 = all (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when available), cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--cuda-graph", action="store_true", help="decode steps from a CUDA graph (CUDA only)")
    p.add_argument("--json", action="store_true", help="one JSON line per prompt")


def generate_text(model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float = 0.8,
                  top_k: int | None = 50, seed: int | None = 0, cuda_graph: bool = False,
                  max_length: int | None = None) -> list[str]:
    """Completions of ``prompts`` (one left-padded batch), each cut at the end-of-text token. With
    ``max_length``, a prompt whose tokens plus ``max_new_tokens`` exceed it is an error (before any work)."""
    encoded = [tokenizer.encode(p) for p in prompts]
    if any(not e for e in encoded):
        raise UsageError("--prompt: an empty prompt encodes to no tokens")
    longest = max(range(len(encoded)), key=lambda i: len(encoded[i]))
    if max_length is not None and len(encoded[longest]) + max_new_tokens > max_length:
        raise UsageError(f"--prompt {longest + 1} is {len(encoded[longest]):,} tokens; with --max-new-tokens "
                         f"{max_new_tokens} that exceeds --max-length {max_length:,} (default: the training length "
                         f"train.seq_len); shorten the prompt or raise --max-length")
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
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise UsageError(f"--temperature {args.temperature}: must be a finite number >= 0 (0 = greedy)")
    if args.top_k < 0:
        raise UsageError(f"--top-k {args.top_k}: must be >= 0 (0 = all tokens)")
    if args.max_length is not None and args.max_length < 2:
        raise UsageError(f"--max-length {args.max_length}: must be >= 2")
    device = parse_device(args.device)
    if args.cuda_graph and device.type != "cuda":
        raise UsageError(f"--cuda-graph needs a CUDA device, got --device {args.device}")
    model, tokenizer, cfg = load_run(args.run_dir, device=device)
    texts = generate_text(model, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.top_k,
                          args.seed, cuda_graph=args.cuda_graph, max_length=args.max_length or cfg.train.seq_len)
    for prompt, text in zip(args.prompt, texts):
        print(json.dumps({"prompt": prompt, "completion": text}) if args.json else f"{prompt}{text}\n")
    return 0
