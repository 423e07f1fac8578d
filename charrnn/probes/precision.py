"""fp32 or bf16 (fp16 on a GPU without bf16) for a run: timed at the run's own shape, never
guessed from a feature flag.

A CPU with AVX-512 but no native bf16 passes oneDNN's bf16 check and then emulates it; a Xeon
with AMX trains a 2x256 LSTM 2.6x faster in bf16; a small model is all overhead in either. So
`--precision auto` times a few training steps (forward and backward, same weights, same batch)
in each precision, alternating, checks that the lower precision's loss agrees with fp32's, and
takes the faster only where it wins clearly. The probes are cached per machine and shape and the
answer is the fastest time seen per precision, so a probe taken on a busy machine never binds.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..footprint import training_flops_per_token
from ..model import RNNLanguageModel
from ..runtime import autocast_for, cpu_can_run_bf16, timed
from .cache import SETTLED_PROBES, ProbeCache, machine_key
from .threads import OVERHEAD_BOUND_STEP_FLOPS, on_fastest_threads

# bf16's coarser rounding costs a little quality per step: it must win by this much to be taken.
MIN_SPEEDUP = 1.1
# The lower precision's loss on the same batch from the same weights must agree with fp32's to
# this share; beyond it (overflow, a kernel gone wrong) it is not numerically sound here.
SOUND_LOSS_GAP = 0.02
# Both precisions together, after one warm-up step of each. Shorter shrinks the step so far that
# bf16's fixed costs (casting the weights) hide its speed: at 0.6 s it read 0.93x where it is 1.5x.
PROBE_SECONDS = 1.0
MIN_WINDOW = 8  # a probe's step keeps at least this many time steps (the recurrence is what it times)


@dataclass(frozen=True)
class StepShape:
    """What a training step's cost depends on."""

    cell: str
    vocab: int
    embed: int
    hidden: int
    layers: int
    batch: int
    seq_len: int

    def flops(self) -> float:
        per_token = training_flops_per_token(self.cell, self.embed, self.hidden, self.layers, self.vocab)
        return per_token * self.batch * self.seq_len

    def key(self) -> str:
        return f"{self.cell} {self.layers}x{self.hidden} e{self.embed} v{self.vocab} b{self.batch}x{self.seq_len}"


def fitting_step(time_step: Callable[[int, int], float], batch: int, seq_len: int, seconds: float) -> tuple[int, int]:
    """(batch, seq_len) no larger than asked whose training step takes about `seconds` here, from
    a step of a few streams over MIN_WINDOW steps, timed after one warm-up step, so that a
    probe stays short on a slow or busy machine. The window shrinks first: a step's cost grows
    with it, but the shape of every matmul in the recurrence is set by the batch alone."""
    few, short = min(batch, 4), min(seq_len, MIN_WINDOW)
    time_step(few, short)  # the first step pays for allocation and kernel selection
    per_cell = max(time_step(few, short), 1e-9) / (few * short)  # seconds per stream and time step
    window = max(short, min(seq_len, int(seconds / (per_cell * batch))))
    streams = batch if window > short else max(1, min(batch, int(seconds / (per_cell * window))))
    return streams, window


@dataclass(frozen=True)
class PrecisionTiming:
    candidate: str  # bf16 or fp16
    fp32_seconds: float  # median training step (forward and backward)
    candidate_seconds: float
    loss_ratio: float  # the candidate's loss over fp32's, same weights, same batch
    batch: int = 0  # the step timed (a probe shrinks it to stay short: fitting_step)
    seq_len: int = 0

    @property
    def speedup(self) -> float:
        return self.fp32_seconds / self.candidate_seconds


def decide(timing: PrecisionTiming, how: str) -> tuple[str, str]:
    """(precision, why) from a timing; `how` says where the figures come from. Pure."""
    name, speedup = timing.candidate, timing.speedup
    gap = abs(timing.loss_ratio - 1)
    if not gap <= SOUND_LOSS_GAP:  # also NaN
        return "fp32", f"{name}'s loss differed from fp32's by {gap:.1%} on the same batch here ({how})"
    if speedup < MIN_SPEEDUP:
        return "fp32", f"{name} ran {speedup:.2f}x fp32 here, under the {MIN_SPEEDUP:g}x it must win by ({how})"
    return name, f"{name}: {speedup:.1f}x fp32 here ({how})"


