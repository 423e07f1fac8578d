"""probes/precision.py: --precision auto from timings (fake ones here), the cache keyed by
machine and shape, and the real probe on a small shape."""

from __future__ import annotations

import math

import pytest
import torch

from charrnn.probes import precision as precision_mod
from charrnn.probes.cache import SETTLED_PROBES, ProbeCache
from charrnn.probes.precision import MIN_SPEEDUP, PrecisionTiming, StepShape, choose_precision, decide

CPU = torch.device("cpu")
BIG = StepShape("lstm", 65, 64, 512, 2, 32, 64)  # over the overhead bound: measured
TINY = StepShape("lstm", 65, 16, 16, 1, 2, 8)


def test_the_faster_sound_precision_is_taken_and_says_what_was_measured():
    assert decide(PrecisionTiming("bf16", 0.24, 0.10, 1.001), "measured") == ("bf16", "bf16: 2.4x fp32 here (measured)")
    slow = decide(PrecisionTiming("bf16", 0.10, 0.12, 1.0), "measured")
    assert slow[0] == "fp32" and "bf16 ran 0.83x fp32 here" in slow[1]
    barely = PrecisionTiming("bf16", MIN_SPEEDUP * 0.099, 0.1, 1.0)
    assert decide(barely, "m")[0] == "fp32"
    unsound = decide(PrecisionTiming("fp16", 0.3, 0.1, 1.5), "m")
    assert unsound[0] == "fp32" and "differed from fp32's by 50.0%" in unsound[1]
    assert decide(PrecisionTiming("bf16", 0.3, 0.1, math.nan), "m")[0] == "fp32"


def test_no_probe_for_a_step_that_is_all_overhead_or_a_cpu_without_bf16_kernels(monkeypatch):
    def never(*args):
        raise AssertionError("probed")

    monkeypatch.setattr(precision_mod, "cpu_can_run_bf16", lambda: True)
    assert choose_precision(CPU, TINY, measure=never)[0] == "fp32"
    monkeypatch.setattr(precision_mod, "cpu_can_run_bf16", lambda: False)
    precision, why = choose_precision(CPU, BIG, measure=never)
    assert precision == "fp32" and "no bf16 kernels" in why


class Probe:
    def __init__(self, *timings: PrecisionTiming):
        self.timings, self.calls = list(timings), []

    def __call__(self, device, shape, candidate):
        self.calls.append((shape, candidate))
        return self.timings.pop(0)


def test_probes_are_cached_per_shape_until_settled_and_the_fastest_seen_decides(tmp_path, monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_can_run_bf16", lambda: True)
    cache = ProbeCache("precision", ("fp32", "candidate", "loss_ratio"), tmp_path / "precision.json")
    # the second probe ran on a busy machine (bf16 looked slow): the fastest time per precision decides
    probe = Probe(*(PrecisionTiming("bf16", 0.2, b, 1.0) for b in (0.1, 0.5, 0.09)))
    answers = [choose_precision(CPU, BIG, cache=cache, measure=probe) for _ in range(SETTLED_PROBES + 2)]
    assert len(probe.calls) == SETTLED_PROBES and probe.calls[0] == (BIG, "bf16")
    assert [a[0] for a in answers] == ["bf16"] * len(answers)
    assert "one just now" in answers[0][1] and "measured earlier" in answers[-1][1]
    assert "2.2x fp32 here" in answers[-1][1]
    other = StepShape("lstm", 65, 64, 256, 2, 32, 64)
    choose_precision(CPU, other, cache=cache, measure=Probe(PrecisionTiming("bf16", 0.1, 0.2, 1.0)))
    assert len(cache.recent(next(k for k in _keys(cache) if "2x256" in k))) == 1


def _keys(cache: ProbeCache) -> list[str]:
    import json

    return list(json.loads(cache.path.read_text()))


@pytest.mark.skipif(not precision_mod.cpu_can_run_bf16(), reason="this CPU has no bf16 kernels")
def test_the_real_probe_times_both_precisions_on_the_same_batch():
    timing = precision_mod.measure_precisions(CPU, StepShape("lstm", 30, 8, 32, 1, 4, 16), "bf16", seconds=0.05)
    assert timing.fp32_seconds > 0 and timing.candidate_seconds > 0
    assert abs(timing.loss_ratio - 1) < 0.05  # same weights, same batch: bf16 rounds, it does not differ


def test_a_probe_step_shrinks_its_window_then_its_batch_to_stay_short():
    def cost(per_cell: float):
        return lambda batch, seq_len: per_cell * batch * seq_len

    assert precision_mod.fitting_step(cost(1e-6), 32, 64, seconds=0.1) == (32, 64)  # fast: the run's own shape
    assert precision_mod.fitting_step(cost(1e-4), 32, 64, seconds=0.1) == (32, 31)  # the window shrinks first
    assert precision_mod.fitting_step(cost(1e-2), 32, 64, seconds=0.1) == (1, 8)  # then the batch
    assert precision_mod.fitting_step(cost(1e-3), 32, 64, seconds=0.1) == (12, 8)
