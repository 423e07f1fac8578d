"""How many threads a piece of work runs fastest on here: timed on this machine, never assumed.

One thread or all of them is not a property of the work alone. A sampling step of a 2x512 LSTM
(three matrix-vector products) runs fastest on one thread on some CPUs and on two on others;
beside a busy neighbour, two threads spin against the neighbour's for the same cores and a
training step can take five times as long as on one. So:

- `time_thread_counts` runs the same work at each count in alternating rounds (a burst of the
  neighbour's work then hurts every count alike) and `fastest` picks from the medians;
- `tune_stepper` does that for the sampler, for each number of streams it is asked to run, on
  each of the two places its step can run (torch, or numpy and its BLAS: see `FastStepper`);
- `ThreadTuner` does it for training with the run's own steps (no work is thrown away): a short
  probe at the start (or the cached answer), each choice for a few steps in a row (the first
  after a switch untimed), and again whenever the steps grow slower by half for several steps
  in a row, or when the machine may have gone quiet again.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch

from ..stepper import blas_threads_settable, set_blas_threads
from .cache import SETTLED_PROBES, ProbeCache, machine_key, usable_cores

if TYPE_CHECKING:
    from ..model import HiddenState
    from ..stepper import FastStepper

# A step whose matmuls do less than this is mostly Python and dispatch overhead: threads, and
# bf16, cannot change its speed, and timing it would only add noise (and nondeterminism).
OVERHEAD_BOUND_STEP_FLOPS = 1e9


@dataclass(frozen=True)
class ThreadTiming:
    threads: int
    seconds: float  # median seconds of one unit of work on that many threads
    backend: str = "torch"  # whose threads: torch's, or numpy's BLAS (the sampler's step can run on either)


@dataclass(frozen=True)
class Split:
    """A training step's rows split over `workers` threads, each running torch on one thread
    (`training.split`): a choice the training tuner weighs against torch's own thread counts."""

    workers: int


Choice = int | Split  # a training step's layout: torch on that many threads, or split by rows


def thread_counts() -> tuple[int, ...]:
    """The counts worth comparing: one thread, and one per usable core, but never more than the
    process has now (torchrun gives each process one; --threads and OMP_NUM_THREADS set it too):
    a process's thread pool is not resized behind its back."""
    most = min(usable_cores(), torch.get_num_threads())
    return (1, most) if most > 1 else (1,)


def fastest(timings: Sequence[ThreadTiming]) -> ThreadTiming:
    """The count with the smallest median time; on a tie, fewer threads (they leave cores free)."""
    return min(timings, key=lambda t: (t.seconds, t.threads))


def speedup_note(timings: Sequence[ThreadTiming]) -> str:
    """ "2 threads, 1.6x faster than 1 (median step 41 ms against 66 ms)", or the one count timed."""
    best = fastest(timings)
    others = [t for t in timings if t is not best]
    if not others:
        return f"{_threads(best.threads, best.backend)} (the only count here)"
    other = min(others, key=lambda t: t.seconds)
    than = _threads(other.threads, other.backend) if other.backend != best.backend else str(other.threads)
    return (
        f"{_threads(best.threads, best.backend)}, {other.seconds / best.seconds:.2f}x faster than {than} "
        f"(median {_ms(best.seconds)} against {_ms(other.seconds)})"
    )


def choice_label(choice: Choice) -> str:
    """ "1 thread", "2 threads", "2 workers of one thread": a training step's layout, as notes name it."""
    return _threads(choice.workers, "split") if isinstance(choice, Split) else _threads(choice)


def _threads(n: int, backend: str = "torch") -> str:
    if backend == "split":
        return f"{n} workers of one thread"
    return f"{n} thread{'s' if n != 1 else ''}"


def _ms(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3g} s"
    return f"{seconds * 1e3:.3g} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.3g} us"


def time_thread_counts(
    work: Callable[[], object],
    counts: Sequence[int],
    *,
    rounds: int = 3,
    repeats: int = 1,
    set_threads: Callable[[int], None] = torch.set_num_threads,
) -> list[ThreadTiming]:
    """`work` run `repeats` times per round at each count, rounds alternating between counts;
    the median round per count, per call of `work`. torch's thread count is restored afterwards."""
    before = torch.get_num_threads()
    samples: dict[int, list[float]] = {n: [] for n in counts}
    try:
        for _ in range(rounds):
            for n in counts:
                set_threads(n)
                began = time.perf_counter()
                for _ in range(repeats):
                    work()
                samples[n].append((time.perf_counter() - began) / repeats)
    finally:
        set_threads(before)
    return [ThreadTiming(n, statistics.median(s)) for n, s in samples.items()]


