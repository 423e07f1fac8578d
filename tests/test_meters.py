"""The loss read-back: every step on the CPU, in blocks on a GPU, never past a bad step."""

from __future__ import annotations

import pytest
import torch

from charrnn.config import TrainConfig
from charrnn.errors import TrainingDiverged
from charrnn.meters import LOSS_SYNC_EVERY, LossReadback


def test_deferred_loss_check_reads_back_in_blocks_and_names_the_bad_step():
    losses = LossReadback(TrainConfig(eval_every=1000), deferred=True)
    step = 1
    assert losses.read(torch.tensor(2.0), step) == 2.0  # a session's first step reads back at once
    for i in range(LOSS_SYNC_EVERY - 1):  # queued: the last block's mean is shown meanwhile
        step += 1
        assert losses.read(torch.tensor(1.0 + i), step) == 2.0
    step += 1
    shown = losses.read(torch.tensor(100.0), step)
    assert shown == pytest.approx((sum(1.0 + i for i in range(LOSS_SYNC_EVERY - 1)) + 100.0) / LOSS_SYNC_EVERY)
    losses.read(torch.tensor(1.0), step + 1)
    bad_step = step + 2
    losses.read(torch.tensor(float("nan")), bad_step)
    with pytest.raises(TrainingDiverged, match=f"at step {bad_step}:"):
        for i in range(LOSS_SYNC_EVERY):
            losses.read(torch.tensor(1.0), bad_step + 1 + i)


def test_deferred_loss_check_reads_back_before_an_evaluation():
    losses = LossReadback(TrainConfig(eval_every=5), deferred=True)
    losses.read(torch.tensor(1.0), 1)
    losses.read(torch.tensor(float("inf")), 4)  # queued
    with pytest.raises(TrainingDiverged, match="at step 4:"):
        losses.read(torch.tensor(1.0), 5)  # step 5 evaluates: read back first


def test_cpu_loss_is_checked_at_every_step():
    with pytest.raises(TrainingDiverged, match="at step 3:"):
        LossReadback(TrainConfig(), deferred=False).read(torch.tensor(float("nan")), 3)
