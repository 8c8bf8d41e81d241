"""Token streams to batches: the train/validation split, random training windows, whole-split validation.

Training batches are windows of ``seq_len + 1`` tokens at random offsets; inputs are the first ``seq_len``
tokens and targets the last ``seq_len`` (targets[t] is the token after inputs[t], nanoGPT style). Batch ``i``
depends only on ``(seed, i)``, so the loader's whole state is the index of the next batch and a resumed run
sees exactly the batches an uninterrupted one would. Under data parallelism batch ``i`` is the global batch of
all ranks and each rank reads its own slice of it, so the state (and a checkpoint) does not depend on the
number of ranks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100  # the target of a position with no next token (padding): F.cross_entropy's default


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """(train, validation): the last ``val_fraction`` of the text, cut at the line break nearest the cut
    point, is validation. Splitting the text (not shuffled windows) keeps validation text out of the
    tokenizer and out of every training window."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} is invalid: must lie strictly between 0 and 1")
    cut = int(len(text) * (1.0 - val_fraction))
    nl = text.rfind("\n", 0, cut)
    cut = nl + 1 if nl > 0 else cut
    train, val = text[:cut], text[cut:]
    if not train.strip() or not val.strip():
        raise ValueError(f"corpus of {len(text)} characters is too small to split with val_fraction={val_fraction}")
    return train, val


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


class TrainBatches:
    """Random training windows; ``state_dict()`` is the data-loader state saved in checkpoints.

    ``batch_size`` sequences per rank: batch ``index`` is a global batch of ``batch_size * world_size``
    windows drawn from ``(seed, index)``, and rank ``rank`` reads the ``rank``-th slice of it. The ranks read
    disjoint slices whose union is exactly what one process with ``batch_size * world_size`` reads.
    """

    def __init__(
        self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ):
        if len(tokens) < seq_len + 2:
            raise ValueError(
                f"the training split has {len(tokens)} tokens; seq_len={seq_len} needs at least {seq_len + 2}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size} process(es)")
        self.tokens, self.seq_len, self.batch_size, self.seed = tokens, seq_len, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size
        self.next_index = 0

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets [B, T] (int64) of this rank's slice of batch ``index``."""
        rng = np.random.Generator(np.random.PCG64([self.seed, index]))
        starts = rng.integers(0, len(self.tokens) - self.seq_len, size=self.global_batch)
        starts = starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        w = np.stack([np.asarray(self.tokens[s : s + self.seq_len + 1], dtype=np.int64) for s in starts])  # (B, T+1)
        w = torch.from_numpy(w)
        return w[:, :-1], w[:, 1:]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.batch(self.next_index)
        self.next_index += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        """The position in global terms: ``batch_size`` is the global batch (all ranks), ``world_size`` is
        recorded for error messages only."""
        return {
            "seed": self.seed,
            "next_index": self.next_index,
            "seq_len": self.seq_len,
            "batch_size": self.global_batch,
            "world_size": self.world_size,
            "n_tokens": len(self.tokens),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at ``state``'s position; the global batch must be the saved one, whatever the world size."""
        mine = self.state_dict()
        saved, ranks = state.get("batch_size"), state.get("world_size", 1)
        if isinstance(saved, int) and isinstance(ranks, int) and saved != self.global_batch:
            if saved % self.world_size:
                fix = f"launch a number of ranks that divides {saved}"
            else:
                fix = f"pass --set train.batch_size={saved // self.world_size} to keep it"
            raise ValueError(
                f"cannot resume: the checkpoint's global batch is {saved} sequences (train.batch_size="
                f"{saved // ranks} on {ranks} rank(s)), this run's is {self.global_batch} ({self.batch_size} on "
                f"{self.world_size}); {fix}"
            )
        for k in ("seed", "seq_len", "batch_size", "n_tokens"):
            if state.get(k) != mine[k]:
                raise ValueError(
                    f"data-loader state does not match this run: {k}={state.get(k)!r} in the "
                    f"checkpoint, {mine[k]!r} now"
                )
        self.next_index = int(state["next_index"])


def val_batches(
    tokens: np.ndarray, seq_len: int, batch_size: int, pad_id: int = 0, max_tokens: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive non-overlapping windows covering every target of the split once: each of the
    ``len(tokens) - 1`` next-token predictions appears in exactly one window (``max_tokens`` > 0 stops after
    about that many). The last window is right-padded with ``pad_id`` and target ``IGNORE_INDEX``, which a
    causal model never lets reach the real positions."""
    n_targets = len(tokens) - 1
    if max_tokens:
        n_targets = min(n_targets, max_tokens)
    if n_targets < 1:
        raise ValueError(f"the validation split has {len(tokens)} tokens; it needs at least 2")
    starts = range(0, n_targets, seq_len)
    for b in range(0, len(starts), batch_size):
        group = starts[b : b + batch_size]
        x = np.full((len(group), seq_len), pad_id, dtype=np.int64)
        y = np.full((len(group), seq_len), IGNORE_INDEX, dtype=np.int64)
        for r, s in enumerate(group):
            n = min(seq_len, n_targets - s)
            x[r, :n] = tokens[s : s + n]
            y[r, :n] = tokens[s + 1 : s + 1 + n]
        yield torch.from_numpy(x), torch.from_numpy(y)