@contextmanager
def on_fastest_threads(work: Callable[[], object], counts: Sequence[int] | None = None) -> Iterator[list[ThreadTiming]]:
    """Within the block, torch runs on the count `work` runs fastest on (timed first, three
    alternating rounds); torch's count is restored after. Other probes time their work this way:
    on a busy machine, all threads can be 100x slower than one, and would measure nothing else."""
    counts = tuple(counts or thread_counts())
    before = torch.get_num_threads()
    timings = time_thread_counts(work, counts) if len(counts) > 1 else []
    torch.set_num_threads(fastest(timings).threads if timings else before)
    try:
        yield timings
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- sampling

# A sampling probe takes about this long in all: 3 rounds at each count of ~10 ms of steps. It
# is not cached: whether a neighbour is busy is a property of this moment, and the probe costs
# less than loading torch.
STEPPER_ROUND_SECONDS = 0.01
# A step shorter than this is dispatch overhead: a second thread can only add its wake-up.
STEP_WORTH_THREADS_SECONDS = 1e-4
# The backend's deciding probe was taken on a busy machine when a later run steps this many
# times faster on it: it no longer binds (the next run probes both backends again).
BUSY_DECISION_FACTOR = 2.0


@torch.inference_mode()
def tune_stepper(
    stepper: FastStepper, streams: int, counts: Sequence[int] | None = None, cache: ProbeCache | None = None
) -> list[ThreadTiming]:
    """Time `stepper.step` for `streams` streams on each backend (torch, numpy) at each thread
    count and have it use the fastest from now on (`stepper.backend`, `stepper.threads`). Tens of
    milliseconds. A step too short to share (`STEP_WORTH_THREADS_SECONDS`) compares the backends
    on the fewest threads only.

    With a `cache`, the backend is decided once per machine and model shape, by the first probe
    (kept for a month), and only the thread count is measured afterwards: the two backends round
    differently, and a seed must give the same text every run (`backend_cache`). A run that steps
    BUSY_DECISION_FACTOR times faster than that probe shows it was taken busy: it is forgotten."""
    counts = tuple(counts or thread_counts())
    if stepper.weights_device().type != "cpu":
        stepper.backend, stepper.threads = "torch", torch.get_num_threads()
        return []
    tokens = torch.zeros(streams, dtype=torch.long)
    steps = {"torch": _stepping(stepper.compute, stepper, tokens)}
    if blas_threads_settable():  # a BLAS whose pool cannot be sized (Apple's) is left out: its count is unknown
        steps["numpy"] = _stepping(stepper.compute_numpy, stepper, tokens)
    key = _backend_key(stepper, streams)
    decided = cache.recent(key)[:1] if cache is not None else []
    if decided and set(decided[0]) - {"at"} <= set(steps):
        chosen = min((b for b in decided[0] if b != "at"), key=lambda b: decided[0][b])
        steps = {chosen: steps[chosen]}
    once = _time_backends(steps, (1,), rounds=3, repeats=3)  # the median round: warmed up
    quickest = fastest(once)
    if quickest.seconds < STEP_WORTH_THREADS_SECONDS:
        counts = (min(counts),)
    repeats = max(1, min(200, int(STEPPER_ROUND_SECONDS / quickest.seconds)))
    timings = _time_backends(steps, counts, repeats=repeats)
    best = fastest(timings)
    stepper.backend, stepper.threads = best.backend, best.threads
    if cache is not None and not decided:
        cache.add(key, {b: min(t.seconds for t in timings if t.backend == b) for b in steps})
    elif cache is not None and best.seconds * BUSY_DECISION_FACTOR < decided[0][best.backend]:
        cache.discard(key, lambda probe: True)  # the deciding probe was taken busy: the next run decides again
    return timings


def backend_cache() -> ProbeCache:
    """sampler.json next to the token cache: per machine and model shape, the first probe's
    fastest step time on each backend ("torch", "numpy"), which decides the backend for a month."""
    return ProbeCache("sampler", ("torch",))


def _backend_key(stepper: FastStepper, streams: int) -> str:
    shape = f"{stepper.cell} {stepper.num_layers}x{stepper.hidden_size}"
    return f"{machine_key(torch.device('cpu'))}|{shape}|streams={streams}|numpy={np.__version__}"


