"""The train/validation split: the tail of a running text, or whole documents spread over a corpus.

A corpus of documents (a directory's files, ABC tunes, any text given `--val-split documents`)
holds out whole documents chosen by a hash of their text, so that validation is spread over
the corpus as evenly as training is, and the same text always lands on the same side (a
resumed run and `charrnn eval --val` see the same split). A single running text (a novel, a
play) keeps its last `val_frac` as validation: cutting it into pieces would let the training
side hold the context of every validation piece.

What counts as a corpus of documents under `--val-split auto` (the default):
- a directory: each of its files is a document (also python-stdlib, built from one);
- a text of blank-line-separated blocks that are ABC tunes: at least 20 blocks, and at least
  90% of them begin with an `X:` line (a tune's reference number), as folk-abc;
- anything else is a running text. `--val-split documents` takes the blank-line-separated
  blocks of any text as its documents; `--val-split tail` keeps the tail split for every corpus.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Sequence

BLOCK_SEPARATOR = re.compile(r"\n[ \t]*\n+")  # a blank line (or several) ends a block
DOCUMENT_SEPARATOR = "\n\n"  # between documents on either side of the split
ABC_MIN_BLOCKS = 20
ABC_TUNE_SHARE = 0.9
HASH_SCALE = 1_000_000


@dataclass(frozen=True)
class Split:
    train: str
    val: str
    how: str  # "tail" or "documents"
    documents: int = 0  # documents in all (0 for a tail split)
    val_documents: int = 0


def tail_point(text: str, val_frac: float) -> int:
    """Where validation starts in a running text: the last `val_frac` of the text, moved forward
    to the start of the next paragraph (after a blank line) when there is one, so that a
    paragraph is never cut in the middle."""
    cut = int(len(text) * (1.0 - val_frac))
    cut = max(1, min(cut, len(text) - 1))
    blank = text.find("\n\n", cut - 1)
    if blank >= 0 and blank + 2 < len(text) - 1 and (len(text) - (blank + 2)) >= 0.5 * (len(text) - cut):
        return blank + 2
    return cut


def blocks(text: str) -> list[str]:
    """The blank-line-separated blocks of a text (empty ones dropped)."""
    return [b for b in BLOCK_SEPARATOR.split(text) if b.strip()]


def looks_like_abc_tunes(pieces: Sequence[str]) -> bool:
    if len(pieces) < ABC_MIN_BLOCKS:
        return False
    tunes = sum(1 for b in pieces if b.lstrip().startswith("X:"))
    return tunes >= ABC_TUNE_SHARE * len(pieces)


def held_out(document: str, val_frac: float) -> bool:
    """Whether a document goes to validation: a fixed function of its text (sha256), so the
    same document is held out by every run, and identical copies land on the same side."""
    digest = hashlib.sha256(document.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % HASH_SCALE < val_frac * HASH_SCALE


def split_text(text: str, val_frac: float, mode: str = "auto", files: Sequence[str] | None = None) -> Split:
    """Training and validation text. `files`: the corpus's documents when it was read from a
    directory (its files, in order); else documents are looked for in `text` (see the module)."""
    documents: Sequence[str] | None = None
    if mode != "tail":
        if files is not None and len(files) >= 2:
            documents = files
        else:
            pieces = blocks(text)
            if mode == "documents" or looks_like_abc_tunes(pieces):
                documents = pieces
    if documents is not None and len(documents) >= 2:
        chosen = [held_out(d, val_frac) for d in documents]
        if 0 < sum(chosen) < len(documents):  # both sides hold something: else the tail split
            train = DOCUMENT_SEPARATOR.join(d for d, v in zip(documents, chosen) if not v)
            val = DOCUMENT_SEPARATOR.join(d for d, v in zip(documents, chosen) if v)
            return Split(train + "\n", val + "\n", "documents", len(documents), sum(chosen))
    cut = tail_point(text, val_frac)
    return Split(text[:cut], text[cut:], "tail")
