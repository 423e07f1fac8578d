"""Validation during training: what it scores (a capped part of the split, or all of it).

Scoring the whole validation split costs time in proportion to the corpus (about 3 minutes
for a 100 MB corpus on a laptop), so training validates on a fixed part of it: at most
--val-tokens tokens, taken as one piece per validation stream, the pieces starting at evenly
spaced points of the split (so the part samples all of it), the same part at every validation.
The best checkpoint is chosen on that part. The whole split is scored by `charrnn eval --val`,
and at the end of a run when the estimate (from the measured speed of the part) fits.

How long a validation may take within a --time-budget, and when the whole split fits, is the
budget's to say (budget.py); `ValidationSet.within` cuts the part to the time it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..tokenizers.char import Tokenizer


@dataclass(frozen=True)
class ValidationSet:
    """What training validates on: the ids, the characters they stand for, and whether they are
    the whole split ("whole") or the capped part ("part")."""

    ids: np.ndarray  # (N,)
    chars: int
    scope: str  # "part" | "whole"
    num_streams: int

    def first_windows(self, seq_len: int) -> "ValidationSet":
        """The first window of each piece: timing it tells what the whole part will cost."""
        # A split shorter than its stream count (a tiny corpus) is scored on one token per stream.
        streams = max(1, min(self.num_streams, len(self.ids)))
        length = len(self.ids) // streams
        ids = np.asarray(self.ids[: streams * length]).reshape(streams, length)[:, :seq_len]
        return ValidationSet(ids.reshape(-1), ids.size, "part", streams)

    def within(self, seconds: float, estimate: float) -> "ValidationSet":
        """Itself when scoring it (`estimate` seconds) fits in `seconds`; else its first pieces,
        as many as fit (at least one): a run out of time still ends with a validation."""
        if estimate <= max(seconds, 0.0) or self.num_streams <= 1:  # no estimate yet (0 s): score it all
            return self
        keep = max(1, int(self.num_streams * max(seconds, 0.0) / estimate))
        length = max(1, len(self.ids) // self.num_streams)
        return ValidationSet(self.ids[: keep * length], self.chars * keep // self.num_streams, "part", keep)


def validation_set(
    val: np.ndarray, val_chars: int, tokenizer: Tokenizer, max_tokens: int, seq_len: int, streams: int
) -> ValidationSet:
    """The whole split when it holds at most `max_tokens`, else the capped part (see the module)."""
    n = len(val)
    if n <= max_tokens:
        return ValidationSet(val, val_chars, "whole", streams)
    streams = max(1, min(streams, max_tokens // seq_len))
    length = max_tokens // streams
    starts = np.linspace(0, n - length, streams).astype(np.int64)
    pieces = [np.asarray(val[s : s + length]) for s in starts]
    chars = sum(len(tokenizer.decode(piece)) for piece in pieces)
    return ValidationSet(np.concatenate(pieces), chars, "part", streams)
