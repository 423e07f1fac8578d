"""Validation on a capped part of the split: spread over it, timed on its first windows, cut to the time given."""

from __future__ import annotations

import numpy as np
from conftest import one_error_line

from charrnn.training.validation import validation_set


class OneCharPerId:
    def decode(self, ids) -> str:
        return "x" * len(ids)


def test_the_part_is_spread_over_the_split_and_the_same_every_time():
    tokenizer = OneCharPerId()
    val = np.arange(100_000, dtype=np.int64) % 10
    part = validation_set(val, 100_000, tokenizer, max_tokens=1_000, seq_len=10, streams=8)
    assert part.scope == "part" and len(part.ids) <= 1_000 and part.num_streams == 8
    assert part.chars == len(part.ids)
    marked = np.arange(100_000)  # which positions the pieces come from
    pieces = validation_set(marked, 100_000, tokenizer, 1_000, 10, 8).ids.reshape(8, -1)
    assert pieces[0, 0] == 0 and pieces[-1, -1] == 99_999  # from the start to the end of the split
    assert np.all(np.diff(pieces, axis=1) == 1)  # each piece contiguous: the hidden state carries
    assert np.array_equal(validation_set(val, 100_000, tokenizer, 1_000, 10, 8).ids, part.ids)
    whole = validation_set(val[:900], 900, tokenizer, 1_000, 10, 8)
    assert whole.scope == "whole" and len(whole.ids) == 900


def test_val_tokens_below_one_window_is_refused(cli, tiny_corpus):
    line = one_error_line(cli("train", tiny_corpus, "--seq-len", "32", "--val-tokens", "20", "--steps", "1"))
    assert "--val-tokens" in line and "33" in line


def test_a_run_past_its_budget_with_no_estimate_yet_scores_the_set_whole():
    """A tiny --time-budget ends before any validation was timed: estimate 0, seconds left < 0."""
    from charrnn.training.validation import ValidationSet

    part = ValidationSet(np.arange(40), 40, "part", 4)
    assert part.within(-0.5, 0.0) is part
    assert part.within(-0.5, 2.0).num_streams == 1  # with an estimate, the least that fits: one piece


def test_a_split_shorter_than_its_streams_is_timed_one_token_per_stream():
    # A tiny corpus: 16 validation tokens, 128 streams (it raised a reshape error before training).
    whole = validation_set(np.arange(16), 16, OneCharPerId(), 120_000, seq_len=10, streams=128)
    sample = whole.first_windows(seq_len=10)
    assert sample.num_streams == 16 and list(sample.ids) == list(range(16))
