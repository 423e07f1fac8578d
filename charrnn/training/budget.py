"""The run's budget: its clock, the limits that end it, and the time kept for the run's end.

One `Budget` answers the loop's two questions: `should_stop` (a limit reached: --steps,
--epochs, --time-budget, or the default number of epochs) and `time_for_validation` (scoring
that many tokens now stays inside the run's limits).

A --time-budget bounds the whole run, from the start of the command to its exit: the loop
stops early enough to leave time for one more step, the final validation and the checkpoints,
each estimated from its last measured duration (guessed before the first measurement). The
ranks of a data-parallel run decide on the slowest rank's clock and durations (`agree`), so
that every rank stops at the same step.
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Callable

from ..config import DEFAULT_MAX_EPOCHS, TrainConfig

if TYPE_CHECKING:
    from .distributed import DistContext
    from .validation import ValidationSet

EVAL_COST_GUESS = 0.5  # validation seconds per token / training seconds per token, before any is measured
SAVE_SECONDS_GUESS = 1.0  # writing both checkpoints, before it is measured
WHOLE_SHARE = 0.1  # the whole split is scored at the end when it costs at most this share of the run
WHOLE_MIN_SECONDS = 30.0  # ... or, in a run with no --time-budget, at most this long
MARGIN = 1.5  # estimates are multiplied by this: durations vary, and a budget is a promise
# A timed run not given --eval-every validates (and saves) at most this share of its time: at the default
# spacing, validation and checkpoints took 6-15% of a short run, most on corpora with a large split.
VALIDATION_SHARE = 0.05


class Budget:
    """The clock and the limits of one run, and the durations its end is estimated from.
    `part_tokens`: the tokens of one validation (of the part, see validation.py);
    `whole_tokens`: of the whole validation split; `started`: the perf_counter() value at which
    the run's clock starts (the command's start, so a --time-budget bounds it all; default now)."""

    def __init__(
        self,
        cfg: TrainConfig,
        windows_per_epoch: int,
        part_tokens: int,
        whole_tokens: int,
        started: float | None = None,
    ):
        self.cfg = cfg
        self.eval_every = cfg.validation_interval  # steps between validations, spaced once measured
        self.spaced = cfg.eval_every is None and cfg.time_budget is not None  # (`space_validations`)
        self.total_steps = _total_steps(cfg, windows_per_epoch)
        self.part_tokens, self.whole_tokens = part_tokens, whole_tokens
        self.started = time.perf_counter() if started is None else started
        self._session_start = self.started
        self.step_seconds = 0.0  # smoothed, leaning to the slowest
        self.step_tokens = 0
        self.eval_seconds: float | None = None  # of one validation of the part
        self.save_seconds: float | None = None  # of writing both checkpoints

    # -- the clock

    def resume(self, elapsed: float) -> None:
        """The clock goes on from `elapsed` seconds (a resumed run's), counting from the start."""
        self._session_start = self.started - elapsed

    def clock(self) -> float:
        """Seconds of the run so far, as this rank counts them."""
        return time.perf_counter() - self._session_start

    def agree(self, dist: DistContext, signum: int = 0) -> tuple[int, float]:
        """One collective: the signal any rank received (0: none), and the slowest rank's clock and
        durations, which every rank then decides on. Returns (signal, seconds of the run)."""
        signum, (elapsed, step, val, save) = dist.end_of_step(
            signum, self.clock(), self.step_seconds, _sent(self.eval_seconds), _sent(self.save_seconds)
        )
        self.step_seconds, self.eval_seconds, self.save_seconds = step, _received(val), _received(save)
        return signum, elapsed

    # -- stop now?

    def should_stop(self, step: int, elapsed: float, *, keep_for_end: bool = True) -> str | None:
        """Why the run ends at `step` after `elapsed` seconds (None while it goes on). `keep_for_end`:
        a --time-budget must also hold what the end of the run takes (`reserve_seconds`)."""
        cfg = self.cfg
        reserve = self.reserve_seconds() if keep_for_end else 0.0
        if cfg.steps is not None and step >= cfg.steps:
            return f"reached --steps {cfg.steps}"
        if cfg.epochs is not None and self.total_steps is not None and step >= self.total_steps:
            return f"reached --epochs {cfg.epochs:g}"
        if cfg.time_budget is not None and elapsed + reserve >= cfg.time_budget:
            return f"reached --time-budget {cfg.time_budget:g}s"
        if not cfg.has_limit and self.total_steps is not None and step >= self.total_steps:
            return f"reached the default limit of {DEFAULT_MAX_EPOCHS:g} epochs"
        return None

    def progress(self, step: int, elapsed: float) -> float | None:
        """0..1 of the nearest limit (what the cosine schedule and the progress bar follow); None
        when only --patience ends the run."""
        parts = []
        if self.total_steps is not None:
            parts.append(step / self.total_steps)
        if self.cfg.time_budget is not None:
            parts.append(elapsed / self.cfg.time_budget)
        return max(parts) if parts else None

    def reserve_seconds(self) -> float:
        """What the loop must leave of the budget when it stops: one more step, the last validation,
        the checkpoints, and the whole split when it is cheap enough to plan for."""
        end = self.step_seconds + self.part_seconds() + (self.save_seconds or SAVE_SECONDS_GUESS)
        if self.plans_whole():
            end += self.whole_seconds()
        return MARGIN * end

    # -- time for a validation?

    def validation_due(self, step: int) -> bool:
        """Whether the loop validates and saves after `step`."""
        return step % self.eval_every == 0

    def space_validations(self) -> str | None:
        """Once, after a timed run's first validation (when not given --eval-every): the multiple of
        the default interval at which a validation and its checkpoints take at most VALIDATION_SHARE
        of the time between two, from their measured durations and the steps'. Returns what
        changed, to tell the user (None: nothing)."""
        if not self.spaced or self.eval_seconds is None or self.step_seconds <= 0:
            return None
        self.spaced = False
        cost = self.eval_seconds + (self.save_seconds or 0.0)
        steps = cost / (VALIDATION_SHARE * self.step_seconds)  # between two validations
        base = self.cfg.validation_interval
        self.eval_every = base * max(1, math.ceil(steps / base))
        if self.eval_every == base:
            return None
        return (
            f"validating every {self.eval_every:,} steps from here, so that a validation and its checkpoints "
            f"({cost:.1f}s) take at most {VALIDATION_SHARE:.0%} of the run's time (--eval-every to choose)"
        )

    def time_for_validation(self, elapsed: float, tokens: int) -> bool:
        """Whether scoring `tokens` validation tokens now, at `elapsed` seconds, stays inside the
        run's limits: its --time-budget, or without one a share of the run so far."""
        cost = MARGIN * self.part_seconds() * tokens / max(self.part_tokens, 1)
        if self.cfg.time_budget is not None:
            return elapsed + cost <= self.cfg.time_budget
        return cost <= max(WHOLE_MIN_SECONDS, WHOLE_SHARE * elapsed)

    def validation_within(self, part: ValidationSet, elapsed: float) -> ValidationSet:
        """`part`, or within a --time-budget as much of it as the time left allows before the
        checkpoints (a slow machine, a short budget): a run out of time still ends with a validation."""
        if self.cfg.time_budget is None:
            return part
        left = self.cfg.time_budget - MARGIN * (self.save_seconds or SAVE_SECONDS_GUESS) - elapsed
        return part.within(left, self.part_seconds())

    def part_seconds(self) -> float:
        """One validation of the part: measured, else guessed from the training speed (0: no guess yet)."""
        if self.eval_seconds is not None:
            return self.eval_seconds
        if self.step_tokens <= 0:
            return 0.0
        return EVAL_COST_GUESS * self.part_tokens * max(self.step_seconds, 1e-9) / self.step_tokens

    def whole_seconds(self) -> float:
        """Scoring the whole split, from the speed of the part."""
        return self.part_seconds() * self.whole_tokens / max(self.part_tokens, 1)

    def plans_whole(self) -> bool:
        """A budgeted run keeps time for the whole split when it costs at most WHOLE_SHARE of the budget."""
        if self.whole_tokens <= self.part_tokens or self.cfg.time_budget is None:
            return False
        return MARGIN * self.whole_seconds() <= WHOLE_SHARE * self.cfg.time_budget

    # -- what the run measures

    def add_step(self, seconds: float, tokens: int) -> None:
        """One training step of `tokens` tokens took `seconds`."""
        smoothed = 0.8 * self.step_seconds + 0.2 * seconds
        self.step_seconds = seconds if self.step_seconds == 0 else max(smoothed, seconds)
        self.step_tokens = tokens

    def validated(self, seconds: float, tokens: int) -> None:
        """A validation of `tokens` tokens (the part, or what fitted of it) took `seconds`."""
        self.eval_seconds = seconds * self.part_tokens / max(tokens, 1)

    def saved(self, seconds: float) -> None:
        """Writing the checkpoints took `seconds`."""
        self.save_seconds = seconds

    def time_validation(self, validate: Callable[[ValidationSet], object], part: ValidationSet, seq_len: int) -> None:
        """Within a --time-budget, time the first window of every piece of the part: the loop then
        knows what its last validation will cost instead of guessing (the part may be 15x that)."""
        sample = part.first_windows(seq_len)
        if self.cfg.time_budget is None or len(part.ids) < 4 * len(sample.ids):
            return
        began = time.perf_counter()
        validate(sample)
        self.validated(time.perf_counter() - began, len(sample.ids))


def _total_steps(cfg: TrainConfig, windows_per_epoch: int) -> int | None:
    """The step the run ends at (--steps, --epochs, or the default epochs when no limit is given);
    None when only time or --patience ends it."""
    candidates = []
    if cfg.steps is not None:
        candidates.append(cfg.steps)
    if cfg.epochs is not None:
        candidates.append(max(1, math.ceil(cfg.epochs * windows_per_epoch)))
    if not cfg.has_limit:
        candidates.append(max(1, math.ceil(DEFAULT_MAX_EPOCHS * windows_per_epoch)))
    return min(candidates) if candidates else None


def _sent(seconds: float | None) -> float:
    return -1.0 if seconds is None else seconds  # durations are >= 0: -1 says "not measured"


def _received(seconds: float) -> float | None:
    return None if seconds < 0 else seconds


def process_age() -> float:
    """Seconds since this process started (Linux: from /proc), so that a budget counts the
    interpreter's start and imports too; 0 where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        ticks = os.sysconf("SC_CLK_TCK")
        return max(0.0, uptime - int(fields[19]) / ticks)
    except (OSError, ValueError, IndexError):
        return 0.0


def command_start() -> float:
    """The perf_counter() value at which this process started."""
    return time.perf_counter() - process_age()
