"""probes/threads.py: the thread choice from timings, the sampler's probe, and the training
tuner (its probe with the run's own steps, the cache, the re-probe when steps slow down)."""

from __future__ import annotations

import torch

from charrnn.model import RNNLanguageModel
from charrnn.probes import threads as threads_mod
from charrnn.probes.cache import ProbeCache
from charrnn.probes.threads import Split, ThreadTiming, ThreadTuner, TunerSettings, fastest, speedup_note, tune_stepper
from charrnn.stepper import FastStepper, blas_threads_settable


def test_the_fastest_median_wins_and_a_tie_goes_to_fewer_threads():
    assert fastest([ThreadTiming(1, 0.3), ThreadTiming(2, 0.2)]).threads == 2
    assert fastest([ThreadTiming(1, 0.2), ThreadTiming(2, 0.2)]).threads == 1
    note = speedup_note([ThreadTiming(1, 0.066), ThreadTiming(2, 0.041)])
    assert note.startswith("2 threads, 1.61x faster than 1 (median 41 ms against 66 ms)")


def test_timing_alternates_counts_and_restores_torchs():
    torch.set_num_threads(2)
    seen: list[int] = []
    timings = threads_mod.time_thread_counts(lambda: seen.append(torch.get_num_threads()), (1, 2), rounds=3)
    assert seen == [1, 2, 1, 2, 1, 2] and torch.get_num_threads() == 2
    assert [t.threads for t in timings] == [1, 2]


def test_the_sampler_takes_the_backend_and_count_it_measured_fastest(monkeypatch):
    stepper = FastStepper(RNNLanguageModel("lstm", 20, 8, 16, 2, dropout=0.0).eval())
    monkeypatch.setattr(threads_mod, "STEP_WORTH_THREADS_SECONDS", 0.0)  # probe even this tiny step
    blas = Threads()
    monkeypatch.setattr(threads_mod, "set_blas_threads", blas)  # numpy's pool is left as it is
    monkeypatch.setattr(threads_mod, "blas_threads_settable", lambda: True)
    seconds = {"torch": {1: 3e-4, 2: 2e-4}, "numpy": {1: 1.5e-4, 2: 2.5e-4}}

    def fake(work, counts, *, set_threads, **kw):
        backend = "numpy" if set_threads is blas else "torch"
        return [ThreadTiming(n, seconds[backend][n]) for n in counts]

    monkeypatch.setattr(threads_mod, "time_thread_counts", fake)
    timings = tune_stepper(stepper, streams=4, counts=(1, 2))
    assert {(t.backend, t.threads) for t in timings} == {("torch", 1), ("torch", 2), ("numpy", 1), ("numpy", 2)}
    assert (stepper.backend, stepper.threads) == ("numpy", 1)
    seconds["torch"][2] = 1e-4  # torch on two threads now the fastest
    tune_stepper(stepper, streams=4, counts=(1, 2))
    assert (stepper.backend, stepper.threads) == ("torch", 2)


def test_the_first_probe_decides_the_backend_for_later_runs_and_only_threads_are_measured_again(monkeypatch, tmp_path):
    monkeypatch.setattr(threads_mod, "STEP_WORTH_THREADS_SECONDS", 0.0)
    blas = Threads()
    monkeypatch.setattr(threads_mod, "set_blas_threads", blas)
    monkeypatch.setattr(threads_mod, "blas_threads_settable", lambda: True)
    seconds = {"torch": {1: 3e-4, 2: 2e-4}, "numpy": {1: 1.5e-4, 2: 2.5e-4}}
    timed: list[str] = []

    def fake(work, counts, *, set_threads, **kw):
        backend = "numpy" if set_threads is blas else "torch"
        timed.append(backend)
        return [ThreadTiming(n, seconds[backend][n]) for n in counts]

    monkeypatch.setattr(threads_mod, "time_thread_counts", fake)
    cache = ProbeCache("sampler", ("torch",), path=tmp_path / "sampler.json")
    model = RNNLanguageModel("lstm", 20, 8, 16, 2, dropout=0.0).eval()
    first = FastStepper(model)
    tune_stepper(first, streams=1, counts=(1, 2), cache=cache)
    assert (first.backend, first.threads) == ("numpy", 1) and set(timed) == {"torch", "numpy"}
    seconds["torch"] = {1: 1e-5, 2: 1e-5}  # torch now measures faster: the decision stands (a seed's text with it)
    seconds["numpy"] = {1: 3e-4, 2: 1e-4}  # and numpy on two threads beats one: that is measured again
    timed.clear()
    later = FastStepper(model)
    tune_stepper(later, streams=1, counts=(1, 2), cache=cache)
    assert (later.backend, later.threads) == ("numpy", 2) and set(timed) == {"numpy"}
    seconds["numpy"] = {1: 3e-5, 2: 3e-5}  # 5x faster than the deciding probe: that one was taken busy
    tune_stepper(FastStepper(model), streams=1, counts=(1, 2), cache=cache)
    assert cache.recent(threads_mod._backend_key(later, 1)) == []  # forgotten: the next run decides again
    other_shape = FastStepper(RNNLanguageModel("lstm", 20, 8, 24, 2, dropout=0.0).eval())
    tune_stepper(other_shape, streams=1, counts=(1, 2), cache=cache)  # a shape of its own: probed afresh
    assert other_shape.backend == "torch"


