"""Validation on a capped part of the split, the whole split at the end, and budgets that hold."""

from __future__ import annotations

import json

import numpy as np
from conftest import TINY_TEXT, one_error_line

from charrnn.config import ModelConfig, TrainConfig
from charrnn.data.tokens import CorpusBytes, load_tokens
from charrnn.training import loop as trainer_module
from charrnn.training.loop import Trainer
from charrnn.training.validation import BudgetReserve, validation_set


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


def test_the_reserve_grows_with_what_the_end_of_the_run_takes():
    reserve = BudgetReserve(part_tokens=10_000, whole_tokens=100_000, time_budget=600)
    assert reserve.seconds() > 0  # a guess before anything is measured
    reserve.add_step(0.5, 2048)
    guessed = reserve.seconds()
    reserve.eval_seconds, reserve.save_seconds = 4.0, 1.0
    assert reserve.seconds() > guessed
    assert reserve.whole_seconds() == 40.0  # ten times the tokens of the part, at its speed
    assert reserve.plans_whole() and reserve.whole_fits(500) and not reserve.whole_fits(560)
    assert not BudgetReserve(10_000, 10_000, 600).whole_fits(0)  # the part was the whole split
    assert not BudgetReserve(10_000, 10_000_000, None).plans_whole()


class FakeClock:
    """Stands for the `time` module in trainer.py: steps, validations and saves take simulated seconds."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


def _slowed(monkeypatch, clock: FakeClock, step: float, per_val_token: float, save: float) -> None:
    monkeypatch.setattr(trainer_module, "time", clock)
    original_step, original_validate, original_save = Trainer.step, Trainer.validate, Trainer.save

    def slow_step(self, *args):
        clock.now += step
        return original_step(self, *args)

    def slow_validate(self, on=None):
        clock.now += per_val_token * len((on or self.val_set).ids)
        return original_validate(self, on)

    def slow_save(self, kind):
        clock.now += save
        return original_save(self, kind)

    monkeypatch.setattr(Trainer, "step", slow_step)
    monkeypatch.setattr(Trainer, "validate", slow_validate)
    monkeypatch.setattr(Trainer, "save", slow_save)


def _tiny(tmp_path, **train):
    data = load_tokens(CorpusBytes("tiny", "tiny", (TINY_TEXT * 3).encode()))
    model_cfg = ModelConfig(vocab_size=data.tokenizer.vocab_size, embed_size=8, hidden_size=16, num_layers=1)
    cfg = TrainConfig(seq_len=8, batch_size=4, precision="fp32", warmup_steps=2, patience=None, **train)
    (tmp_path / "run").mkdir()
    return data, model_cfg, cfg


def test_a_time_budget_holds_the_last_validation_and_the_checkpoints(tmp_path, monkeypatch):
    clock = FakeClock()
    _slowed(monkeypatch, clock, step=1.0, per_val_token=0.01, save=2.0)
    data, model_cfg, cfg = _tiny(tmp_path, time_budget=60, eval_every=7, val_tokens=400)
    started = clock.now - 3.0  # the command started 3 s ago (reading the corpus, imports)
    result = Trainer(data, model_cfg, cfg, tmp_path / "run", started=started).run()
    assert clock.now - started <= 60  # validating (4 s) and saving (2 x 2 s) included
    assert result.steps >= 20 and clock.now - started >= 50  # and the budget was used, not given away
    assert result.stopped_because.startswith("reached --time-budget")


def test_a_run_out_of_time_still_ends_with_a_smaller_validation(tmp_path, monkeypatch):
    clock = FakeClock()
    _slowed(monkeypatch, clock, step=1.0, per_val_token=0.01, save=0.2)
    data, model_cfg, cfg = _tiny(tmp_path, time_budget=60, eval_every=50, val_tokens=400)
    started = clock.now - 57.0  # reading the corpus took most of the budget
    result = Trainer(data, model_cfg, cfg, tmp_path / "run", started=started).run()
    assert clock.now - started <= 60 and result.steps >= 1
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert row["val_scope"] == "part" and 0 < row["val_tokens"] < 400


def test_metrics_say_what_each_figure_was_measured_on(tmp_path, monkeypatch):
    clock = FakeClock()
    _slowed(monkeypatch, clock, step=0.1, per_val_token=0.0001, save=0.1)
    data, model_cfg, cfg = _tiny(tmp_path, steps=10, eval_every=5, val_tokens=400)
    assert len(data.val) > 400
    result = Trainer(data, model_cfg, cfg, tmp_path / "run", started=clock.now).run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["val_scope"]) for r in rows] == [(5, "part"), (10, "part"), (10, "whole")]
    assert rows[0]["val_tokens"] <= 400 and rows[-1]["val_tokens"] == len(data.val)
    assert result.whole_val_bpc == rows[-1]["val_bpc"] != rows[1]["val_bpc"]


def test_the_whole_split_is_left_out_when_it_would_break_the_budget(tmp_path, monkeypatch):
    clock = FakeClock()
    _slowed(monkeypatch, clock, step=1.0, per_val_token=0.01, save=0.5)  # the whole split: about 30 s
    data, model_cfg, cfg = _tiny(tmp_path, time_budget=40, eval_every=5, val_tokens=100)
    result = Trainer(data, model_cfg, cfg, tmp_path / "run", started=clock.now).run()
    assert result.whole_val_bpc is None and clock.now - 1000.0 <= 40


def test_val_tokens_below_one_window_is_refused(cli, tiny_corpus):
    line = one_error_line(cli("train", tiny_corpus, "--seq-len", "32", "--val-tokens", "20", "--steps", "1"))
    assert "--val-tokens" in line and "33" in line


def test_a_run_past_its_budget_with_no_estimate_yet_scores_the_set_whole():
    """A tiny --time-budget ends before any validation was timed: estimate 0, seconds left < 0."""
    from charrnn.training.validation import ValidationSet

    part = ValidationSet(np.arange(40), 40, "part", 4)
    assert part.within(-0.5, 0.0) is part
    assert part.within(-0.5, 2.0).num_streams == 1  # with an estimate, the least that fits: one piece


def test_within_a_budget_the_part_is_timed_on_its_first_windows():
    part = validation_set(np.arange(100_000), 100_000, OneCharPerId(), 12_800, seq_len=10, streams=128)
    seen = []
    reserve = BudgetReserve(len(part.ids), 100_000, time_budget=60)
    reserve.time_part(lambda sample: seen.append(sample.ids), part, seq_len=10)
    assert len(seen) == 1 and len(seen[0]) == 1_280  # one window of each of the 128 pieces
    assert seen[0][10] == part.ids[100]  # the second piece's first window
    assert reserve.eval_seconds is not None
    untimed = BudgetReserve(len(part.ids), 100_000, time_budget=None)
    untimed.time_part(lambda sample: seen.append(sample), part, seq_len=10)
    assert len(seen) == 1 and untimed.eval_seconds is None


def test_a_split_shorter_than_its_streams_is_timed_one_token_per_stream():
    # A tiny corpus: 16 validation tokens, 128 streams (it raised a reshape error before training).
    whole = validation_set(np.arange(16), 16, OneCharPerId(), 120_000, seq_len=10, streams=128)
    sample = whole.first_windows(seq_len=10)
    assert sample.num_streams == 16 and list(sample.ids) == list(range(16))
