"""Which tokenizer: one fitted to a corpus (`--tokenizer`), or the one a checkpoint describes."""

from __future__ import annotations

from typing import Any

from ..config import TokenizerConfig
from ..errors import ConfigError
from .char import CharTokenizer, Tokenizer
from .subword import SentencePieceTokenizer


def fit_tokenizer(kind: str, text: str, vocab_size: int | None = None) -> Tokenizer:
    """Learn a tokenizer from (training) text."""
    if kind == "char":
        return CharTokenizer.fit(text)
    if kind in ("bpe", "unigram"):
        return SentencePieceTokenizer.fit(text, kind=kind, vocab_size=vocab_size or TokenizerConfig().vocab_size)
    raise ConfigError(f"--tokenizer must be char, bpe or unigram (got {kind!r})")


def tokenizer_from_state(state: dict[str, Any], blob: bytes | None) -> Tokenizer:
    """The tokenizer `to_state` described (`blob`: a SentencePiece model's bytes)."""
    if not isinstance(state, dict):  # read from a file: anything can be there
        raise ValueError(f"the tokenizer description is not an object ({type(state).__name__})")
    kind = state.get("kind")
    if kind == "char":
        return CharTokenizer(state["chars"])
    if kind in ("bpe", "unigram"):
        if blob is None:
            raise ValueError("the SentencePiece model is missing")
        return SentencePieceTokenizer.from_state(state, blob)
    raise ValueError(f"unknown tokenizer kind {kind!r}")