def measure_precisions(
    device: torch.device, shape: StepShape, candidate: str, seconds: float = PROBE_SECONDS
) -> PrecisionTiming:
    """Training steps of `shape` in fp32 and in `candidate`, alternating, for about `seconds`."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, shape.vocab, (shape.batch, shape.seq_len + 1), generator=generator).to(device)
    torch.manual_seed(0)
    model = RNNLanguageModel(shape.cell, shape.vocab, shape.embed, shape.hidden, shape.layers, dropout=0.0)
    model = model.to(device)
    scaler = 1024.0 if candidate == "fp16" else 1.0  # fp16's gradients underflow unscaled

    def step(precision: str, batch: int, seq_len: int) -> float:
        window = tokens[:batch, : seq_len + 1]
        with autocast_for(device, precision):
            logits, _ = model(window[:, :-1])  # (B, T, V)
        loss = F.cross_entropy(logits.float().reshape(-1, shape.vocab), window[:, 1:].reshape(-1))
        model.zero_grad(set_to_none=True)
        (loss * (scaler if precision == "fp16" else 1.0)).backward()
        return float(loss.detach())

    time_fp32 = lambda b, t: timed(lambda: step("fp32", b, t), device)  # noqa: E731
    with on_fastest_threads(lambda: step("fp32", min(shape.batch, 4), min(shape.seq_len, MIN_WINDOW))):
        batch, seq_len = fitting_step(time_fp32, shape.batch, shape.seq_len, seconds / 5)
        losses = {p: step(p, batch, seq_len) for p in ("fp32", candidate)}  # warm-up: kernels chosen, weights reordered
        times: dict[str, list[float]] = {"fp32": [], candidate: []}
        began = time.perf_counter()
        while min(len(t) for t in times.values()) < 2 or time.perf_counter() - began < seconds:
            for precision, seen in times.items():
                seen.append(timed(lambda: step(precision, batch, seq_len), device))
    ratio = losses[candidate] / losses["fp32"] if losses["fp32"] > 0 else math.nan
    fp32, lower = statistics.median(times["fp32"]), statistics.median(times[candidate])
    return PrecisionTiming(candidate, fp32, lower, ratio, batch, seq_len)


def precision_cache() -> ProbeCache:
    return ProbeCache("precision", ("fp32", "candidate", "loss_ratio"))


def choose_precision(
    device: torch.device,
    shape: StepShape,
    *,
    cache: ProbeCache | None = None,
    measure: Callable[[torch.device, StepShape, str], PrecisionTiming] = measure_precisions,
) -> tuple[str, str]:
    """--precision auto for a run of `shape` on `device`: (precision, why, for the user)."""
    if device.type == "cuda":
        candidate = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    elif device.type == "cpu" and cpu_can_run_bf16():
        candidate = "bf16"
    else:
        return "fp32", f"this {device.type} has no bf16 kernels in this torch"
    if shape.flops() < OVERHEAD_BOUND_STEP_FLOPS:
        return "fp32", f"a step this small is overhead, whatever the precision (not measured; --precision {candidate})"
    cache = cache or precision_cache()
    key = f"{machine_key(device, threads=torch.get_num_threads())}|{shape.key()}|{candidate}"
    probes = cache.recent(key)
    probed_now = len(probes) < SETTLED_PROBES
    if probed_now:
        timing = measure(device, shape, candidate)
        record = {"fp32": timing.fp32_seconds, "candidate": timing.candidate_seconds, "loss_ratio": timing.loss_ratio}
        probes = cache.add(key, record) if math.isfinite(timing.loss_ratio) else [*probes, record]
    ratios = [p["loss_ratio"] for p in probes]
    worst = max(ratios, key=lambda r: abs(r - 1)) if all(map(math.isfinite, ratios)) else math.nan
    best = PrecisionTiming(candidate, min(p["fp32"] for p in probes), min(p["candidate"] for p in probes), worst)
    count = len(probes)
    model = f"{shape.cell} {shape.layers}x{shape.hidden}"
    how = f"training steps of a {model}, fastest of {count} probe{'s' if count > 1 else ''}"
    how += f", one just now at batch {timing.batch} x {timing.seq_len}" if probed_now else ", measured earlier"
    return decide(best, f"{how}; --precision to choose")
