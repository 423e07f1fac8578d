"""The run's budget: the limits that end a run, its clock, the reserve for the end, and budgets that hold."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY_TEXT

from charrnn.config import ModelConfig, TrainConfig
from charrnn.data.tokens import CorpusBytes, load_tokens
from charrnn.training import budget as budget_module
from charrnn.training import loop as trainer_module
from charrnn.training.budget import Budget
from charrnn.training.loop import Trainer
from charrnn.training.validation import validation_set


class OneCharPerId:
    def decode(self, ids) -> str:
        return "x" * len(ids)


def test_the_nearest_limit_ends_the_run_and_sets_the_progress():
    budget = Budget(TrainConfig(steps=100, epochs=2, time_budget=60), 30, part_tokens=1, whole_tokens=1)
    assert budget.total_steps == 60  # two epochs come before 100 steps
    assert budget.progress(30, 45.0) == pytest.approx(0.75)  # the clock is further along than the steps
    assert budget.should_stop(59, 10.0) is None
    assert budget.should_stop(60, 10.0) == "reached --epochs 2"
    assert budget.should_stop(10, 60.0) == "reached --time-budget 60s"


def test_without_a_limit_the_default_epochs_end_the_run_and_patience_alone_has_no_progress():
    assert Budget(TrainConfig(), 7, 1, 1).should_stop(70, 0.0) == "reached the default limit of 10 epochs"
    only_time = Budget(TrainConfig(time_budget=10), 7, 1, 1)
    assert only_time.total_steps is None and only_time.progress(1000, 5.0) == pytest.approx(0.5)


def test_a_time_budget_stops_early_enough_for_the_end_of_the_run_unless_told_not_to():
    budget = Budget(TrainConfig(time_budget=60), 7, part_tokens=1, whole_tokens=1)
    budget.saved(4.0)  # the checkpoints: 4 s, 6 s with the margin
    assert budget.should_stop(1, 53.0) is None and budget.should_stop(1, 55.0) == "reached --time-budget 60s"
    assert budget.should_stop(1, 55.0, keep_for_end=False) is None  # what a resumed run asks: a limit reached?


def test_the_reserve_grows_with_what_the_end_of_the_run_takes():
    budget = Budget(TrainConfig(time_budget=600), 7, part_tokens=10_000, whole_tokens=100_000)
    assert budget.reserve_seconds() > 0  # a guess before anything is measured
    budget.add_step(0.5, 2048)
    guessed = budget.reserve_seconds()
    budget.eval_seconds, budget.save_seconds = 4.0, 1.0
    assert budget.reserve_seconds() > guessed
    assert budget.whole_seconds() == 40.0  # ten times the tokens of the part, at its speed
    assert budget.plans_whole() and budget.time_for_validation(500, 100_000)
    assert not budget.time_for_validation(560, 100_000)
    assert not Budget(TrainConfig(time_budget=600), 7, 10_000, 10_000).plans_whole()  # the part was the whole split
    assert not Budget(TrainConfig(), 7, 10_000, 10_000_000).plans_whole()


def test_without_a_time_budget_a_validation_fits_in_a_share_of_the_run():
    budget = Budget(TrainConfig(steps=10), 7, part_tokens=1_000, whole_tokens=100_000)
    budget.eval_seconds = 0.4  # the whole split: 40 s, 60 s with the margin
    assert not budget.time_for_validation(100.0, 100_000)  # more than 30 s and a tenth of the run
    assert budget.time_for_validation(1_000.0, 100_000)  # a tenth of the run
    assert budget.time_for_validation(1.0, 40_000)  # 24 s: any run affords 30 s
    part = validation_set(np.arange(100_000), 100_000, OneCharPerId(), 1_000, seq_len=10, streams=8)
    assert budget.validation_within(part, 1e9) is part  # no budget: the part is never cut


class AloneRank:
    """A process alone: its collective answers what it sent, which is kept."""

    def end_of_step(self, signum: int, *seconds: float) -> tuple[int, list[float]]:
        self.sent = [float(signum), *seconds]
        return signum, list(seconds)


class PairedRank:
    """One of two processes: its collective answers the largest of each value over both, as gloo does."""

    def __init__(self, other_sent: list[float]):
        self.other_sent = other_sent

    def end_of_step(self, signum: int, *seconds: float) -> tuple[int, list[float]]:
        largest = [max(ours, theirs) for ours, theirs in zip([float(signum), *seconds], self.other_sent)]
        return int(largest[0]), largest[1:]


def test_ranks_decide_on_the_slowest_durations_so_they_stop_at_the_same_step():
    cfg = TrainConfig(time_budget=60)
    main, other = Budget(cfg, 7, 1_000, 1_000), Budget(cfg, 7, 1_000, 1_000)
    main.saved(6.0)  # rank 0 writes the checkpoints; the other rank only waits for it
    other.saved(0.1)
    main.add_step(0.5, 64)
    other.add_step(0.7, 64)
    assert main.reserve_seconds() != other.reserve_seconds()
    alone_main, alone_other = AloneRank(), AloneRank()
    main.agree(alone_main)  # what each rank sends
    other.agree(alone_other)
    signum, _ = main.agree(PairedRank(alone_other.sent), signum=0)
    other.agree(PairedRank(alone_main.sent), signum=2)  # a signal on one rank
    assert signum == 0 and main.save_seconds == other.save_seconds == 6.0
    assert main.step_seconds == other.step_seconds == 0.7
    assert main.eval_seconds is None and other.eval_seconds is None  # measured by neither: still a guess
    assert main.reserve_seconds() == other.reserve_seconds()
    elapsed = 60 - main.reserve_seconds()
    assert main.should_stop(3, elapsed) == other.should_stop(3, elapsed) == "reached --time-budget 60s"
    assert main.should_stop(3, elapsed - 1) is None and other.should_stop(3, elapsed - 1) is None


def test_within_a_budget_the_part_is_timed_on_its_first_windows():
    part = validation_set(np.arange(100_000), 100_000, OneCharPerId(), 12_800, seq_len=10, streams=128)
    seen = []
    budget = Budget(TrainConfig(time_budget=60), 7, len(part.ids), 100_000)
    budget.time_validation(lambda sample: seen.append(sample.ids), part, seq_len=10)
    assert len(seen) == 1 and len(seen[0]) == 1_280  # one window of each of the 128 pieces
    assert seen[0][10] == part.ids[100]  # the second piece's first window
    assert budget.eval_seconds is not None
    untimed = Budget(TrainConfig(), 7, len(part.ids), 100_000)
    untimed.time_validation(lambda sample: seen.append(sample), part, seq_len=10)
    assert len(seen) == 1 and untimed.eval_seconds is None


def test_a_timed_runs_validations_are_spaced_to_a_share_of_its_time_once_measured():
    budget = Budget(TrainConfig(time_budget=600), 7, 1000, 1000)  # --eval-every not given
    assert budget.validation_due(200) and not budget.validation_due(300)
    budget.add_step(0.02, 2048)
    budget.eval_seconds, budget.save_seconds = 1.0, 0.2  # 1.2 s a validation: 5% of 24 s, 1,200 steps
    said = budget.space_validations()
    assert budget.eval_every == 1200 and budget.validation_due(2400) and not budget.validation_due(200)
    assert said is not None and "every 1,200 steps" in said and "(1.2s)" in said and "5%" in said
    budget.eval_seconds = 100.0
    assert budget.space_validations() is None  # once: the spacing stays (the checks of a resumed run find their steps)
    assert budget.eval_every == 1200
    cheap = Budget(TrainConfig(time_budget=600), 7, 1000, 1000)
    cheap.add_step(1.0, 2048)
    cheap.eval_seconds = 0.1
    assert cheap.space_validations() is None and cheap.eval_every == 200  # never closer than --eval-every's default
    for budget in (
        Budget(TrainConfig(), 7, 1000, 1000),  # no --time-budget
        Budget(TrainConfig(time_budget=600, eval_every=200), 7, 1000, 1000),  # --eval-every given
    ):
        budget.add_step(0.02, 2048)
        budget.eval_seconds = 1.0
        budget.space_validations()
        assert budget.eval_every == 200


class FakeClock:
    """Stands for the `time` module in loop.py and budget.py: steps, validations and saves take simulated seconds."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


def _slowed(monkeypatch, clock: FakeClock, step: float, per_val_token: float, save: float) -> None:
    monkeypatch.setattr(trainer_module, "time", clock)
    monkeypatch.setattr(budget_module, "time", clock)
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


@pytest.mark.parametrize("given", [None, 200])
def test_a_timed_run_not_given_eval_every_validates_a_share_of_its_time(tmp_path, monkeypatch, given):
    clock = FakeClock()
    _slowed(monkeypatch, clock, step=0.1, per_val_token=0.005, save=0.1)  # a validation and its saves: 2.2 s
    data, model_cfg, cfg = _tiny(tmp_path, time_budget=200, eval_every=given, val_tokens=400)
    Trainer(data, model_cfg, cfg, tmp_path / "run", started=clock.now).run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [row["step"] for row in rows if row["val_scope"] == "part"]
    if given is None:  # 2.2 s is 5% of 44 s, 440 steps: the first at the default's 200, then every 600
        assert steps[:3] == [200, 600, 1200] and len(steps) <= 5  # (the last when the budget ends)
    else:
        assert steps[:4] == [200, 400, 600, 800] and len(steps) >= 8
