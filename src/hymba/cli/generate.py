"""``hymba generate RUN_DIR --prompt TEXT [--prompt TEXT ...]``: sample text from a trained checkpoint.

RUN_DIR is a ``hymba train`` run or a checkpoint in NVIDIA's released layout (a download of
nvidia/Hymba-1.5B-Base: ``config.json``, ``model.safetensors``, ``tokenizer.json``; ``hymba.model.pretrained``).

Several prompts run as one left-padded batch through the decoding cache (``hymba.eval.generate``); each row
stops at the end-of-text token. A prompt plus its new tokens must fit ``--max-length`` (default: the length the
model was trained at, ``train.seq_len``), checked before anything is allocated.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from hymba.cli.args import add_device_arg, parse_device
from hymba.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run_dir", type=Path, help="run directory written by `hymba train`, or a released checkpoint directory"
    )
    p.add_argument("--prompt", action="append", required=True, help="prompt text (repeatable: one batch)")
    p.add_argument(
        "--max-new-tokens", type=int, default=100, help="tokens to generate per prompt (default: %(default)s)"
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="longest prompt + new tokens (default: the run's training length train.seq_len; a released "
        "checkpoint's max_position_embeddings)",
    )
    p.add_argument(
        "--temperature", type=float, default=0.8, help="sampling temperature, 0 = greedy (default: %(default)s)"
    )
    p.add_argument(
        "--top-k", type=int, default=50, help="sample among the k most likely tokens, 0 = all (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    add_device_arg(p)
    p.add_argument("--cuda-graph", action="store_true", help="decode steps from a CUDA graph (CUDA only)")
    p.add_argument("--json", action="store_true", help="one JSON line per prompt")


def run(args: argparse.Namespace) -> int:
    from hymba.eval.generate import generate_text
    from hymba.train.checkpoint import load_run

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
    texts = generate_text(
        model,
        tokenizer,
        args.prompt,
        args.max_new_tokens,
        args.temperature,
        args.top_k,
        args.seed,
        cuda_graph=args.cuda_graph,
        max_length=args.max_length or cfg.train.seq_len,
    )
    for prompt, text in zip(args.prompt, texts):
        print(json.dumps({"prompt": prompt, "completion": text}) if args.json else f"{prompt}{text}\n")
    return 0
