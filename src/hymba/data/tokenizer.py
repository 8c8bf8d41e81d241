"""A Unigram tokenizer (Hugging Face ``tokenizers``) over byte-level pre-tokens.

Byte-level pre-tokenization makes every string encodable (no unknown token) and decoding exact, newlines
included; the Unigram model (Kudo 2018, the SentencePiece algorithm) learns the pieces. The seed notebook
lowercased the text and split on whitespace, which made decoding lossy; it also trained the tokenizer on
the validation text. Here it only ever sees the training split.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with named special tokens; ``encode`` never adds BOS/EOS by itself."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        pad_token: str,
        bos_token: str,
        eos_token: str,
        source: str = "",
        prompt_bos: bool = False,
    ):
        self.tokenizer = tokenizer
        # generation prompts start with BOS (a released Llama-style tokenizer adds it, and its model expects it)
        self.prompt_bos = prompt_bos
        ids = {name: tokenizer.token_to_id(name) for name in (pad_token, bos_token, eos_token)}
        if ids[eos_token] is None:
            raise ValueError(
                f"tokenizer {source or ''} has no end-of-text token {eos_token!r}; set data.eos_token "
                f"to one of its special tokens".replace("  ", " ")
            )
        self.pad_id: int | None = ids[pad_token]
        self.bos_id: int | None = ids[bos_token]
        self.eos_id: int = ids[eos_token]
        self.special_tokens = (pad_token, bos_token, eos_token)
        if prompt_bos and self.bos_id is None:
            raise ValueError(f"tokenizer {source} has no {bos_token!r} to start prompts with")

    @staticmethod
    def read(path: str | Path) -> Tokenizer:
        """The ``tokenizers.Tokenizer`` of a ``tokenizer.json``; a missing or unreadable file is an error naming it."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        try:
            return Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for a file it cannot parse
            raise ValueError(
                f"tokenizer file {path} is corrupt or not a tokenizers JSON file "
                f"({str(e).splitlines()[0] if str(e) else type(e).__name__})"
            ) from None

    @classmethod
    def from_file(cls, path: str | Path, pad_token: str, bos_token: str, eos_token: str) -> TextTokenizer:
        return cls(cls.read(path), pad_token, bos_token, eos_token, source=str(Path(path).expanduser()))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    def __repr__(self) -> str:
        return f"TextTokenizer(vocab_size={self.vocab_size}, eos_id={self.eos_id})"


def train_unigram(
    texts: Iterable[str],
    vocab_size: int,
    pad_token: str = "<|pad|>",
    bos_token: str = "<|bos|>",
    eos_token: str = "<|eos|>",
) -> TextTokenizer:
    """Train a Unigram tokenizer on ``texts``. The three special tokens get ids 0, 1, 2; all 256 byte symbols
    are kept, so the result can hold fewer pieces than ``vocab_size`` on a small corpus but never fails to
    encode."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=[pad_token, bos_token, eos_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return TextTokenizer(tok, pad_token, bos_token, eos_token)
