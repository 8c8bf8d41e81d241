"""The token cache: corpus -> tokenizer -> token arrays, cached on disk.

The cache entry of a corpus lives in ``<cache_dir>/data/<key>/`` with ``tokenizer.json``, ``train.bin``,
``val.bin`` (raw uint16/uint32 tokens, read back as ``np.memmap``) and ``meta.json``, written last and
atomically, so an entry either exists whole or not at all. The key hashes the corpus text and every setting
that changes the tokens (split, vocabulary, special tokens, a given tokenizer file's contents).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hymba.config import DataConfig
from hymba.data.corpus import load_corpus
from hymba.data.dataset import split_text, token_dtype
from hymba.data.tokenizer import TextTokenizer, train_unigram
from hymba.io import umask_mode

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the on-disk layout or the tokenizer recipe changes
ENCODE_CHUNK_CHARS = 1 << 16


@dataclass
class PreparedData:
    """A tokenized corpus: tokenizer, training and validation token arrays (memory-mapped)."""

    tokenizer: TextTokenizer
    train: np.ndarray
    val: np.ndarray
    cache_path: Path
    corpus_sha256: str
    cache_hit: bool

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size


def _chunks(text: str, size: int = ENCODE_CHUNK_CHARS) -> list[str]:
    """Pieces of about ``size`` characters, each ending at a line break, so that byte-level pre-tokens
    never straddle two pieces."""
    out, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        out.append(text[start:end])
        start = end
    return out


def _write_tokens(tokenizer: TextTokenizer, text: str, path: Path, dtype: np.dtype) -> int:
    """Encode ``text`` into a raw token file; returns the number of tokens."""
    n = 0
    with open(path, "wb") as f:
        chunks = _chunks(text)
        for b in range(0, len(chunks), 64):
            for ids in tokenizer.encode_batch(chunks[b : b + 64]):
                np.asarray(ids, dtype=dtype).tofile(f)
                n += len(ids)
    return n


def cache_key(text: str, cfg: DataConfig) -> tuple[str, str]:
    """(corpus sha256, cache key) for a corpus text and the settings that shape its tokens."""
    corpus_sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    tok_sha = ""
    if cfg.tokenizer:
        path = Path(cfg.tokenizer).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"data.tokenizer: tokenizer file not found: {path}")
        tok_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    settings = {
        "format": CACHE_FORMAT,
        "corpus": corpus_sha,
        "val_fraction": cfg.val_fraction,
        "vocab_size": None if cfg.tokenizer else cfg.vocab_size,
        "tokenizer_sha256": tok_sha,
        "specials": [cfg.pad_token, cfg.bos_token, cfg.eos_token],
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    return corpus_sha, key


def _open(entry: Path, cfg: DataConfig, corpus_sha: str, hit: bool) -> PreparedData:
    meta = json.loads((entry / "meta.json").read_text())
    tok = TextTokenizer.from_file(entry / "tokenizer.json", cfg.pad_token, cfg.bos_token, cfg.eos_token)
    dtype = np.dtype(meta["dtype"])
    arrays = {}
    for split in ("train", "val"):
        path = entry / f"{split}.bin"
        expected = meta[f"{split}_tokens"] * dtype.itemsize
        if not path.is_file() or path.stat().st_size != expected:
            raise ValueError(f"token cache {path} is damaged (expected {expected} bytes); delete {entry}")
        arrays[split] = np.memmap(path, dtype=dtype, mode="r")
    return PreparedData(tok, arrays["train"], arrays["val"], entry, corpus_sha, hit)


def prepare(data_cfg: DataConfig, cache_dir: str | Path | None = None) -> PreparedData:
    """Load the corpus, split it, train (or load) the tokenizer on the training split, encode both splits
    once and cache everything under ``cache_dir`` (default: ``data_cfg.resolved_cache_dir()``)."""
    cfg = data_cfg
    text = load_corpus(
        cfg.source,
        char_budget=cfg.char_budget or None,
        streaming=cfg.streaming,
        text_column=cfg.text_column or None,
        config=cfg.dataset_config or None,
        split=cfg.split,
        data_files=cfg.data_files or None,
    )
    corpus_sha, key = cache_key(text, cfg)
    root = Path(cache_dir) if cache_dir is not None else cfg.resolved_cache_dir()
    entry = root / "data" / key
    if (entry / "meta.json").is_file():
        log.info("token cache hit: %s", entry)
        return _open(entry, cfg, corpus_sha, hit=True)

    log.info("token cache miss: preparing %s", entry)
    train_text, val_text = split_text(text, cfg.val_fraction)
    if cfg.tokenizer:
        tok = TextTokenizer.from_file(cfg.tokenizer, cfg.pad_token, cfg.bos_token, cfg.eos_token)
    else:
        tok = train_unigram(_chunks(train_text), cfg.vocab_size, cfg.pad_token, cfg.bos_token, cfg.eos_token)
    if tok.vocab_size != cfg.vocab_size:
        log.info("tokenizer vocabulary: %d tokens (%d requested)", tok.vocab_size, cfg.vocab_size)
    dtype = token_dtype(tok.vocab_size)
    root.joinpath("data").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root / "data"))
    umask_mode(tmp, directory=True)  # mkdtemp makes it 0700; the cache is shared like any directory
    try:
        tok.save(tmp / "tokenizer.json")
        meta = {
            "format": CACHE_FORMAT,
            "corpus_sha256": corpus_sha,
            "source": cfg.source,
            "dtype": dtype.name,
            "vocab_size": tok.vocab_size,
            "requested_vocab_size": cfg.vocab_size,
            "train_chars": len(train_text),
            "val_chars": len(val_text),
            "train_tokens": _write_tokens(tok, train_text, tmp / "train.bin", dtype),
            "val_tokens": _write_tokens(tok, val_text, tmp / "val.bin", dtype),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            os.replace(tmp, entry)
        except OSError:  # another process finished the same entry first; theirs is identical
            if not (entry / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _open(entry, cfg, corpus_sha, hit=False)
