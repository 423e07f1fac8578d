"""Sampling speed of the fast single-step path next to its bandwidth and compute limits."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch

from ..model import ONE_THREAD_MAX_STREAMS, FastStepper, RNNLanguageModel
from ..sample import choose_next
from .results import SampleSpeed
from .training import VOCAB


def stepper_weight_bytes(stepper: FastStepper) -> int:
    """Bytes of weights one `FastStepper.step` reads (the input table: only B rows, ignored)."""
    if stepper.cell == "gru":
        later = stepper.w_ih + stepper.w_hh
    else:
        later = stepper.w_cat
    tensors = [stepper.w_hh0, *later, stepper.w_head]
    return sum(t.numel() * t.element_size() for t in tensors)


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
    """Characters/s of the fast path (FastStepper + choose_next) on CPU, `streams` at once,
    on `threads` intra-op threads (default: torch's)."""
    with _intra_op_threads(threads):
        torch.manual_seed(0)
        model = RNNLanguageModel(cell, VOCAB, 64, hidden, layers, dropout=0.0).eval()
        stepper = FastStepper(model)
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
            threads=1 if streams <= ONE_THREAD_MAX_STREAMS else torch.get_num_threads(),  # what step() ran on
            weight_bytes=weight_bytes,
            limit_chars_per_sec=streams * bandwidth / weight_bytes,
            compute_limit_chars_per_sec=peak / (2 * weight_bytes / 4) if peak else None,
        )


@contextmanager
def _intra_op_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` (None: left as they are), restored afterwards."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
