"""The optimiser, its learning-rate schedule, and the limits that end a run."""

from __future__ import annotations

import math

import torch

from ..config import DEFAULT_MAX_EPOCHS, TrainConfig


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # Weight decay on matrices only: decaying biases and gains only hurts.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=0.95)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)


def lr_at(cfg: TrainConfig, step: int, progress: float | None) -> float:
    """Linear warm-up, then cosine decay from lr to lr * min_lr_frac over the run's progress."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    if progress is None:
        return cfg.lr
    p = min(max(progress, 0.0), 1.0)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


class RunLimits:
    """When a run ends (--steps, --epochs, --time-budget, or the default number of epochs)
    and how far along it is (what the cosine schedule and the progress bar follow)."""

    def __init__(self, cfg: TrainConfig, windows_per_epoch: int):
        self.cfg = cfg
        candidates = []
        if cfg.steps is not None:
            candidates.append(cfg.steps)
        if cfg.epochs is not None:
            candidates.append(max(1, math.ceil(cfg.epochs * windows_per_epoch)))
        if not cfg.has_limit:
            candidates.append(max(1, math.ceil(DEFAULT_MAX_EPOCHS * windows_per_epoch)))
        self.total_steps: int | None = min(candidates) if candidates else None

    def progress(self, step: int, elapsed: float) -> float | None:
        """0..1 of the nearest limit; None when only --patience ends the run."""
        parts = []
        if self.total_steps is not None:
            parts.append(step / self.total_steps)
        if self.cfg.time_budget is not None:
            parts.append(elapsed / self.cfg.time_budget)
        return max(parts) if parts else None

    def reached(self, step: int, elapsed: float, reserve: float = 0.0) -> str:
        """Why the run ends here ("" while it goes on). `reserve`: seconds the end of the run will
        take (last validation, checkpoints), which a --time-budget must hold too."""
        cfg = self.cfg
        if cfg.steps is not None and step >= cfg.steps:
            return f"reached --steps {cfg.steps}"
        if cfg.epochs is not None and self.total_steps is not None and step >= self.total_steps:
            return f"reached --epochs {cfg.epochs:g}"
        if cfg.time_budget is not None and elapsed + reserve >= cfg.time_budget:
            return f"reached --time-budget {cfg.time_budget:g}s"
        if not cfg.has_limit and self.total_steps is not None and step >= self.total_steps:
            return f"reached the default limit of {DEFAULT_MAX_EPOCHS:g} epochs"
        return ""
