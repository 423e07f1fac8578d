"""Sampling speed of the fast single-step path next to its bandwidth and compute limits, and
the sampler through `sample.generate` (what `charrnn sample` runs) next to the matrix-vector
floor: the same matmuls a step needs, alone, on each backend a step can run on (torch, numpy's
BLAS), on one thread and on all."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np
import torch

from ..config import SampleConfig
from ..model import RNNLanguageModel
from ..probes.threads import thread_counts, thread_setter, time_thread_counts, tune_stepper
from ..sample import choose_next, generate, generate_samples, tuned_stepper
from ..stepper import FastStepper, blas_threads_settable, torch_ops_beside
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
    `threads` threads (default: the count `probes.threads.tune_stepper` measures fastest) of the
    backend it measures fastest there."""
    stepper = FastStepper(_model(cell, hidden, layers))
    tune_stepper(stepper, streams, counts=(threads,) if threads else None)
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
            with torch_ops_beside(stepper):  # as sample.generate_samples draws
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
        backend=stepper.backend,
        weight_bytes=weight_bytes,
        limit_chars_per_sec=streams * bandwidth / weight_bytes,
        compute_limit_chars_per_sec=peak / (2 * weight_bytes / 4) if peak else None,
    )


def step_matmuls(stepper: FastStepper, streams: int = 1, backend: str = "torch") -> Callable[[], object]:
    """The matrix products of one `FastStepper.step` and nothing else (no gates, no draw), as
    `backend` runs them: the floor a step cannot go below there."""
    weights = step_weights(stepper)
    if backend == "numpy":
        arrays = [w.detach().numpy() for w in weights]
        vectors = {size: np.zeros((streams, size), np.float32) for size in {w.shape[0] for w in arrays}}
        numpy_pairs = [(vectors[w.shape[0]], w) for w in arrays]
        return lambda: [x @ w for x, w in numpy_pairs]
    inputs = {size: torch.zeros(streams, size) for size in {w.shape[0] for w in weights}}
    pairs = [(inputs[w.shape[0]], w) for w in weights]  # each weight (in, out): an input of its width
    return lambda: [torch.mm(x, w) for x, w in pairs]


def floor_label(backend: str, threads: int | None) -> str:
    """ "numpy, 2 threads": where a step's matmuls ran."""
    return f"{backend}, {threads} thread{'s' if threads != 1 else ''}"


@torch.inference_mode()
def bench_floor(cell: str, hidden: int, layers: int, seconds: float, rounds: int = 5, many: int = 32) -> SamplingFloor:
    """One stream through `sample.generate` (the prime and start-up excluded), and the step's
    matmuls alone on each backend the sampler can choose (torch, numpy's BLAS) at each thread
    count, in alternating rounds of as many steps (a machine whose speed drifts moves all alike):
    the sampler's share of the best floor, medians of the rounds. Then `many` samples at once
    (--num-samples), as many characters each as a round of one stream."""
    model = _model(cell, hidden, layers)
    stepper = FastStepper(model)
    backends = ("torch", "numpy") if blas_threads_settable() else ("torch",)
    floors = {(b, n): step_matmuls(stepper, backend=b) for b in backends for n in thread_counts()}
    torch_threads = torch.get_num_threads()
    thread_setter("numpy")(1)  # the first timing's numpy side on one thread, as its torch side
    once = min(time_thread_counts(work, (1,), rounds=1, repeats=20)[0].seconds for work in floors.values())
    steps = max(20, int(seconds / (rounds * (len(floors) + 1.5)) / once))  # per round, each side
    tokenizer = CharTokenizer([chr(32 + i) for i in range(VOCAB)])
    config = SampleConfig(length=rounds * steps * 2 + 100, temperature=0.8)
    pieces = generate(model, tokenizer, config, prime=" ", generator=torch.Generator().manual_seed(0))
    next(pieces), next(pieces)  # the prime, then the first character: set-up (the prime, the probe) done
    chosen = tuned_stepper(model, streams=1)  # what generate measured (cached: no second probe)
    times: dict[tuple[str, int], list[float]] = {choice: [] for choice in floors}
    sampler: list[float] = []
    try:
        for _ in range(rounds):
            for (backend, n), work in floors.items():
                thread_setter(backend)(n)
                for _ in range(max(1, steps // 4)):  # untimed: the other backend's idle threads may still spin
                    work()
                began = time.perf_counter()
                for _ in range(steps):
                    work()
                times[backend, n].append((time.perf_counter() - began) / steps)
            torch.set_num_threads(torch_threads)
            began, produced = time.perf_counter(), 0
            while produced < steps:
                produced += len(next(pieces))
            sampler.append((time.perf_counter() - began) / produced)
    finally:
        pieces.close()
        torch.set_num_threads(torch_threads)
    floor_rates = {floor_label(b, n): 1 / statistics.median(t) for (b, n), t in times.items()}
    rate = 1 / statistics.median(sampler)
    choice = floor_label(chosen.backend, chosen.threads)
    result = SamplingFloor(cell, hidden, layers, floor_rates, rate, rate / max(floor_rates.values()), choice)
    if many > 1:
        result.many_samples = many
        result.many_chars_per_sec, result.many_cores_busy, result.many_choice = _many_at_once(
            model, tokenizer, many, length=max(20, int(rate * seconds / rounds / many) * 4)
        )
    return result


def _many_at_once(
    model: RNNLanguageModel, tokenizer: CharTokenizer, count: int, length: int
) -> tuple[float, float, str]:
    """`count` samples of `length` characters through `sample.generate_samples`, timed from the
    first new character (the prime and the probe excluded): chars/s in all, CPU seconds per wall
    second (the cores kept busy), and the backend and thread count it measured fastest."""
    config = SampleConfig(length=length, temperature=0.8, num_samples=count)
    pieces = generate_samples(model, tokenizer, config, prime=" ", generator=torch.Generator().manual_seed(0))
    next(pieces), next(pieces), next(pieces)  # nothing, the prime, the first character: set-up done
    wall, cpu = time.perf_counter(), time.process_time()
    produced = sum(len(piece) for _, piece in pieces)
    produced -= 2 * (count - 1)  # the other rows' primes and first characters came before the clock started
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    chosen = tuned_stepper(model, streams=count)  # what generate_samples measured (cached)
    return produced / wall, cpu / wall, floor_label(chosen.backend, chosen.threads)
