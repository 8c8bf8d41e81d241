"""End-to-end generation from a checkpoint in the released layout, Hymba-1.5B shape, random weights.

Builds (once) a directory as NVIDIA ships it: the released ``config.json`` (``configs/models/
hymba-1.5b-base.config.json``), random bf16 weights under the official names (``HymbaLM.save_pretrained``) and a
``tokenizer.json`` of the same vocabulary size; then times what ``hymba generate DIR`` does: loading the
directory (``hymba.train.checkpoint.load_run``: ``HymbaLM.from_pretrained``, fp32 by default), the prefill of
a ragged batch of prompts and the greedy decode, separately. Prints one JSON line per batch size.

    python benchmarks/released_generation.py --dir /tmp/hymba-1.5b-random --device cpu --batch 1 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _hymba_path  # noqa: F401  (a plain clone: src/ on the path)
import torch

from hymba.model import HymbaLM
from hymba.model.hymba import left_pad
from hymba.model.pretrained import config_from_released
from hymba.train.checkpoint import load_run

RELEASED = Path(__file__).parents[1] / "configs" / "models" / "hymba-1.5b-base.config.json"


def build(path: Path) -> None:
    """The released layout with random weights and a word-level tokenizer of the config's vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    raw = json.loads(RELEASED.read_text())
    torch.manual_seed(0)
    model = HymbaLM(config_from_released(raw)).to(torch.bfloat16)
    model.save_pretrained(path, extra_config={k: raw[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")})
    (path / "config.json").write_text(RELEASED.read_text())  # the file exactly as released
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, raw["vocab_size"])}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path / "tokenizer.json"))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, required=True, help="the released-layout directory (built when absent)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", help="compute dtype (default: %(default)s, as hymba generate)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    p.add_argument("--prompt-len", type=int, default=32, help="longest prompt; the others are shorter (ragged)")
    p.add_argument("--new-tokens", type=int, default=8)
    args = p.parse_args()
    if not (args.dir / "config.json").is_file():
        t0 = time.perf_counter()
        build(args.dir)
        print(json.dumps({"built": str(args.dir), "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    t0 = time.perf_counter()
    model, tok, _ = load_run(args.dir, device=args.device, dtype=args.dtype)
    device = next(model.parameters()).device
    sync(device)
    load_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)
    for B in args.batch:
        lengths = [max(1, args.prompt_len - 5 * i) for i in range(B)]  # ragged: left padding and meta tokens mix
        rows = [torch.randint(3, tok.vocab_size, (n,), generator=gen).tolist() for n in lengths]
        ids, mask = left_pad(rows, tok.eos_id)
        ids, mask = ids.to(device), mask.to(device)
        padded = mask if B > 1 else None
        T = ids.shape[1]
        model.generate(ids, 2, attention_mask=padded)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        logits, cache = model.prefill(ids, padded, max_len=T + args.new_tokens, last_only=True)
        sync(device)
        prefill_s = time.perf_counter() - t0
        nxt = logits[:, -1].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(args.new_tokens - 1):
            nxt = model.decode_step(nxt, cache)[:, -1].argmax(-1)
        sync(device)
        decode_s = time.perf_counter() - t0
        record = {
            "device": str(device),
            "dtype": args.dtype,
            "threads": torch.get_num_threads(),
            "batch": B,
            "prompt_lens": lengths,
            "new_tokens": args.new_tokens,
            "load_s": round(load_s, 2),
            "prefill_s": round(prefill_s, 3),
            "decode_tokens_per_s": round(B * (args.new_tokens - 1) / decode_s, 2),
            "decode_ms_per_step": round(1000 * decode_s / (args.new_tokens - 1), 1),
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
