"""What the training loop tells its listeners, and what it writes down beside its checkpoints.

The loop knows nothing about display: it calls the `Reporter` hooks with the reports below.
The CLI hangs a progress bar on them, `TensorBoardReporter` event files, tests lists. The run
directory keeps its own record: one line of metrics.jsonl per evaluation, and samples.txt.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import append_text
from ..errors import ConfigError

METRICS = "metrics.jsonl"  # one JSON line per evaluation, in the run directory
SAMPLES = "samples.txt"  # the text sampled at evaluations (--sample-every)


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
    val_scope: str = "whole"  # what val_* were measured on: "part" (--val-tokens of the split) or "whole"
    val_tokens: int = 0  # tokens scored


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
    whole_val_bpc: float | None = None  # the whole validation split at the end, when it was scored
    time_budget: float | None = None  # seconds, the run's --time-budget
    warning: str | None = None  # the run trained far below this machine's speed, or not at all


class Reporter:
    """Hooks the training loop calls; the CLI draws a progress bar from them. Defaults do nothing:
    a listener subclasses this and overrides the hooks it cares about."""

    def on_start(self, info: RunInfo) -> None: ...

    def on_step(self, report: StepReport) -> None: ...

    def on_eval(self, report: EvalReport) -> None: ...

    def on_sample(self, step: int, text: str) -> None: ...

    def on_message(self, text: str) -> None: ...

    def on_checkpoint(self, kind: str, path: Path, step: int) -> None:
        """`path` ("best" or "last") is complete on disk: called after the atomic rename."""

    def close(self) -> None:
        """The run is over (or failed): release what the listener holds."""


class TensorBoardReporter(Reporter):
    """Passes every callback on to `inner` and also writes TensorBoard scalars (and samples)."""

    def __init__(self, inner: Reporter, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "--tensorboard needs the tensorboard package: pip install 'charrnn[tensorboard]'"
            ) from None
        self.inner = inner
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def on_start(self, info: RunInfo) -> None:
        self.inner.on_start(info)

    def on_step(self, report: StepReport) -> None:
        self.writer.add_scalar("train/loss_nats_per_token", report.loss, report.step)
        self.writer.add_scalar("train/lr", report.lr, report.step)
        self.inner.on_step(report)

    def on_eval(self, report: EvalReport) -> None:
        step = report.step
        self.writer.add_scalar("val/bpc", report.val_bpc, step)
        self.writer.add_scalar("val/loss_nats_per_token", report.val_loss, step)
        if math.isfinite(report.train_bpc):
            self.writer.add_scalar("train/bpc", report.train_bpc, step)
        self.writer.add_scalar("speed/chars_per_sec", report.chars_per_sec, step)
        self.writer.flush()
        self.inner.on_eval(report)

    def on_sample(self, step: int, text: str) -> None:
        self.writer.add_text("sample", "    " + text.replace("\n", "\n    "), step)  # indented: shown verbatim
        self.inner.on_sample(step, text)

    def on_message(self, text: str) -> None:
        self.inner.on_message(text)

    def on_checkpoint(self, kind: str, path: Path, step: int) -> None:
        self.inner.on_checkpoint(kind, path, step)

    def close(self) -> None:
        self.writer.close()
        self.inner.close()


def append_metrics(run_dir: Path, report: EvalReport, tokenizer: str) -> None:
    """One line of metrics.jsonl (floats that are not finite become null)."""
    row = {
        "step": report.step,
        "epoch": round(report.epoch, 4),
        "elapsed": round(report.elapsed, 3),
        "train_loss": report.train_loss,
        "train_bpc": report.train_bpc,
        "val_loss": report.val_loss,
        "val_bpc": report.val_bpc,
        "val_nats_per_char": report.val_nats_per_char,
        "best_val_bpc": report.best_val_bpc,
        "lr": report.lr,
        "chars_per_sec": round(report.chars_per_sec, 1),
        "tokens_per_sec": round(report.tokens_per_sec, 1),
        "eval_seconds": round(report.eval_seconds, 3),
        "val_scope": report.val_scope,
        "val_tokens": report.val_tokens,
        "tokenizer": tokenizer,
    }
    row = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
    append_text(run_dir / METRICS, json.dumps(row, allow_nan=False) + "\n")  # strict JSON: never a bare NaN


def append_sample(run_dir: Path, step: int, val_bpc: float, text: str) -> None:
    append_text(run_dir / SAMPLES, f"--- step {step} (val {val_bpc:.3f} bpc)\n{text}\n")
