"""What the training loop measures as it goes: the loss, read back from the device without
stalling it (and checked for NaN), and the speed in characters per second."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from ..config import ModelConfig, TrainConfig
from ..errors import TrainingDiverged
from ..footprint import training_flops_per_token
from ..probes.cache import machine_key
from ..probes.threads import OVERHEAD_BOUND_STEP_FLOPS, ThreadTuner, thread_counts, threads_cache
from ..runtime import Placement
from .reporting import Reporter
from .sizing import cached_tokens_per_sec, forget_busy_probes, speed_key
from .split import StepLayout

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
        # Every validation falls on a multiple of the interval (a timed run's spacing keeps to multiples).
        due = len(self.pending) >= LOSS_SYNC_EVERY or step % self.cfg.validation_interval == 0
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


class SlowRunWatch:
    """Notices a run that trains far below this machine's speed for its model: most often another
    program spinning on the same cores (both sides' threads then wait on each other). It warns once,
    after SLOW_STRETCH_SECONDS of training slower than expected / SLOW_FACTOR, naming the cause and
    the cure. The expected speed is the speed cache's (sizing.cached_tokens_per_sec); a step under
    MIN_STEP_FLOPS is left alone, as its time is mostly overhead that the FLOP count leaves out."""

    SLOW_FACTOR = 5.0
    SLOW_STRETCH_SECONDS = 10.0
    MIN_STEP_FLOPS = 1e9
    WARM_UP_STEPS = 5  # left out of the run's speed: first calls, and the thread count being measured
    RUN_SPEED_SECONDS = 10.0  # of steps after the warm-up before the run's own speed says anything

    def __init__(self, expected_tokens_per_sec: float | None, step_flops: float, warn: Callable[[str], None]):
        self.step_flops = step_flops  # matmul FLOPs of one training step
        self.expected = expected_tokens_per_sec if step_flops >= self.MIN_STEP_FLOPS else None
        self.warn = warn  # hears "warning: ..." once
        self.steps = 0
        self.seconds = 0.0  # of training steps in the current stretch
        self.tokens = 0
        self.warning: str | None = None
        self.run_steps, self.run_seconds = 0, 0.0  # the steps after the warm-up

    def flops_per_sec(self) -> float | None:
        """The run's own training speed over its steps after the warm-up; None before they add up
        to RUN_SPEED_SECONDS (a few steps say little)."""
        if not self.run_steps or self.run_seconds < self.RUN_SPEED_SECONDS:
            return None
        return self.step_flops * self.run_steps / self.run_seconds

    @classmethod
    def for_run(
        cls, model: ModelConfig, device: torch.device, precision: str, tokens_per_step: int, reporter: Reporter
    ) -> "SlowRunWatch":
        sizes = (model.cell, model.embed_size, model.hidden_size, model.num_layers, model.vocab_size)
        step_flops = training_flops_per_token(*sizes) * tokens_per_step
        return cls(cached_tokens_per_sec(model, device, precision), step_flops, reporter.on_message)

    def observe(self, step_seconds: float, tokens: int) -> None:
        """One step's time and tokens; the first time the run is found slow, it warns."""
        self.steps += 1
        if self.steps > self.WARM_UP_STEPS:
            self.run_steps, self.run_seconds = self.run_steps + 1, self.run_seconds + step_seconds
        if self.expected is None or self.warning is not None:
            return
        self.seconds += step_seconds
        self.tokens += tokens
        if self.seconds < self.SLOW_STRETCH_SECONDS:
            return
        speed = self.tokens / self.seconds
        self.seconds, self.tokens = 0.0, 0
        if speed * self.SLOW_FACTOR >= self.expected:
            return
        self.warning = (
            f"training runs at {speed:,.0f} tokens/s, {self.expected / speed:.0f}x below this machine's "
            f"{self.expected:,.0f} tokens/s for this model (its speed probe): the machine is busy, most likely "
            "another program on the same cores; stop it, or give each program fewer threads (--threads 1)"
        )
        self.warn(f"warning: {self.warning}")

    def verdict(self, elapsed: float) -> str | None:
        """At the end of a session of `elapsed` seconds: its warning, or that no step ran at all."""
        if self.steps:
            return self.warning
        return (
            f"no training step ran in {elapsed:.0f}s: the budget went to setting up and validating, on a "
            "machine that is busy or slow; stop other programs on these cores, or give a longer --time-budget"
        )


class StepPace:
    """What a training step's time tells the run: whether it is far too slow for this machine (a
    warning, SlowRunWatch) and how many threads the next step gets (probes.threads.ThreadTuner:
    measured with the run's own steps, re-measured when they slow down). Validation runs on the
    count the training steps were last measured fastest on: the same matrix products, forward only."""

    def __init__(
        self,
        slow: SlowRunWatch,
        threads: ThreadTuner | None,
        say: Callable[[str], None],
        small_on_cpu: bool = False,
        cache_key: str | None = None,
        layout: StepLayout | None = None,
    ):
        self.slow, self.threads, self.say = slow, threads, say
        self.small_on_cpu = small_on_cpu  # a step too small for threads to pay, nobody chose: one thread
        self.cache_key = cache_key  # where the run's speed corrects the speed cache; None: it does not
        self.layout = layout  # its split workers' threads end with the run

    @classmethod
    def for_run(
        cls,
        model: ModelConfig,
        placement: Placement,
        tokens_per_step: int,
        reporter: Reporter,
        processes: int,
        layout: StepLayout | None = None,
    ) -> "StepPace":
        """`layout`: where the trainer's step runs, which the thread tuner sets (training.split);
        without one, the tuner sets torch's thread count only."""
        device, precision = placement.device, placement.precision
        slow = SlowRunWatch.for_run(model, device, precision, tokens_per_step, reporter)
        step_flops = slow.step_flops
        # Measured only where it can matter and nobody chose: a CPU, one process, --threads not
        # given, a step big enough that threads change its time (a tiny one stays deterministic).
        tuned = device.type == "cpu" and processes == 1 and placement.threads is None
        threads, small = None, tuned and step_flops < OVERHEAD_BOUND_STEP_FLOPS
        if tuned and not small and len(thread_counts()) > 1:
            key = f"{machine_key(device)}|train|{model.cell} {model.num_layers}x{model.hidden_size}"
            split = layout.workers if layout is not None else 0
            key += f" v{model.vocab_size} t{tokens_per_step}|{precision}" + (f"|split{split}" if split else "")
            threads = ThreadTuner(threads_cache(), key, split=split, set_threads=layout)
        # One process on a CPU: its speed is the machine's (a data-parallel run's is a share; a GPU's
        # steps are timed without waiting for it, so their times say how fast Python queues work).
        judge = device.type == "cpu" and processes == 1
        return cls(slow, threads, reporter.on_message, small, speed_key(device, precision) if judge else None, layout)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Around the run: its thread count from the start (validation comes first): the measured
        one, or one thread until it is measured, or one for a step too small for threads to pay;
        --threads and a GPU keep theirs. torch's count is restored afterwards, and the speed probes
        the run's own speed shows were taken on a busy machine are forgotten (correct_speed_cache)."""
        before = torch.get_num_threads()
        if self.threads is not None:
            self.threads.settle()
        elif self.small_on_cpu:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            # Only when changed: resetting torch's pool at the end of a data-parallel process
            # (which is never tuned) aborted it ("terminate called without an active exception").
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)
            if self.layout is not None:
                self.layout.close()
            self.correct_speed_cache()

    def correct_speed_cache(self) -> int:
        """After the run: the speed probes its own speed shows were taken on a busy machine are
        forgotten (sizing.forget_busy_probes), so that they size no more runs. How many went."""
        flops = self.slow.flops_per_sec()
        return forget_busy_probes(self.cache_key, flops) if self.cache_key is not None and flops is not None else 0

    def before_step(self) -> None:
        if self.threads is not None:
            self.threads.before_step()

    def observe(self, step_seconds: float, tokens: int) -> None:
        self.slow.observe(step_seconds, tokens)
        note = self.threads.after_step(step_seconds) if self.threads is not None else None
        if note:
            self.say(note)
