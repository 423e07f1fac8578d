"""Training threads: charrnn's own training step on each layout its thread probe weighs (one
thread, torch's threads on every core, the step split by rows over one worker per core), side by
side in alternating rounds. A run's probe picks one of them for its own step and machine, and
says which (`probes.threads.ThreadTuner`); this row shows what each would have given.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from ..probes.threads import Choice, Split, choice_label, thread_counts
from ..runtime import timed
from .results import BenchPlan, TrainingThreads
from .training import _bench_trainer, _stream_tokens


def bench_training_threads(plan: BenchPlan, precision: str, device: torch.device) -> TrainingThreads:
    """Steps/s of the Trainer's step (forward, backward, clip, AdamW) of the neighbour row's model
    (no dropout, as a --time-budget run trains: only then may the step be split) at the bench's
    batch and window, on each layout, the median of `plan.train_rounds` alternating rounds."""
    shape = replace(plan, hidden=plan.neighbour_hidden)
    data = _stream_tokens(plan.batch_size, plan.seq_len, 64)
    before = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = _bench_trainer(shape, precision, device, Path(run_dir), data)
        layout = trainer.layout
        choices: list[Choice] = [*thread_counts(), *([Split(layout.workers)] if layout.workers else [])]
        times: dict[Choice, list[float]] = {choice: [] for choice in choices}

        def steps() -> None:
            for _ in range(plan.train_steps_per_round):
                trainer.step()

        try:
            for choice in choices:  # warm-up: the allocator, the split's worker threads
                layout(choice)
                trainer.step()
            for _ in range(plan.train_rounds):
                for choice in choices:
                    layout(choice)
                    trainer.step()  # untimed: the previous layout's idle threads may still spin
                    times[choice].append(timed(steps, device) / plan.train_steps_per_round)
        finally:
            layout.close()
            torch.set_num_threads(before)
    return TrainingThreads(
        precision=trainer.precision,
        hidden=shape.hidden,
        layers=shape.layers,
        batch_size=plan.batch_size,
        seq_len=plan.seq_len,
        steps_per_sec={choice_label(c): 1 / statistics.median(t) for c, t in times.items()},
    )
