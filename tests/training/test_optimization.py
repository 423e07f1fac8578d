"""The learning-rate schedule."""

from __future__ import annotations

import pytest

from charrnn.config import TrainConfig
from charrnn.training.optimization import lr_at


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, min_lr_frac=0.1)
    assert lr_at(cfg, 0, 0.0) < lr_at(cfg, 9, 0.1) <= 1.0
    assert lr_at(cfg, 50, 0.0) == pytest.approx(1.0)
    assert lr_at(cfg, 50, 0.5) == pytest.approx(0.55)
    assert lr_at(cfg, 50, 1.0) == pytest.approx(0.1)