def _stepping(
    compute: Callable[..., tuple[object, HiddenState]], stepper: FastStepper, tokens: torch.Tensor
) -> Callable[[], None]:
    """One step after another from a zero state, as sampling runs them."""
    state: list[HiddenState] = [stepper.init_state(tokens.shape[0])]

    def step() -> None:
        state[0] = compute(tokens, state[0])[1]

    return step


def thread_setter(backend: str) -> Callable[[int], None]:
    """What sizes the thread pool a `FastStepper.backend` runs on: torch's, or numpy's BLAS's."""
    return set_blas_threads if backend == "numpy" else torch.set_num_threads


def _time_backends(
    steps: dict[str, Callable[[], None]], counts: Sequence[int], *, rounds: int = 3, repeats: int = 1
) -> list[ThreadTiming]:
    """Each backend's step at each thread count: one backend after the other, its counts in
    alternating rounds (a burst of a neighbour's work then hurts each count alike), after a
    round's worth of untimed steps (the other backend's pool may still be spinning: OpenMP's and
    OpenBLAS's idle threads both wait busily for a while). The median round per choice."""
    before = torch.get_num_threads()
    timings = []
    try:
        for backend, step in steps.items():
            set_threads = thread_setter(backend)
            set_threads(max(counts))
            for _ in range(repeats):
                step()
            by_count = time_thread_counts(step, counts, rounds=rounds, repeats=repeats, set_threads=set_threads)
            timings += [replace(t, backend=backend) for t in by_count]
    finally:
        torch.set_num_threads(before)
    return timings


# ----------------------------------------------------------------------------- training


HOPELESS = 3.0  # a count this many times slower than another is ruled out after one step


@dataclass(frozen=True)
class TunerSettings:
    probe_steps: int = 3  # timed steps at each count per probe, in a row after one untimed
    slow_factor: float = 1.5  # a step this much slower than the chosen count's probe is slow...
    slow_steps: int = 5  # ...and this many slow steps in a row re-probe
    revisit_seconds: float = 30.0  # away from the quiet machine's choice, probe again this often


