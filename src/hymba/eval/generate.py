"""Text completions from a trained model and its tokenizer (``hymba generate``).

Several prompts run as one left-padded batch through the decoding cache (``HymbaLM.generate``); each row
stops at the end-of-text token. A prompt plus its new tokens must fit ``max_length``, checked before anything
is allocated.
"""

from __future__ import annotations

from hymba.errors import UsageError
from hymba.model.hymba import left_pad


def generate_text(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int | None = 0,
    cuda_graph: bool = False,
    max_length: int | None = None,
) -> list[str]:
    """Completions of ``prompts`` (one left-padded batch), each cut at the end-of-text token. With
    ``max_length``, a prompt whose tokens plus ``max_new_tokens`` exceed it is an error (before any work)."""
    encoded = [tokenizer.encode(p) for p in prompts]
    if any(not e for e in encoded):
        raise UsageError("--prompt: an empty prompt encodes to no tokens")
    if tokenizer.prompt_bos:  # the tokenizer's own template starts every text with BOS (released checkpoints)
        encoded = [[tokenizer.bos_id, *e] for e in encoded]
    longest = max(range(len(encoded)), key=lambda i: len(encoded[i]))
    if max_length is not None and len(encoded[longest]) + max_new_tokens > max_length:
        raise UsageError(
            f"--prompt {longest + 1} is {len(encoded[longest]):,} tokens; with --max-new-tokens "
            f"{max_new_tokens} that exceeds --max-length {max_length:,} (default: the training length "
            f"train.seq_len); shorten the prompt or raise --max-length"
        )
    dev = next(model.parameters()).device
    ids, mask = left_pad(encoded, tokenizer.eos_id)
    out = model.generate(
        ids.to(dev),
        max_new_tokens,
        temperature=temperature,
        top_k=top_k or None,
        seed=seed,
        attention_mask=mask.to(dev),
        eos_id=tokenizer.eos_id,
        cuda_graph=cuda_graph,
    )
    texts = []
    for row in out.tolist():
        row = row[: row.index(tokenizer.eos_id)] if tokenizer.eos_id in row else row
        texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return texts


__all__ = ["generate_text"]