def test_a_tiny_sampling_step_compares_the_backends_on_one_thread_only(monkeypatch):
    stepper = FastStepper(RNNLanguageModel("gru", 20, 8, 16, 1, dropout=0.0).eval())
    asked: list[tuple[int, ...]] = []

    def fake(work, counts, **kw):  # every step shorter than a second thread's wake-up
        asked.append(tuple(counts))
        return [ThreadTiming(n, threads_mod.STEP_WORTH_THREADS_SECONDS / 4) for n in counts]

    monkeypatch.setattr(threads_mod, "time_thread_counts", fake)
    timings = tune_stepper(stepper, streams=1, counts=(1, 2))
    assert stepper.threads == 1 and {t.threads for t in timings} == {1} and set(asked) == {(1,)}
    assert {t.backend for t in timings} == ({"torch", "numpy"} if blas_threads_settable() else {"torch"})


class Threads:
    """The thread count the tuner sets, recorded."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self, n: int) -> None:
        self.now = n


def run_steps(tuner: ThreadTuner, threads: Threads, seconds_on: dict[int, float], steps: int) -> list[str]:
    notes = []
    for _ in range(steps):
        tuner.before_step()
        note = tuner.after_step(seconds_on[threads.now])
        notes += [note] if note else []
    return notes


def tuner(tmp_path, threads: Threads, clock=lambda: 0.0) -> ThreadTuner:
    cache = ProbeCache("threads", (), tmp_path / "threads.json")
    return ThreadTuner(cache, "key", counts=(1, 2), set_threads=threads, clock=clock)


def test_the_first_steps_probe_each_count_and_the_faster_is_kept(tmp_path):
    threads = Threads()
    t = tuner(tmp_path, threads)
    notes = run_steps(t, threads, {1: 0.10, 2: 0.06}, steps=1 + 6 + 3)
    assert t.current == 2 and threads.now == 2
    assert len(notes) == 1 and notes[0].startswith("threads: 2 threads, 1.67x faster than 1")


def test_a_run_that_slows_by_half_for_several_steps_reprobes_and_moves(tmp_path):
    threads = Threads()
    t = tuner(tmp_path, threads)
    run_steps(t, threads, {1: 0.10, 2: 0.06}, steps=1 + 8 + 2)
    assert t.current == 2
    busy = {1: 0.12, 2: 0.30}  # a neighbour now spins on both cores: two threads wait on each other
    notes = run_steps(t, threads, busy, steps=TunerSettings().slow_steps + 8 + 1)
    assert t.current == 1 and threads.now == 1
    assert notes and notes[-1].startswith("threads: now 1 thread, 2.50x faster than 2")
    assert "measured again" in notes[-1]


def test_a_few_slow_steps_do_not_reprobe(tmp_path):
    threads = Threads()
    t = tuner(tmp_path, threads)
    run_steps(t, threads, {1: 0.10, 2: 0.06}, steps=10)
    for seconds in [0.2] * (TunerSettings().slow_steps - 1) + [0.06]:
        t.before_step()
        t.after_step(seconds)
    assert t.schedule == [] and t.current == 2


def test_away_from_the_quiet_choice_it_looks_again_after_a_while(tmp_path):
    threads, now = Threads(), [0.0]
    t = tuner(tmp_path, threads, clock=lambda: now[0])
    run_steps(t, threads, {1: 0.10, 2: 0.06}, steps=1 + 8)  # quiet: 2 threads preferred
    run_steps(t, threads, {1: 0.12, 2: 0.30}, steps=5 + 8 + 1)  # busy: moved to one
    assert t.current == 1
    now[0] = TunerSettings().revisit_seconds + 100
    notes = run_steps(t, threads, {1: 0.10, 2: 0.06}, steps=1 + 8)  # quiet again
    assert t.current == 2 and "now 2 threads" in notes[-1]


def test_settled_cache_answers_without_probing_and_a_busy_probe_never_binds(tmp_path):
    cache = ProbeCache("threads", (), tmp_path / "threads.json")
    for t1, t2 in [(0.10, 0.06), (0.12, 0.40), (0.11, 0.07)]:  # the second probe was taken on a busy machine
        cache.add("key", {"t1": t1, "t2": t2})
    threads = Threads()
    t = ThreadTuner(cache, "key", counts=(1, 2), set_threads=threads)
    assert t.schedule == [] and t.current == 2
    assert run_steps(t, threads, {1: 0.10, 2: 0.06}, steps=5) == [] and threads.now == 2


def test_a_count_many_times_slower_is_ruled_out_after_one_step(tmp_path):
    threads = Threads()
    t = tuner(tmp_path, threads)
    seen: list[int] = []
    for _ in range(1 + 5):
        t.before_step()
        seen.append(threads.now)
        t.after_step({1: 0.05, 2: 2.0}[threads.now])
    assert seen[1:] == [1, 1, 1, 1, 2] and t.current == 1 and t.schedule == []  # one slow step on two threads, not four


def test_a_crafted_cache_entry_is_ignored_not_a_crash(tmp_path):
    import json

    path = tmp_path / "threads.json"
    good = {"t1": 0.1, "t2": 0.05, "at": 1.0}
    bad = [{"t1": "fast", "t2": 0.05, "at": 1.0}, {"t1": -1, "t2": 0.05, "at": 1.0}, {"t1": 1e400, "at": 1.0}]
    path.write_text(json.dumps({"key": {"probes": [*bad, good, good, good]}}))
    cache = ProbeCache("threads", (), path, now=lambda: 2.0)
    assert cache.recent("key") == [good] * 3
    assert ThreadTuner(cache, "key", counts=(1, 2), set_threads=Threads()).current == 2


def test_a_run_that_starts_from_the_cache_beside_a_busy_program_measures_again(tmp_path):
    cache = ProbeCache("threads", (), tmp_path / "threads.json")
    for _ in range(3):
        cache.add("key", {"t1": 0.10, "t2": 0.06})  # quiet: two threads
    threads = Threads()
    t = ThreadTuner(cache, "key", counts=(1, 2), set_threads=threads)
    assert t.current == 2 and t.baseline == 0.06
    notes = run_steps(t, threads, {1: 0.12, 2: 2.0}, steps=1 + TunerSettings().slow_steps + 5)
    assert t.current == 1 and threads.now == 1 and notes[-1].startswith("threads: now 1 thread")


def test_a_step_split_by_rows_is_probed_beside_the_counts_and_kept_when_faster(tmp_path):
    cache = ProbeCache("threads", (), tmp_path / "threads.json")
    chosen: list[object] = []
    t = ThreadTuner(cache, "key", counts=(1, 2), set_threads=chosen.append, split=2)
    seconds = {1: 0.10, 2: 0.08, Split(2): 0.05}
    notes = []
    for _ in range(1 + 12):
        t.before_step()
        note = t.after_step(seconds[chosen[-1]])
        notes += [note] if note else []
    assert chosen[1:13] == [1] * 4 + [2] * 4 + [Split(2)] * 4  # each probed in turn: a step to settle, three timed
    assert t.current == Split(2) and chosen[-1] == Split(2)
    assert notes == [notes[0]] and notes[0].startswith("threads: 2 workers of one thread, 1.60x faster than 2 threads")
    assert cache.recent("key")[0]["s2"] == 0.05  # cached beside "t1" and "t2"


def test_each_choice_is_timed_after_a_step_to_settle(tmp_path):
    """The first step after a switch is not timed: the threads of the choice before may still spin
    (measured: a split step timed just after one on two threads was 1.2x slower than in a row)."""
    threads = Threads()
    t = tuner(tmp_path, threads)
    previous, steps = None, 0
    while steps == 0 or t.schedule:
        t.before_step()
        settling = threads.now != previous
        previous = threads.now
        t.after_step({1: 0.05, 2: 0.04}[threads.now] * (3 if settling and steps > 0 else 1))
        steps += 1
    assert t.current == 2 and t.samples == {1: [0.05] * 3, 2: [0.04] * 3}
