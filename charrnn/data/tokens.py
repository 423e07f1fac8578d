"""Corpus reading, the train/validation split, the token-id cache and TBPTT stream batching.

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
from typing import Iterator, Sequence

import numpy as np
import torch

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


class StreamBatcher:
    """Cuts token ids into streams and serves consecutive TBPTT windows from them.

    With N ids, S = world_size x batch_size streams and chunks of C = K x T ids (K windows of
    seq_len T), the text is cut into M = (N - 1) // C chunks (each also holds the id after it,
    the last target). With `chunk_windows` 0, K is as large as it can be (M = S): each stream
    is one contiguous run of the text, read in order, as char-rnn reads it:

        ids:       a b c d e f g h i j k l m n o p q r s t u v w x      (N = 24, 4 streams)
        stream 0:  a b c d e f
        stream 1:  g h i j k l
        stream 2:  m n o p q r
        stream 3:  s t u v w x

    With a smaller K, an epoch deals the M chunks out in an order shuffled by `seed` and the
    epoch (the same on every rank, so a resumed run gets the same order), S at a time:

        epoch e:   chunks in order P_e = (9, 2, 14, 5, | 0, 11, ...)    (S = 4)
        stream s:  chunk P_e[s] for K windows, then P_e[S + s], then P_e[2S + s] ...

    Why: a run shorter than an epoch that reads each stream in order sees only the first part
    of each of S stretches of the text, and the same S documents for many steps in a row; its
    training loss then runs well below what held-out text scores. Shuffled chunks spread the
    same steps over the whole text. Within a chunk the next window continues where the last one
    ended (so the hidden state is carried); at the start of a chunk every stream has jumped and
    the state starts from zero (`window_at` says so). Each epoch also shifts the cut points by
    up to the N - 1 - M x C ids that do not fill a chunk. A rank of a data-parallel run owns
    streams [rank*B, (rank+1)*B).
    """

    def __init__(
        self,
        ids: np.ndarray,
        batch_size: int,
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        chunk_windows: int = 0,
        seed: int = 0,
    ):
        total_streams = batch_size * world_size
        windows_per_stream = (len(ids) // total_streams - 1) // seq_len if len(ids) >= total_streams else 0
        if windows_per_stream < 1:
            need = total_streams * (seq_len + 1)
            raise CorpusError(
                f"training text too small: {len(ids):,} tokens, but --batch-size {batch_size}"
                + (f" x {world_size} processes" if world_size > 1 else "")
                + f" x (--seq-len {seq_len} + 1) needs at least {need:,}; lower --batch-size or --seq-len"
            )
        self.ids, self.batch_size, self.seq_len, self.seed = ids, batch_size, seq_len, seed
        self.total_streams, self.first_stream = total_streams, rank * batch_size
        self.shuffled = 0 < chunk_windows < windows_per_stream
        if self.shuffled:
            self.chunk_windows = chunk_windows
            self.chunk_len = chunk_windows * seq_len
            self.num_chunks = (len(ids) - 1) // self.chunk_len
            self.windows_per_epoch = self.num_chunks // total_streams * chunk_windows
        else:  # one chunk per stream: the text in S contiguous runs, in order
            self.chunk_windows = self.windows_per_epoch = windows_per_stream
            self.chunk_len = len(ids) // total_streams  # the stream's length; its windows use all but the tail
            self.num_chunks = total_streams
        self._order: tuple[int, np.ndarray, int] | None = None  # (epoch, chunk order, offset), dealt once

    pin_memory = False  # set for CUDA runs: page-locked windows make `.to(device, non_blocking=True)` async

    def window_at(self, step: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Inputs and targets of the run's window number `step` (any step >= 0), each (B, T) int64,
        and whether the streams start afresh there (a new chunk or epoch: the hidden state resets)."""
        epoch, index = divmod(step, self.windows_per_epoch)
        x, y = self.window(index, epoch)
        return x, y, index % self.chunk_windows == 0

    def window(self, index: int, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of window `index` (0 <= index < windows_per_epoch) of `epoch`, each (B, T) int64."""
        round_, within = divmod(index, self.chunk_windows)
        order, offset = self._deal(epoch)
        first = self.first_stream + round_ * self.total_streams  # this rank's streams in this round's deal
        starts = offset + order[first : first + self.batch_size] * self.chunk_len + within * self.seq_len  # (B,)
        rows = starts[:, None] + np.arange(self.seq_len + 1)  # (B, T + 1) positions in the text
        chunk = torch.from_numpy(np.asarray(self.ids[rows], dtype=np.int64))
        x, y = chunk[:, :-1], chunk[:, 1:]
        if self.pin_memory:  # a non-contiguous source would be staged through pageable memory: copy first
            x, y = x.contiguous().pin_memory(), y.contiguous().pin_memory()
        return x, y

    def _deal(self, epoch: int) -> tuple[np.ndarray, int]:
        if not self.shuffled:
            return np.arange(self.num_chunks), 0
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([self.seed % 2**64, epoch])  # --seed may be negative; numpy's may not
            slack = len(self.ids) - 1 - self.num_chunks * self.chunk_len  # ids no chunk holds this epoch
            self._order = (epoch, rng.permutation(self.num_chunks), int(rng.integers(0, slack + 1)))
        return self._order[1], self._order[2]


def fit_batch_size(n_tokens: int, batch_size: int, seq_len: int, world_size: int = 1) -> int:
    """The largest batch size <= `batch_size` that the text allows (at least one window), or 0."""
    per_stream = seq_len + 1
    return min(batch_size, n_tokens // (per_stream * world_size))


def validation_windows(
    ids: np.ndarray, context_token: int | None, num_streams: int, seq_len: int, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
    """Every validation id is predicted exactly once, with the hidden state carried.

    The targets (all N ids) are cut into S streams of L; each stream's first input is the id
    just before its first target (for the very first, the last training id), so no target is
    skipped. Yields (inputs, targets, reset) per window; `reset` marks a new set of streams.
    The few ids left over (N mod S) come last, as one stream continuing the last one.
    With world_size > 1 each rank takes a disjoint share of the streams.
    """
    n = len(ids)
    if n == 0:
        return
    prefix = np.empty(n + 1, dtype=np.int64)
    prefix[0] = context_token if context_token is not None else ids[0]
    prefix[1:] = ids
    skip_first = context_token is None  # without context the first id is not a target
    per_rank = max(1, min(num_streams, n // max(1, seq_len)) // world_size)
    streams = per_rank * world_size
    length = n // streams
    if length == 0:  # fewer ids than streams: rank 0 takes it all as one stream
        streams, length = 1, n
        mine = range(1) if rank == 0 else range(0)
    else:
        mine = range(rank * per_rank, (rank + 1) * per_rank)
    if len(mine) == 0:
        return
    block_x = np.stack([prefix[s * length : (s + 1) * length] for s in mine])  # (S, L)
    block_y = np.stack([prefix[s * length + 1 : (s + 1) * length + 1] for s in mine])
    if skip_first and mine[0] == 0:
        block_y[0, 0] = -100  # ignore_index: nothing to predict it from
    first = True
    for start in range(0, length, seq_len):
        x = torch.from_numpy(block_x[:, start : start + seq_len].copy())
        y = torch.from_numpy(block_y[:, start : start + seq_len].copy())
        yield x, y, first
        first = False
    tail_start = streams * length
    if tail_start < n and mine[-1] == streams - 1:
        x = torch.from_numpy(prefix[tail_start:n].copy())[None]
        y = torch.from_numpy(prefix[tail_start + 1 : n + 1].copy())[None]
        yield x, y, False  # continues the last stream: the caller keeps only that stream's state
