"""Corpus reading, the train/validation split and the token-id cache.

Text is read once, checked (UTF-8, no NUL bytes, not empty), normalised (BOM stripped, CRLF and
CR turned into LF), split, and encoded into a flat array of token ids. The ids are cached on
disk, memory-mapped, in the narrowest unsigned dtype, keyed by the corpus bytes and the
tokenizer settings: a second run on the same corpus skips decoding and encoding entirely.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import make_dirs, write_atomic
from ..errors import CorpusError, WriteError
from ..tokenizers.char import Tokenizer
from ..tokenizers.factory import fit_tokenizer, tokenizer_from_state
from .source_tree import read_tree
from .split import Split, split_text

CACHE_VERSION = 2  # 2: the split follows --val-split (documents held out)


@dataclass
class CorpusBytes:
    """The raw bytes of a corpus and where they came from (not yet decoded)."""

    name: str
    source: str
    data: bytes
    notes: list[str] = field(default_factory=list)  # what reading it left out, for the user
    file_starts: list[int] | None = None  # byte offset of each file, for a corpus read from a directory

    @cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def read_corpus_bytes(
    path: Path,
    name: str | None = None,
    *,
    encoding: str = "utf-8",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> CorpusBytes:
    """A text file, or a directory tree of text files (`source_tree.read_tree`: files chosen by
    content and by the --include/--exclude globs, joined with a blank line between them)."""
    if not path.exists():
        raise CorpusError(f"corpus not found: {path}")
    notes: list[str] = []
    if path.is_dir():
        tree = read_tree(path, encoding, include, exclude)
        (data, starts), notes = tree.data_and_starts(), tree.notes()
        return CorpusBytes(_corpus_name(path) if name is None else name, str(path), data, notes, starts)
    elif include or exclude:
        raise CorpusError(f"--include/--exclude pick files inside a directory, and {path} is a file")
    else:
        data = _read_file(path)
    return CorpusBytes(name=name or _corpus_name(path), source=str(path), data=data, notes=notes)


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror or exc}") from None


def _corpus_name(path: Path) -> str:
    stem = path.name if path.is_dir() else path.stem
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in stem) or "corpus"


def read_text_file(path: Path, what: str) -> str:
    """A small UTF-8 text file named on the command line (a prime, an ABC file), with CRLF
    normalised and one-line errors that say which option or file it was (`what`)."""
    try:
        return Path(path).read_text(encoding="utf-8").replace("\r\n", "\n")
    except FileNotFoundError:
        raise CorpusError(f"{what} not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{what} {path} is not UTF-8 (byte offset {exc.start})") from None
    except OSError as exc:
        raise CorpusError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def decode_corpus(corpus: CorpusBytes, encoding: str = "utf-8") -> str:
    """Bytes -> text: strict decoding (the error gives the byte offset), a leading BOM dropped,
    Windows (CRLF) and old Mac (CR) line endings turned into LF; NUL bytes rejected."""
    data = corpus.data
    if not data:
        raise CorpusError(f"corpus is empty: {corpus.source}")
    nul = data.find(b"\x00")
    if nul >= 0 and encoding.lower().replace("-", "") in ("utf8", "ascii", "latin1"):
        raise CorpusError(f"{corpus.source} looks binary: NUL byte at offset {nul} (a text corpus is needed)")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{corpus.source} is not valid {exc.encoding}: byte 0x{data[exc.start]:02x} at offset {exc.start} "
            f"(give the right --encoding, e.g. --encoding latin-1)"
        ) from None
    except LookupError:
        raise CorpusError(f"unknown --encoding {encoding!r}") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        raise CorpusError(f"{corpus.source} contains NUL characters: it looks binary, not text")
    if not text.strip():
        raise CorpusError(f"corpus has no text (only whitespace): {corpus.source}")
    return text


def file_texts(corpus: CorpusBytes, encoding: str = "utf-8") -> list[str] | None:
    """The text of each file of a corpus read from a directory (normalised as `decode_corpus`
    does), or None for a corpus that is one text."""
    starts = corpus.file_starts
    if not starts or len(starts) < 2:
        return None
    ends = [*starts[1:], len(corpus.data)]
    texts = [corpus.data[a:b].decode(encoding).replace("\r\n", "\n").replace("\r", "\n") for a, b in zip(starts, ends)]
    return [t.removeprefix("\ufeff").rstrip("\n") for t in texts]


def split_corpus(corpus: CorpusBytes, val_frac: float, val_split: str = "auto", encoding: str = "utf-8") -> Split:
    """The corpus's training and validation text, as every command cuts it (see split.py)."""
    return split_text(decode_corpus(corpus, encoding), val_frac, val_split, file_texts(corpus, encoding))


@dataclass
class TokenData:
    """A corpus as token ids: training and validation splits (memory-mapped when cached)."""

    name: str
    tokenizer: Tokenizer
    train: np.ndarray  # (N_train,) unsigned ints
    val: np.ndarray  # (N_val,)
    val_chars: int  # characters of validation text: the denominator of bits per character
    train_chars: int
    digest: str = ""  # sha256 of the corpus bytes
    cached: bool = False  # True when read from the cache
    notes: list[str] = field(default_factory=list)  # for the user, e.g. a cache that could not be written
    split: str = ""  # how validation was held out, in words


