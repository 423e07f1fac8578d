"""The loss read-back: every step on the CPU, in blocks on a GPU, never past a bad step."""

from __future__ import annotations

import pytest
import torch

from charrnn.config import TrainConfig
from charrnn.errors import TrainingDiverged
from charrnn.training.meters import LOSS_SYNC_EVERY, LossReadback, SlowRunWatch


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


def _watch(expected=10_000.0, step_flops=1e10):
    from charrnn.training.meters import SlowRunWatch

    heard = []
    return SlowRunWatch(expected, step_flops, heard.append), heard


def test_a_run_far_below_its_expected_speed_warns_once_after_a_sustained_stretch():
    watch, heard = _watch()
    for _ in range(9):  # 9 s at 1,000 tokens/s, 10x below: not yet a sustained stretch
        watch.observe(1.0, 1000)
    assert heard == []
    watch.observe(1.0, 1000)
    assert len(heard) == 1 and heard[0].startswith("warning: training runs at 1,000 tokens/s, 10x below")
    assert "busy" in heard[0] and "--threads 1" in heard[0]
    for _ in range(30):
        watch.observe(1.0, 1000)
    assert len(heard) == 1 and watch.verdict(40.0) == heard[0].removeprefix("warning: ")


def test_a_run_near_its_speed_or_too_small_to_judge_says_nothing():
    watch, heard = _watch()
    for _ in range(30):
        watch.observe(1.0, 2500)  # 4x below: within what a laptop's turbo and thermals explain
    assert heard == [] and watch.verdict(30.0) is None
    tiny, tiny_heard = _watch(step_flops=1e6)  # a step of a tiny model is mostly overhead
    for _ in range(30):
        tiny.observe(1.0, 10)
    assert tiny_heard == [] and tiny.verdict(30.0) is None
    unknown, unknown_heard = _watch(expected=None)  # nothing cached: no estimate to hold it to
    for _ in range(30):
        unknown.observe(1.0, 10)
    assert unknown_heard == []


def test_the_runs_own_speed_leaves_out_the_warm_up_and_waits_for_enough_steps():
    watch, _ = _watch(step_flops=1e9)
    for _ in range(SlowRunWatch.WARM_UP_STEPS):
        watch.observe(100.0, 1000)  # first calls and thread measurements: slow, not the run's pace
    assert watch.flops_per_sec() is None
    watch.observe(4.0, 1000)
    assert watch.flops_per_sec() is None  # 4 s of steps: too few to judge the machine by
    watch.observe(6.0, 1000)
    assert watch.flops_per_sec() == pytest.approx(2e9 / 10.0)


def test_a_session_without_a_step_says_so_and_what_to_do():
    watch, _ = _watch(expected=None)
    assert "no training step ran in 31s" in watch.verdict(31.2) and "--time-budget" in watch.verdict(31.2)


def _pace(hidden: int, threads: int | None, processes: int = 1, device: str = "cpu"):
    from charrnn.config import ModelConfig
    from charrnn.runtime import Placement
    from charrnn.training.meters import StepPace
    from charrnn.training.reporting import Reporter

    model = ModelConfig(vocab_size=65, hidden_size=hidden, num_layers=2)
    placement = Placement(torch.device(device), "fp32", "as asked", threads)
    return StepPace.for_run(model, placement, 32 * 64, Reporter(), processes)


def test_threads_are_measured_only_where_nobody_chose_and_they_can_matter(monkeypatch):
    monkeypatch.setattr("charrnn.training.meters.thread_counts", lambda: (1, 2))
    assert _pace(512, None).threads is not None  # a 2x512 step: measured
    assert _pace(512, 2).threads is None  # --threads 2: honoured, never changed
    assert _pace(512, None, processes=2).threads is None  # every process of a distributed run keeps its count
    assert _pace(8, None).threads is None  # a step this small is overhead: left alone, deterministic
    monkeypatch.setattr("charrnn.training.meters.thread_counts", lambda: (1,))
    assert _pace(512, None).threads is None  # one core: nothing to choose


def test_only_a_cpu_run_of_one_process_corrects_the_speed_cache():
    from charrnn.training.sizing import speed_key

    assert _pace(64, None).cache_key == speed_key(torch.device("cpu"), "fp32")
    assert _pace(64, None, processes=2).cache_key is None  # one rank's speed is a share, not the machine's
    gpu = _pace(64, None, device="mps")  # a GPU (one that needs none here to be named)
    assert gpu.cache_key is None  # its steps are timed without waiting for it


def test_the_pace_sets_threads_before_each_step_and_passes_the_tuners_decision_on():
    from charrnn.training.meters import SlowRunWatch, StepPace

    class Tuner:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def before_step(self) -> None:
            self.calls.append("before")

        def after_step(self, seconds: float) -> str | None:
            self.calls.append(f"after {seconds}")
            return "threads: 1 thread" if seconds > 1 else None

    heard: list[str] = []
    tuner = Tuner()
    pace = StepPace(SlowRunWatch(None, 0.0, heard.append), tuner, heard.append)  # type: ignore[arg-type]
    for seconds in (0.5, 2.0):
        pace.before_step()
        pace.observe(seconds, 100)
    assert tuner.calls == ["before", "after 0.5", "before", "after 2.0"] and heard == ["threads: 1 thread"]
