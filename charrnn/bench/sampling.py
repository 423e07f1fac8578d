"""Sampling speed of the fast single-step path next to its bandwidth and compute limits, and
the sampler through `sample.generate` (what `charrnn sample` runs) next to the matrix-vector
floor: the same matmuls a step needs, alone, on one thread and on all."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from ..config import SampleConfig
from ..model import FastStepper, RNNLanguageModel
from ..probes.threads import thread_counts, time_thread_counts, tune_stepper
from ..sample import choose_next, generate
from ..tokenizers.char import CharTokenizer
from .results import SampleSpeed, SamplingFloor
from .training import VOCAB


def step_weights(stepper: FastStepper) -> list[torch.Tensor]:
    """The weight matrices one `FastStepper.step` multiplies by (the input table: only B rows, left out)."""
    later = stepper.w_ih + stepper.w_hh if stepper.cell == "gru" else stepper.w_cat
    return [stepper.w_hh0, *later, stepper.w_head]


def stepper_weight_bytes(stepper: FastStepper) -> int:
    """Bytes of weights one `FastStepper.step` reads."""
    return sum(t.numel() * t.element_size() for t in step_weights(stepper))


def _model(cell: str, hidden: int, layers: int) -> RNNLanguageModel:
    torch.manual_seed(0)
    return RNNLanguageModel(cell, VOCAB, 64, hidden, layers, dropout=0.0).eval()


@torch.inference_mode()
def bench_sampling(
    cell: str,
    hidden: int,
    layers: int,
    streams: int,
    seconds: float,
    bandwidth: float,
    peak: float | None = None,
    temperature: float = 0.8,
    threads: int | None = None,
) -> SampleSpeed:
    """Characters/s of the fast path (FastStepper + choose_next) on CPU, `streams` at once, on
    `threads` intra-op threads (default: the count `probes.threads.tune_stepper` measures fastest)."""
    stepper = FastStepper(_model(cell, hidden, layers))
    if threads:
        stepper.threads = threads
    else:
        tune_stepper(stepper, streams)
    generator = torch.Generator().manual_seed(0)
    hidden_state = stepper.init_state(streams)
    token = torch.zeros(streams, dtype=torch.long)
    for _ in range(20):  # warm-up
        logits, hidden_state = stepper.step(token, hidden_state)
        token = choose_next(logits, temperature, generator=generator)
    steps, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(25):
            logits, hidden_state = stepper.step(token, hidden_state)  # (B, V)
            token = choose_next(logits, temperature, generator=generator)  # (B,)
            int(token[0])  # what streaming output costs: the token reaches Python every step
        steps += 25
        now = time.perf_counter()
        if now >= deadline:
            break
    weight_bytes = stepper_weight_bytes(stepper)
    return SampleSpeed(
        cell=cell,
        hidden=hidden,
        layers=layers,
        streams=streams,
        chars_per_sec=steps * streams / (now - start),
        threads=stepper.threads or torch.get_num_threads(),  # what step() ran on
        weight_bytes=weight_bytes,
        limit_chars_per_sec=streams * bandwidth / weight_bytes,
        compute_limit_chars_per_sec=peak / (2 * weight_bytes / 4) if peak else None,
    )


def step_matmuls(stepper: FastStepper, streams: int = 1) -> Callable[[], object]:
    """The matrix products of one `FastStepper.step` and nothing else (no gates, no draw): the
    floor a step cannot go below on this machine."""
    inputs = {size: torch.zeros(streams, size) for size in (stepper.hidden_size, 2 * stepper.hidden_size)}
    pairs = [(inputs[w.shape[0]], w) for w in step_weights(stepper)]  # each weight (in, out): an input of its width
    return lambda: [torch.mm(x, w) for x, w in pairs]


@torch.inference_mode()
def bench_floor(cell: str, hidden: int, layers: int, seconds: float, rounds: int = 5) -> SamplingFloor:
    """One stream through `sample.generate` (the prime and start-up excluded), and the step's
    matmuls alone on each thread count, in alternating rounds of as many steps (a machine whose
    speed drifts moves both alike): the sampler's share of the floor, medians of the rounds."""
    model = _model(cell, hidden, layers)
    matmuls = step_matmuls(FastStepper(model))
    counts = thread_counts()
    once = min(t.seconds for t in time_thread_counts(matmuls, counts, rounds=1, repeats=20))
    steps = max(20, int(seconds / (rounds * (len(counts) + 1.5)) / once))  # per round, each side
    tokenizer = CharTokenizer([chr(32 + i) for i in range(VOCAB)])
    config = SampleConfig(length=rounds * steps * 2 + 100, temperature=0.8)
    pieces = generate(model, tokenizer, config, prime=" ", generator=torch.Generator().manual_seed(0))
    next(pieces), next(pieces)  # the prime, then the first character: set-up (the prime, the thread probe) done
    floors: dict[int, list[float]] = {n: [] for n in counts}
    sampler: list[float] = []
    for _ in range(rounds):
        for timing in time_thread_counts(matmuls, counts, rounds=1, repeats=steps):
            floors[timing.threads].append(timing.seconds)
        began, produced = time.perf_counter(), 0
        while produced < steps:
            produced += len(next(pieces))
        sampler.append((time.perf_counter() - began) / produced)
    pieces.close()
    floor_rates = {n: 1 / statistics.median(t) for n, t in floors.items()}
    rate = 1 / statistics.median(sampler)
    return SamplingFloor(cell, hidden, layers, floor_rates, rate, rate / max(floor_rates.values()))