class ThreadTuner:
    """Chooses the training step's layout from the run's own steps: torch on one thread or on
    all of them, or (given `split`) the batch's rows split over that many workers of one thread.

    The loop calls `before_step()` (which sets the layout for the next step) and
    `after_step(seconds)`; a decision comes back as one line for the user. It starts from the
    cached choice of earlier runs on this machine when there is one (the fastest time seen per
    choice: a probe taken on a busy machine never binds), else probes with the first steps."""

    def __init__(
        self,
        cache: ProbeCache | None,
        key: str,
        counts: Sequence[int] | None = None,
        settings: TunerSettings = TunerSettings(),
        set_threads: Callable[[Choice], None] | None = None,  # default: torch's count (no split then)
        clock: Callable[[], float] = time.monotonic,
        split: int = 0,
    ):
        self.cache, self.key, self.settings = cache, key, settings
        self.choices: tuple[Choice, ...] = (*(counts or thread_counts()), *([Split(split)] if split > 1 else []))
        self.set_threads, self.clock = set_threads or _torch_threads, clock
        if split > 1 and set_threads is None:
            raise ValueError("a tuner that may split the step needs the set_threads that splits it")
        quiet = self._cached_timing()  # the quiet machine's choice and its pace, when known
        self.preferred: Choice | None = _choice(quiet) if quiet else None
        # Until measured, one thread: never far from the best, while all of them beside a busy
        # program can be 100x slower (every op waits for a thread that is not running).
        self.current: Choice = self.preferred or 1
        self.schedule: list[tuple[Choice, bool]] = [] if self.preferred else self._probe_schedule()  # (choice, timed)
        self.samples: dict[Choice, list[float]] = {}
        # Started from the cache, the pace to hold is the quiet machine's: a run that starts beside
        # a busy program is then slow from its first step, and measures again.
        self.baseline: float | None = quiet.seconds if quiet else None
        self.slow = 0
        self.last_probe = clock()
        self.warmed = False
        self.probes = 1 if quiet else 0  # from the cache, a later probe is a measuring again

    def settle(self) -> None:
        """Set the chosen layout (or one thread, until measured) for what runs between steps: validation."""
        self.set_threads(self.current)

    def before_step(self) -> None:
        self.set_threads(self.schedule[0][0] if self.schedule and self.warmed else self.current)

    def after_step(self, seconds: float) -> str | None:
        if not self.warmed:  # the first step pays for allocation and kernel selection
            self.warmed = True
            return None
        if self.schedule:
            choice, timed = self.schedule.pop(0)
            if timed:
                self.samples.setdefault(choice, []).append(seconds)
            self._drop_hopeless(choice, seconds)
            return None if self.schedule else self._decide()
        assert self.baseline is not None  # set by the cache or by the first probe
        self.slow = self.slow + 1 if seconds > self.settings.slow_factor * self.baseline else 0
        away = self.current != self.preferred and self.clock() - self.last_probe > self.settings.revisit_seconds
        if self.slow >= self.settings.slow_steps or away:
            self.schedule = self._probe_schedule()
            self.samples.clear()
        return None

    def _drop_hopeless(self, choice: Choice, seconds: float) -> None:
        """A choice already HOPELESS times slower than another needs no more steps to be ruled out
        (beside a busy program, all threads can take seconds a step where one takes milliseconds);
        its untimed first step (`seconds`) may show it already."""
        if not self.samples:
            return
        best = min(min(s) for s in self.samples.values())
        hopeless = {n for n, s in self.samples.items() if min(s) > HOPELESS * best}
        hopeless |= {choice} if seconds > HOPELESS * best else set()
        self.schedule = [(n, timed) for n, timed in self.schedule if n not in hopeless]

    def _probe_schedule(self) -> list[tuple[Choice, bool]]:
        """Each choice in turn: one step untimed, then `probe_steps` timed. Alternating at every
        step timed each one just after another: torch's threads, still spinning after a step on
        two, took the cores from the split's workers (its steps 46-47 ms alternating, 39-41 ms in
        a row, a 2x256 LSTM on two cores), and a probe then chose two threads where the split
        stepped 1.25x faster."""
        return [(n, i > 0) for n in self.choices for i in range(1 + self.settings.probe_steps)]

    def _decide(self) -> str:
        timings = [_timing(n, statistics.median(s)) for n, s in self.samples.items()]
        best = fastest(timings)
        first = self.probes == 0
        self.probes += 1
        changed = _choice(best) != self.current
        self.current, self.baseline, self.slow, self.last_probe = _choice(best), best.seconds, 0, self.clock()
        self.set_threads(self.current)  # what runs before the next step (a validation) runs on it too
        if first and self.cache is not None:
            self.cache.add(self.key, {_cache_name(_choice(t)): t.seconds for t in timings})
            quiet = self._cached_timing()
            self.preferred = _choice(quiet) if quiet else self.current
        if self.preferred is None:
            self.preferred = self.current
        note = speedup_note(timings)
        if first:
            return f"threads: {note}, measured on this run's first steps (--threads N to choose)"
        verb = "now" if changed else "still"
        return f"threads: {verb} {note}, measured again (the steps had slowed, or the machine may be quiet again)"

    def _cached_timing(self) -> ThreadTiming | None:
        """The choice that was fastest in the recent probes (each choice's fastest step seen) and
        that step's time; None until SETTLED_PROBES runs have probed."""
        if self.cache is None:
            return None
        probes = self.cache.recent(self.key)
        if len(probes) < SETTLED_PROBES:
            return None
        seen = [_timing(n, min(p.get(_cache_name(n), float("inf")) for p in probes)) for n in self.choices]
        best = fastest(seen)
        return best if best.seconds < float("inf") else None


def _torch_threads(choice: Choice) -> None:
    assert isinstance(choice, int)  # a Split is set by the trainer's own set_threads
    torch.set_num_threads(choice)


def _timing(choice: Choice, seconds: float) -> ThreadTiming:
    if isinstance(choice, Split):
        return ThreadTiming(choice.workers, seconds, backend="split")
    return ThreadTiming(choice, seconds)


def _choice(timing: ThreadTiming) -> Choice:
    return Split(timing.threads) if timing.backend == "split" else timing.threads


def _cache_name(choice: Choice) -> str:
    """ "t2": two torch threads; "s2": split over two workers."""
    return f"s{choice.workers}" if isinstance(choice, Split) else f"t{choice}"


def threads_cache() -> ProbeCache:
    """threads.json next to the token cache; each probe holds the median step time per choice
    ("t1", "t2": torch's threads; "s2": split over two workers)."""
    return ProbeCache("threads", ())
