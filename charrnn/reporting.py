"""What the training loop tells its listeners: the `Reporter` hooks and the reports they receive.

The loop knows nothing about display; the CLI hangs a progress bar on these hooks, the
TensorBoard writer hangs event files, tests hang lists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

METRICS = "metrics.jsonl"  # one JSON line per evaluation, in the run directory


@dataclass
class RunInfo:
    run_dir: Path
    device: str
    precision: str
    precision_reason: str
    parameters: int
    tokenizer: str
    vocab_size: int
    train_tokens: int
    val_tokens: int
    batch_size: int
    windows_per_epoch: int
    total_steps: int | None
    time_budget: float | None  # seconds
    start_step: int
    cached: bool
    world_size: int = 1
    notes: list[str] = field(default_factory=list)


@dataclass
class StepReport:
    step: int
    epoch: float
    loss: float  # nats per token, this step
    lr: float
    elapsed: float  # seconds of this run (all sessions of it)
    chars_per_sec: float
    tokens_per_sec: float
    progress: float | None  # 0..1 of the run's limit; None when only patience ends it


@dataclass
class EvalReport:
    step: int
    epoch: float
    train_loss: float  # mean nats per token since the last evaluation
    val_loss: float  # nats per token
    val_bpc: float  # bits per character: comparable across tokenizers
    val_nats_per_char: float
    best_val_bpc: float
    is_best: bool
    elapsed: float
    eval_seconds: float
    chars_per_sec: float
    lr: float
    tokens_per_sec: float = 0.0  # training speed in tokens: what a subword vocabulary trades against bpc
    train_bpc: float = math.nan  # train_loss in bits per character (NaN when no step ran since the last evaluation)


@dataclass
class TrainResult:
    run_dir: Path
    best_path: Path
    last_path: Path
    steps: int
    best_val_bpc: float
    best_val_loss: float
    last_val_bpc: float
    elapsed: float
    stopped_because: str


class Reporter:
    """Hooks the training loop calls; the CLI draws a progress bar from them. Defaults do nothing."""

    def on_start(self, info: RunInfo) -> None: ...

    def on_step(self, report: StepReport) -> None: ...

    def on_eval(self, report: EvalReport) -> None: ...

    def on_sample(self, step: int, text: str) -> None: ...

    def on_message(self, text: str) -> None: ...

    def on_checkpoint(self, kind: str, path: Path, step: int) -> None:
        """`path` ("best" or "last") is complete on disk: called after the atomic rename."""
