"""Train a small but real CLIP BPE tokenizer offline, from texts the package owns.

No tokenizer can be downloaded where the tests and the demo run. This trains one with the `tokenizers` library using
CLIP's own normalisation, pre-tokenisation and end-of-word suffix, adds every byte symbol (so no text ever maps to
the unknown token), puts `<|startoftext|>` and `<|endoftext|>` last as CLIP does, and wraps it in
`transformers.CLIPTokenizer`. A user's real CLIP or FaRL tokenizer is loaded from its directory instead.
"""

import json
from typing import Iterable

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPTokenizer

from .vocabulary import all_vocabulary_texts

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# CLIP's pre-tokenisation pattern, as in transformers' CLIPTokenizer.
CLIP_SPLIT_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def train_clip_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 1024) -> CLIPTokenizer:
    """Train a CLIP-style byte-level BPE tokenizer.

    Args:
        texts: training corpus; defaults to every prompt of the package's vocabulary.
        vocab_size: at most this many merged tokens are learned, on top of the 512 byte symbols and 2 special tokens.

    Returns:
        A `CLIPTokenizer` whose `len()` is its full vocabulary and whose end-of-text token has the largest id.
    """
    texts = list(all_vocabulary_texts() if texts is None else texts)
    if not texts:
        raise ValueError("train_clip_tokenizer needs at least one text.")
    backend = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="</w>"))
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    # The trainer breaks ties between equally frequent pairs by symbol id, and would number the alphabet in hash
    # order; listing every byte symbol, in both forms, first fixes those ids and so makes training deterministic.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    symbols = alphabet + [symbol + "</w>" for symbol in alphabet]
    trainer = trainers.BpeTrainer(
        vocab_size=len(symbols) + vocab_size,
        end_of_word_suffix="</w>",
        special_tokens=symbols,
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    merges = [tuple(pair) for pair in json.loads(backend.to_str())["model"]["merges"]]

    # CLIP's layout: every byte symbol, then every byte symbol ending a word, then one token per merge in merge
    # order, then the two special tokens.
    tokens = list(symbols)
    seen = set(tokens)
    for pair in merges:
        if "".join(pair) not in seen:
            seen.add("".join(pair))
            tokens.append("".join(pair))
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


__all__ = ["train_clip_tokenizer"]
