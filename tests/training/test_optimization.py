"""The learning-rate schedule and the limits that end a run."""

from __future__ import annotations

import pytest

from charrnn.config import TrainConfig
from charrnn.training.optimization import RunLimits, lr_at


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, min_lr_frac=0.1)
    assert lr_at(cfg, 0, 0.0) < lr_at(cfg, 9, 0.1) <= 1.0
    assert lr_at(cfg, 50, 0.0) == pytest.approx(1.0)
    assert lr_at(cfg, 50, 0.5) == pytest.approx(0.55)
    assert lr_at(cfg, 50, 1.0) == pytest.approx(0.1)


def test_the_nearest_limit_ends_the_run_and_sets_the_progress():
    limits = RunLimits(TrainConfig(steps=100, epochs=2, time_budget=60), windows_per_epoch=30)
    assert limits.total_steps == 60  # two epochs come before 100 steps
    assert limits.progress(30, 45.0) == pytest.approx(0.75)  # the clock is further along than the steps
    assert limits.reached(59, 10.0) == ""
    assert limits.reached(60, 10.0) == "reached --epochs 2"
    assert limits.reached(10, 60.0) == "reached --time-budget 60s"


def test_without_a_limit_the_default_epochs_end_the_run_and_patience_alone_has_no_progress():
    assert RunLimits(TrainConfig(), windows_per_epoch=7).reached(70, 0.0) == "reached the default limit of 10 epochs"
    only_time = RunLimits(TrainConfig(time_budget=10), windows_per_epoch=7)
    assert only_time.total_steps is None and only_time.progress(1000, 5.0) == pytest.approx(0.5)