def cache_dir() -> Path:
    root = os.environ.get("CHARRNN_CACHE") or os.environ.get("XDG_CACHE_HOME")
    base = Path(root) if root else Path.home() / ".cache"
    return (base if os.environ.get("CHARRNN_CACHE") else base / "charrnn") / "ids"


def load_tokens(
    corpus: CorpusBytes,
    *,
    tokenizer_kind: str = "char",
    vocab_size: int | None = None,
    val_frac: float = 0.1,
    encoding: str = "utf-8",
    tokenizer: Tokenizer | None = None,
    use_cache: bool = True,
    val_split: str = "auto",
) -> TokenData:
    """Token ids for a corpus, from the cache when this corpus was encoded the same way before.

    A given `tokenizer` (fine-tuning: the checkpoint's, possibly extended) is used as is;
    otherwise one is fitted: char on the whole corpus, SentencePiece on the training split only.
    """
    fixed = tokenizer.fingerprint() if tokenizer is not None else f"{tokenizer_kind}:{vocab_size}"
    key = hashlib.sha256(
        json.dumps([CACHE_VERSION, corpus.digest, fixed, val_frac, val_split, encoding.lower()]).encode()
    ).hexdigest()[:32]
    folder = cache_dir()
    if use_cache:
        hit = _read_cache(folder, key, corpus.name)
        if hit is not None:
            hit.digest = corpus.digest
            hit.notes.append(hit.split)
            return hit

    text = decode_corpus(corpus, encoding)
    split = split_text(text, val_frac, val_split, file_texts(corpus, encoding))
    train_text, val_text = split.train, split.val
    if tokenizer is None:
        tokenizer = fit_tokenizer(tokenizer_kind, text if tokenizer_kind == "char" else train_text, vocab_size)
        if tokenizer.vocab_size < 2:  # every prediction is certain: a model would learn nothing
            raise CorpusError(
                f"{corpus.source} uses only one distinct {'character' if tokenizer_kind == 'char' else 'token'} "
                f"({text[:1]!r}): there is nothing to learn"
            )
    train_ids = tokenizer.encode(train_text)
    val_ids = tokenizer.encode(val_text)
    data = TokenData(
        corpus.name,
        tokenizer,
        train_ids,
        val_ids,
        val_chars=len(val_text),
        train_chars=len(train_text),
        digest=corpus.digest,
        split=describe_split(split, len(text)),
    )
    data.notes.append(data.split)
    if use_cache:
        unwritable = _write_cache(folder, key, data)
        if unwritable:
            data.notes.append(
                f"token ids not cached ({unwritable}); continuing without the cache "
                f"(CHARRNN_CACHE chooses its directory)"
            )
    return data


def describe_split(split: Split, chars: int) -> str:
    share = len(split.val) / max(chars, 1)
    if split.how == "documents":
        return (
            f"validation: {split.val_documents:,} of {split.documents:,} documents held out "
            f"({share:.1%} of the text), chosen by a hash of each"
        )
    return f"validation: the last {share:.1%} of the text"


def _read_cache(folder: Path, key: str, name: str) -> TokenData | None:
    meta_path, ids_path = folder / f"{key}.json", folder / f"{key}.ids"
    try:
        meta = json.loads(meta_path.read_text())
        blob = (folder / f"{key}.tok").read_bytes() if meta.get("has_blob") else None
        tokenizer = tokenizer_from_state(meta["tokenizer"], blob)
        ids = np.memmap(ids_path, dtype=np.dtype(meta["dtype"]), mode="r")
        n_train = int(meta["n_train"])
        if ids.shape[0] != n_train + int(meta["n_val"]):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    val_chars, train_chars = int(meta["val_chars"]), int(meta["train_chars"])
    return TokenData(
        name, tokenizer, ids[:n_train], ids[n_train:], val_chars, train_chars, cached=True, split=meta["split"]
    )


def _write_cache(folder: Path, key: str, data: TokenData) -> str | None:
    """Best effort: a cache that cannot be written only costs the next run its head start.
    Returns why it could not be written, or None."""
    try:
        make_dirs(folder)
        state, blob = data.tokenizer.to_state()
        dtype = np.result_type(data.train.dtype, data.val.dtype)
        for suffix, writer in (
            (
                ".ids",
                lambda f: (
                    f.write(np.asarray(data.train, dtype=dtype).tobytes()),
                    f.write(np.asarray(data.val, dtype=dtype).tobytes()),
                ),
            ),
            (".tok", (lambda f: f.write(blob)) if blob is not None else None),
            (
                ".json",
                lambda f: f.write(
                    json.dumps(
                        {
                            "dtype": dtype.str,
                            "n_train": len(data.train),
                            "n_val": len(data.val),
                            "val_chars": data.val_chars,
                            "train_chars": data.train_chars,
                            "split": data.split,
                            "tokenizer": state,
                            "has_blob": blob is not None,
                        }
                    ).encode()
                ),
            ),
        ):
            if writer is None:
                continue
            # the .json goes last: it marks the entry whole
            write_atomic(folder / f"{key}{suffix}", writer, durable=False)
    except OSError as exc:
        return str(exc) if isinstance(exc, WriteError) else f"cannot write {folder}: {exc.strerror or exc}"
    return None
