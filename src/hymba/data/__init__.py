"""Text to training tokens: corpora, the Unigram tokenizer, the cached token arrays, batches."""

from hymba.data.corpus import BUILTIN, builtin_text, load_corpus, plays_to_text
from hymba.data.dataset import IGNORE_INDEX, TrainBatches, split_text, token_dtype, val_batches
from hymba.data.tokenizer import TextTokenizer, train_unigram
from hymba.data.tokens import PreparedData, cache_key, prepare

__all__ = [
    "BUILTIN",
    "IGNORE_INDEX",
    "PreparedData",
    "TextTokenizer",
    "TrainBatches",
    "builtin_text",
    "cache_key",
    "load_corpus",
    "plays_to_text",
    "prepare",
    "split_text",
    "token_dtype",
    "train_unigram",
    "val_batches",
]
