"""Subword tokenizers (BPE and unigram) learned with SentencePiece, lossless on any text.

SentencePiece is set up so that decode(encode(text)) == text for every string:
- identity normalization, no dummy prefix, no whitespace clean-up: the text is taken as it is;
- byte fallback: a character never seen in training becomes its UTF-8 bytes (<0xAB> pieces),
  so nothing is ever <unk>;
- "\n" and "\t" are user-defined pieces: SentencePiece's trainer reads one sentence per item
  and would otherwise never learn them, and they cut the text into independent stretches;
- U+2581 ("▁") is SentencePiece's stand-in for a space, so a literal U+2581 in the text would
  come back as a space: it is encoded as its three byte pieces instead (see `encode`).

Decoding does not go through SentencePiece: every id maps to bytes (a byte piece to its byte,
any other piece to its UTF-8 text with "▁" as a space), and the bytes go through one UTF-8
decoder with errors="replace". Whole and streaming decoding therefore agree for every id
sequence, and a word-initial space survives decoding one piece at a time.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from typing import Any, Iterable, Iterator

import numpy as np

from ..errors import ConfigError, CorpusError
from .char import StreamDecoder, Utf8StreamDecoder, show_chars, smallest_uint_dtype

SPACE = "\u2581"  # SentencePiece's visible space
_SPACE_BYTES = SPACE.encode("utf-8")
_USER_SYMBOLS = ["\n", "\t"]
# SentencePiece silently skips training sentences longer than max_sentence_length bytes; lines
# are cut well below it (a character is at most 4 bytes), so all of the training text counts.
_MAX_SENTENCE_BYTES = 1 << 14
_SENTENCE_CHARS = _MAX_SENTENCE_BYTES // 4
# Encoding is done on chunks cut at newlines: a list lets SentencePiece use several threads.
_ENCODE_CHUNK_CHARS = 1 << 16
_BYTE_PIECE = re.compile(r"<0x([0-9A-F]{2})>")
_SURROGATE = re.compile("[\ud800-\udfff]")


class SentencePieceTokenizer:
    """A SentencePiece BPE or unigram model, kept as its serialized bytes (stored in checkpoints)."""

    def __init__(self, kind: str, model_bytes: bytes, notes: list[str] | None = None):
        import sentencepiece as spm

        if kind not in ("bpe", "unigram"):
            raise ValueError(f"a SentencePiece tokenizer is bpe or unigram, not {kind!r}")
        self.kind = kind
        self.model_bytes = bytes(model_bytes)
        self.notes: list[str] = list(notes or [])  # for the user, shown when training starts
        self._sp = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        n = self._sp.get_piece_size()
        self._dtype = smallest_uint_dtype(n)
        self._piece_bytes: list[bytes] = [self._bytes_of(i) for i in range(n)]  # id -> bytes it decodes to
        self._space_ids = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in _SPACE_BYTES]
        if any(self._sp.id_to_piece(i) != f"<0x{b:02X}>" for i, b in zip(self._space_ids, _SPACE_BYTES)):
            raise ValueError("the SentencePiece model has no byte fallback pieces")

    def _bytes_of(self, i: int) -> bytes:
        sp = self._sp
        if sp.is_byte(i):
            return bytes([int(_BYTE_PIECE.fullmatch(sp.id_to_piece(i)).group(1), 16)])  # type: ignore[union-attr]
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            return b""  # never produced by encode (byte fallback); a sampled one prints nothing
        return sp.id_to_piece(i).replace(SPACE, " ").encode("utf-8")

    # -- learning

    @classmethod
    def fit(cls, text: str, *, kind: str, vocab_size: int) -> "SentencePieceTokenizer":
        """Learn a model from `text` (the training split), in memory, on all of it."""
        import sentencepiece as spm

        if vocab_size < 1:
            raise ConfigError(f"--vocab-size must be positive (got {vocab_size})")
        buffer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_training_sentences(text),
                model_writer=buffer,
                model_type=kind,
                vocab_size=vocab_size,
                # A vocabulary larger than the corpus supports ends smaller instead of failing.
                hard_vocab_limit=False,
                normalization_rule_name="identity",
                add_dummy_prefix=False,
                remove_extra_whitespaces=False,
                byte_fallback=True,
                character_coverage=1.0,
                user_defined_symbols=_USER_SYMBOLS,
                input_sentence_size=0,  # every sentence, no sampling
                max_sentence_length=_MAX_SENTENCE_BYTES,
                unk_id=0,
                bos_id=-1,  # no sentence markers: the model sees one continuous text
                eos_id=-1,
                pad_id=-1,
                num_threads=max(1, min(4, os.cpu_count() or 1)),
                minloglevel=2,  # SentencePiece is chatty on stderr
            )
        except RuntimeError as exc:
            raise _vocab_error(exc, vocab_size) from None
        tokenizer = cls(kind, buffer.getvalue())
        if tokenizer.vocab_size < vocab_size:
            tokenizer.notes.append(
                f"--vocab-size {vocab_size} is more than this corpus supports: "
                f"the {kind} vocabulary has {tokenizer.vocab_size:,} pieces"
            )
        return tokenizer

    # -- the Tokenizer surface

    @property
    def vocab_size(self) -> int:
        return len(self._piece_bytes)

    def encode(self, text: str) -> np.ndarray:
        """Text -> ids (smallest unsigned dtype). Literal U+2581 characters become byte pieces."""
        bad = self.unknown_chars(text)
        if bad:
            raise CorpusError(f"text holds lone surrogates, which are not characters: {show_chars(bad)}")
        parts: list[list[int]] = []
        segments = text.split(SPACE) if SPACE in text else [text]
        for k, segment in enumerate(segments):
            if k:
                parts.append(self._space_ids)
            chunks = list(_chunks(segment, _ENCODE_CHUNK_CHARS))
            if chunks:
                parts.extend(self._sp.encode(chunks, out_type=int, num_threads=max(1, min(4, os.cpu_count() or 1))))
        total = sum(len(p) for p in parts)
        out = np.empty(total, dtype=self._dtype)
        at = 0
        for p in parts:
            out[at : at + len(p)] = p
            at += len(p)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        table = self._piece_bytes
        return b"".join(table[int(i)] for i in ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return _PieceStream(self._piece_bytes)

    def unknown_chars(self, text: str) -> list[str]:
        """Byte fallback encodes every character; only lone surrogates (e.g. from undecodable
        command-line bytes) have no UTF-8 form."""
        if text.isascii() or not _SURROGATE.search(text):
            return []
        return sorted(set(_SURROGATE.findall(text)))

    def to_state(self) -> tuple[dict[str, Any], bytes | None]:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "notes": self.notes}, self.model_bytes

    @classmethod
    def from_state(cls, state: dict[str, Any], blob: bytes) -> "SentencePieceTokenizer":
        try:
            tokenizer = cls(state["kind"], blob, state.get("notes"))
        except RuntimeError:  # SentencePiece's own parser: the bytes are not a model it reads
            raise ValueError(f"the SentencePiece model ({len(blob):,} bytes) is damaged") from None
        if "vocab_size" in state and int(state["vocab_size"]) != tokenizer.vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} pieces, the checkpoint says {state['vocab_size']}")
        return tokenizer

    def fingerprint(self) -> str:
        return f"{self.kind}:" + hashlib.sha256(self.model_bytes).hexdigest()[:16]

    def piece_bytes(self) -> list[bytes]:
        """The bytes each id decodes to, in id order (for runtimes outside charrnn)."""
        return list(self._piece_bytes)

    def pieces(self, ids: Iterable[int]) -> list[str]:
        """The SentencePiece pieces of `ids` (for inspection and tests)."""
        return [self._sp.id_to_piece(int(i)) for i in ids]


class _PieceStream:
    """Ids in, text out as soon as it forms whole characters."""

    def __init__(self, piece_bytes: list[bytes]):
        self._table = piece_bytes
        self._utf8 = Utf8StreamDecoder()

    def feed(self, token_id: int) -> str:
        return self._utf8.feed_bytes(self._table[token_id])

    def flush(self) -> str:
        return self._utf8.flush()


def _training_sentences(text: str) -> Iterator[str]:
    """The training text as SentencePiece sentences: its lines (newlines are user-defined
    pieces, so none are lost), long lines cut before a space, every piece short enough not to
    be skipped. U+2581 is left out: in the text it is encoded as bytes, never as a piece."""
    for line in text.split("\n"):
        if SPACE in line:
            line = line.replace(SPACE, "\n")  # a cut, like a newline
        for part in line.split("\n"):
            yield from (chunk for chunk in _chunks(part, _SENTENCE_CHARS) if chunk)


def _chunks(text: str, size: int) -> Iterator[str]:
    """`text` in pieces of at most `size` characters, cut after a newline, else before a space,
    where possible: the places where SentencePiece pieces end anyway."""
    start = 0
    while len(text) - start > size:
        end = start + size
        cut = text.rfind("\n", start + 1, end) + 1
        if cut <= start:
            cut = text.rfind(" ", start + 1, end)
        if cut <= start:
            cut = end
        yield text[start:cut]
        start = cut
    if start < len(text):
        yield text[start:]


def _vocab_error(exc: RuntimeError, vocab_size: int) -> ConfigError:
    found = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", str(exc))
    if found:
        return ConfigError(
            f"--vocab-size {vocab_size} is too small for this corpus: it needs at least {found.group(2)} "
            f"(256 byte pieces, the special pieces and every distinct character of the training text)"
        )
    return ConfigError(f"SentencePiece could not learn a vocabulary of {vocab_size}: {str(exc).splitlines()[0]}")
