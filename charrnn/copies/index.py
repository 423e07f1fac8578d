"""The suffix-array index of a training text and the search for verbatim copies in it.

The index is over the UTF-8 bytes of the training text (pydivsufsort's divsufsort: a byte
alphabet, int32 positions below 2 GiB). Copies are counted in characters: a query is searched
from character starts only, and a match is cut back to the last whole character (UTF-8 is
self-synchronising, so a match that starts on a character start in the query starts on one in
the corpus too).

For each character start i of a query, the longest prefix of query[i:] that occurs in the
training text is found by extending one byte at a time from the previous position's length
minus one (a known occurrence): about two searches per character, each a binary search over the
suffix array in C (`sa_search`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class TrainingText:
    """What a run was trained on, as the index sees it: the training split's UTF-8 bytes and,
    for a corpus of files, where each training file starts in it (bytes) and its name."""

    name: str
    digest: str  # sha256 of the corpus bytes, as the checkpoint records it
    data: bytes
    doc_starts: list[int] = field(default_factory=list)
    doc_names: list[str] = field(default_factory=list)
    how: str = "tail"  # the split: "tail" (training text = the corpus's head) or "documents"


@dataclass
class CopyIndex:
    text: TrainingText
    suffixes: np.ndarray  # int32/int64 suffix array of text.data


@dataclass
class Origin:
    """Where a copied span comes from in the training text."""

    offset: int  # character offset in the training text (= in the corpus for a tail split)
    line: int  # 1-based line there
    file: str | None = None  # for a corpus of files: the file, and the line inside it
    file_line: int | None = None

    def to_dict(self) -> dict[str, object]:
        found: dict[str, object] = {"offset": self.offset, "line": self.line}
        if self.file is not None:
            found |= {"file": self.file, "file_line": self.file_line}
        return found


@dataclass
class TextCopies:
    """What one text copies from the training text."""

    source: str
    chars: int
    longest: int  # characters of the longest span found verbatim in the training text
    longest_at: Origin | None  # None when nothing is copied (longest == 0)
    copied_share: float  # share of the text's characters inside copied spans of >= min_span
    longest_text: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "chars": self.chars,
            "longest": self.longest,
            "longest_at": self.longest_at.to_dict() if self.longest_at else None,
            "copied_share": self.copied_share,
        }


def build_index(text: TrainingText) -> CopyIndex:
    from pydivsufsort import divsufsort

    return CopyIndex(text, divsufsort(text.data))


def _is_start(byte: int) -> bool:
    return (byte & 0xC0) != 0x80


def match_lengths(index: CopyIndex, query: bytes) -> tuple[np.ndarray, np.ndarray]:
    """For each byte of `query`: the byte length of the longest whole-character prefix of
    query[i:] found in the training text (0 at continuation bytes), and one training-text byte
    offset where it occurs (-1 where the length is 0)."""
    from pydivsufsort import sa_search

    data, sa = index.text.data, index.suffixes

    def found(i: int, length: int) -> int:
        """Where query[i:i+length] occurs in the training text, or -1."""
        count, left = sa_search(data, sa, query[i : i + length])
        return int(sa[left]) if count else -1

    n = len(query)
    lengths = np.zeros(n, dtype=np.int64)
    where = np.full(n, -1, dtype=np.int64)
    known, at = 0, -1  # query[i:i+known] occurs at byte `at` of the training text
    for i in range(n):
        if _is_start(query[i]):
            known, at = _extend(found, i, known, at, n - i)
            whole = known
            while whole and i + whole < n and not _is_start(query[i + whole]):
                whole -= 1  # the match ends inside a character: keep whole characters
            if whole:
                lengths[i], where[i] = whole, at
        known = max(known - 1, 0)  # query[i+1:i+known] occurs one byte further on
        at = at + 1 if known else -1
    return lengths, where


def _extend(found: Callable[[int, int], int], i: int, known: int, at: int, most: int) -> tuple[int, int]:
    """The longest match at i, from `known` bytes known to match (at `at`): galloping (1, 2, 4 ...
    bytes further) then halving back, so a long copy costs a few dozen searches, not one a byte."""
    step, missed = 1, None
    while known < most:
        length = min(known + step, most)
        spot = found(i, length)
        if spot < 0:
            missed = length
            break
        known, at, step = length, spot, step * 2
    while missed is not None and missed - known > 1:
        middle = (known + missed) // 2
        spot = found(i, middle)
        if spot < 0:
            missed = middle
        else:
            known, at = middle, spot
    return known, at


def find_copies(index: CopyIndex, text: str, *, source: str, min_span: int = 20) -> TextCopies:
    """The longest span of `text` found verbatim in the training text, where it comes from, and
    the share of `text`'s characters inside copied spans of at least `min_span` characters."""
    query = text.encode("utf-8", "surrogatepass")
    raw = np.frombuffer(query, dtype=np.uint8)
    starts = (raw & 0xC0) != 0x80  # the first byte of each character
    chars_before = np.concatenate([[0], np.cumsum(starts)])  # characters in query[:i]
    lengths, where = match_lengths(index, query)
    ends = np.arange(len(query)) + lengths
    char_lengths = chars_before[ends] - chars_before[: len(query)]
    covered = np.zeros(len(query) + 1, dtype=np.int64)
    long_enough = np.flatnonzero(starts & (char_lengths >= min_span))
    np.add.at(covered, long_enough, 1)
    np.add.at(covered, ends[long_enough], -1)
    inside = np.cumsum(covered[:-1]) > 0
    chars = int(starts.sum())
    share = float(np.count_nonzero(inside & starts)) / chars if chars else 0.0
    if not len(query) or not char_lengths.max():
        return TextCopies(source, chars, 0, None, share)
    best = int(np.argmax(char_lengths))
    longest = int(char_lengths[best])
    span = query[best : best + int(lengths[best])]
    found = origin(index.text, int(where[best]))
    return TextCopies(source, chars, longest, found, share, span.decode("utf-8", "replace"))


def origin(text: TrainingText, offset: int) -> Origin:
    """The character offset and line of byte `offset` of the training text, and its file."""
    head = np.frombuffer(text.data, dtype=np.uint8, count=offset)
    chars = int(np.count_nonzero((head & 0xC0) != 0x80))
    line = text.data.count(b"\n", 0, offset) + 1
    if not text.doc_starts:
        return Origin(chars, line)
    doc = int(np.searchsorted(np.asarray(text.doc_starts), offset, side="right")) - 1
    file_line = text.data.count(b"\n", text.doc_starts[doc], offset) + 1
    return Origin(chars, line, text.doc_names[doc], file_line)


def longest_copy(index: CopyIndex, text: str) -> int:
    """Characters of the longest span of `text` found verbatim in the training text."""
    return find_copies(index, text, source="", min_span=max(len(text), 1)).longest
