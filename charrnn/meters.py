"""What the training loop measures as it goes: the loss, read back from the device without
stalling it (and checked for NaN), and the speed in characters per second."""

from __future__ import annotations

import math
import time

import torch

from .config import TrainConfig
from .errors import TrainingDiverged

# On a GPU the step's loss is read back (a host sync) only every this many steps and before
# every evaluation; in between the GPU runs ahead of Python.
LOSS_SYNC_EVERY = 32


class SpeedMeter:
    """Characters per second since the last evaluation (the final evaluation reports it too)."""

    def __init__(self, chars_per_token: float):
        self.chars_per_token = chars_per_token
        self.chars_per_sec = 0.0
        self.restart()

    def restart(self) -> None:
        self.start, self.chars = time.perf_counter(), 0.0

    def add(self, tokens: int) -> float:
        self.chars += tokens * self.chars_per_token
        self.chars_per_sec = self.chars / max(time.perf_counter() - self.start, 1e-9)
        return self.chars_per_sec


class LossReadback:
    """The NaN guard and the displayed loss. On the CPU reading a loss costs nothing: every step
    is read and checked. On a GPU, without a host sync every step: losses queue on the device and
    are read back together every LOSS_SYNC_EVERY steps, at the step before an evaluation (so no
    checkpoint is written from weights a NaN step reached unchecked; checkpoints also refuse
    non-finite weights), and at a session's first step. In between, the last block's mean loss
    is returned, so the logged train loss is a close approximation on CUDA."""

    def __init__(self, cfg: TrainConfig, deferred: bool):
        self.cfg = cfg
        self.deferred = deferred  # on a GPU
        self.pending: list[torch.Tensor] = []
        self.shown = math.nan

    def read(self, loss: torch.Tensor, step: int) -> float:
        """The loss to report for `step` (counted from 1); TrainingDiverged when one is not finite."""
        if not self.deferred:
            value = loss.item()
            self._check([value], step)
            return value
        self.pending.append(loss.detach())
        due = len(self.pending) >= LOSS_SYNC_EVERY or step % self.cfg.eval_every == 0
        if due or math.isnan(self.shown):
            values = torch.stack(self.pending).tolist()
            self.pending.clear()
            self._check(values, step - len(values) + 1)
            self.shown = sum(values) / len(values)
        return self.shown

    def _check(self, losses: list[float], first_step: int) -> None:
        for offset, value in enumerate(losses):
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"loss became {value} at step {first_step + offset}: training stopped, nothing written for "
                    f"this step; try a lower --lr (now {self.cfg.lr:g}) or a --grad-clip (now {self.cfg.grad_clip:g})"
                )
