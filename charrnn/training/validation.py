"""Validation during training, and the time a --time-budget keeps in reserve for the end of a run.

Scoring the whole validation split costs time in proportion to the corpus (about 3 minutes
for a 100 MB corpus on a laptop), so training validates on a fixed part of it: at most
--val-tokens tokens, taken as one piece per validation stream, the pieces starting at evenly
spaced points of the split (so the part samples all of it), the same part at every validation.
The best checkpoint is chosen on that part. The whole split is scored by `charrnn eval --val`,
and at the end of a run when the estimate (from the measured speed of the part) fits.

A --time-budget bounds the whole run, from the start of the command to its exit: the loop
stops early enough to leave time for one more step, the final validation and the checkpoints,
each estimated from its last measured duration (guessed before the first measurement).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..tokenizers.char import Tokenizer

EVAL_COST_GUESS = 0.5  # validation seconds per token / training seconds per token, before any is measured
SAVE_SECONDS_GUESS = 1.0  # writing both checkpoints, before it is measured
WHOLE_SHARE = 0.1  # the whole split is scored at the end when it costs at most this share of the run
WHOLE_MIN_SECONDS = 30.0  # ... or, in a run with no --time-budget, at most this long
MARGIN = 1.5  # estimates are multiplied by this: durations vary, and a budget is a promise


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


class BudgetReserve:
    """How long the end of the run will take: one more step, the last validation, the checkpoints,
    and (when it is cheap enough to plan for) the whole split. Durations are measured as the run
    goes; before they are, they are guessed from the training speed."""

    def __init__(self, part_tokens: int, whole_tokens: int, time_budget: float | None):
        self.part_tokens, self.whole_tokens, self.time_budget = part_tokens, whole_tokens, time_budget
        self.step_seconds = 0.0
        self.eval_seconds: float | None = None  # of one validation of the part
        self.save_seconds: float | None = None
        self._tokens_per_second = 0.0  # training

    def add_step(self, seconds: float, tokens: int) -> None:
        self.step_seconds = seconds if self.step_seconds == 0 else max(0.8 * self.step_seconds + 0.2 * seconds, seconds)
        self._tokens_per_second = tokens / max(self.step_seconds, 1e-9)

    def time_part(self, validate: Callable[[ValidationSet], object], part: ValidationSet, seq_len: int) -> None:
        """Within a --time-budget, time the first window of every piece of the part: the loop then
        knows what its last validation will cost instead of guessing (the part may be 15x that)."""
        sample = part.first_windows(seq_len)
        if self.time_budget is None or len(part.ids) < 4 * len(sample.ids):
            return
        began = time.perf_counter()
        validate(sample)
        self.eval_seconds = (time.perf_counter() - began) * len(part.ids) / len(sample.ids)

    def part_seconds(self) -> float:
        if self.eval_seconds is not None:
            return self.eval_seconds
        if self._tokens_per_second <= 0:
            return 0.0
        return EVAL_COST_GUESS * self.part_tokens / self._tokens_per_second

    def whole_seconds(self) -> float:
        """Scoring the whole split, from the speed of the part."""
        return self.part_seconds() * self.whole_tokens / max(self.part_tokens, 1)

    def plans_whole(self) -> bool:
        """A budgeted run keeps time for the whole split when it costs at most WHOLE_SHARE of the budget."""
        if self.whole_tokens <= self.part_tokens or self.time_budget is None:
            return False
        return MARGIN * self.whole_seconds() <= WHOLE_SHARE * self.time_budget

    def after_validation(self) -> float:
        """What the end of a run takes after its last validation: the checkpoints, with a margin."""
        return MARGIN * (self.save_seconds or SAVE_SECONDS_GUESS)

    def seconds(self) -> float:
        """What the loop must leave of the budget when it stops."""
        end = self.step_seconds + self.part_seconds() + (self.save_seconds or SAVE_SECONDS_GUESS)
        if self.plans_whole():
            end += self.whole_seconds()
        return MARGIN * end

    def whole_fits(self, elapsed: float) -> bool:
        """Whether scoring the whole split now stays inside the run's limits."""
        if self.whole_tokens <= self.part_tokens:
            return False
        cost = MARGIN * self.whole_seconds()
        if self.time_budget is not None:
            return elapsed + cost <= self.time_budget
        return cost <= max(WHOLE_MIN_SECONDS, WHOLE_SHARE * elapsed)


def process_age() -> float:
    """Seconds since this process started (Linux: from /proc), so that a budget counts the
    interpreter's start and imports too; 0 where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        ticks = os.sysconf("SC_CLK_TCK")
        return max(0.0, uptime - int(fields[19]) / ticks)
    except (OSError, ValueError, IndexError):
        return 0.0


def command_start() -> float:
    """The perf_counter() value at which this process started."""
    return time.perf_counter() - process_age()
