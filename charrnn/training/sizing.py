"""Budget-aware model size: with --time-budget and no --hidden/--layers, pick the size that
learns the most in that time on this machine.

The rule, from `charrnn bench --only grid` (README, "Model size for a budget"): at a fixed
wall-clock budget, the size that reaches the best validation is the largest one that still
sees enough training tokens per parameter. A smaller model sees more text but saturates; a
larger one learns more per token but sees too little. "Enough" falls as the training compute
of the budget (seconds x FLOP/s) grows, down to a floor: on one core the grid's best size saw
about 10 tokens per parameter at 60 s, while at 5 and 30 minutes sizes seeing 3.4-4.8 won and
sizes seeing under 2 lost. How many tokens a size sees in the budget comes from a few
seconds' measurement of this machine's training speed (FLOP/s), cached per machine: the first
few budgeted runs probe (1 s each) and the cache answers with the fastest probe, so one taken
on a busy machine does not stick.

A small corpus caps the size too: past `MAX_PARAMETERS_PER_CHAR` parameters per training
character a model only memorises the text.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..config import ModelConfig, TrainConfig
from ..footprint import parameter_count, training_flops_per_token
from ..model import RNNLanguageModel
from ..probes.cache import SETTLED_PROBES, ProbeCache, machine_key
from ..probes.precision import fitting_step
from ..probes.threads import on_fastest_threads
from ..runtime import Placement, autocast_for, timed

# Tokens per parameter the pick must see: MIN_TOKENS_PER_PARAMETER from SMALL_COMPUTE FLOPs of
# training up (5 minutes of one 57 GFLOP/s core), more below it, as (SMALL_COMPUTE / compute)
# ** TARGET_SLOPE. Fitted to every grid cell measured (README): each cell's best size sees at
# least the target there and the next larger size less.
SMALL_COMPUTE = 1.8e13  # FLOPs
MIN_TOKENS_PER_PARAMETER = 2.0
TARGET_SLOPE = 2 / 3
MAX_PARAMETERS_PER_CHAR = 4.0
# Candidates, smallest first; the grid found 3 layers no better than 2 at equal budget (README).
CANDIDATES: tuple[tuple[int, int], ...] = tuple((h, 2) for h in (64, 96, 128, 192, 256, 384, 512, 768, 1024))

PROBE_SECONDS = 1.0  # with the precision probe (1 s), a first budgeted run spends about 2 s measuring
PROBE_SHAPE = (384, 2, 32, 64)  # hidden, layers, batch, seq_len: a mid-sized training step
PROBE_VOCAB = 96


@dataclass(frozen=True)
class SizeChoice:
    hidden_size: int
    num_layers: int
    reason: str  # one line for the user
    tokens: float = 0.0  # training tokens the size sees in the budget, at the measured speed


def tokens_per_parameter_target(compute: float) -> float:
    """How many training tokens per parameter the picked size must see, for `compute` FLOPs of
    training: more for a short budget on a slow machine, fewer for a long one on a fast machine."""
    return MIN_TOKENS_PER_PARAMETER * float(max(1.0, SMALL_COMPUTE / max(compute, 1.0)) ** TARGET_SLOPE)


def choose_size(
    *,
    budget_seconds: float,
    flops_per_sec: float,
    train_chars: int,
    vocab: int,
    embed: int,
    cell: str = "lstm",
    candidates: tuple[tuple[int, int], ...] = CANDIDATES,
    tied: bool = False,
) -> SizeChoice:
    """The largest candidate that sees at least `tokens_per_parameter_target` tokens per
    parameter in the budget and stays under the corpus cap; the smallest one when none does. Pure."""
    compute = budget_seconds * flops_per_sec  # FLOPs of training in the budget
    target = tokens_per_parameter_target(compute)
    best = None
    for hidden, layers in candidates:
        params = parameter_count(cell, vocab, embed, hidden, layers, tied)
        speed = flops_per_sec / training_flops_per_token(cell, embed, hidden, layers, vocab)  # tokens/s
        per_param = budget_seconds * speed / params
        fits = per_param >= target and params <= MAX_PARAMETERS_PER_CHAR * train_chars
        if best is None or fits:
            best = (hidden, layers, params, speed, per_param, fits)
    hidden, layers, params, speed, per_param, fits = best  # type: ignore[misc]
    if not fits:
        why = "the smallest size: even it sees fewer tokens per parameter than the rule wants"
    elif (hidden, layers) == candidates[-1]:
        why = "the largest size offered"
    elif (
        parameter_count(cell, vocab, embed, *_next(candidates, hidden, layers), tied)
        > MAX_PARAMETERS_PER_CHAR * train_chars
    ):
        why = f"a larger one would exceed {MAX_PARAMETERS_PER_CHAR:g} parameters per training character"
    else:
        why = (
            f"a larger one would see under {target:.1f} tokens per parameter, the rule's target for "
            f"{compute / 1e12:,.3g} TFLOP of training"
        )
    reason = (
        f"{layers}x{hidden} {cell.upper()} ({params / 1e6:.2f}M parameters): about {speed:,.0f} tokens/s here, "
        f"{per_param:.2f} tokens per parameter in {budget_seconds:g}s; {why} (--hidden/--layers to choose)"
    )
    return SizeChoice(hidden, layers, reason, budget_seconds * speed)


# A budget-sized run with no --dropout trains without dropout when it reads its text at most this
# many times: the size rule already fits the model to the tokens it sees, and on a CPU dropout
# slows the LSTM. Measured (docs/performance.md, "Against nanoGPT"), one seed each, the rule's
# sizes: python-stdlib 91 s (0.2 epochs, 2x192) 1.7967 bpc without against 1.8409 with 0.2, in
# 2,607 steps against 1,908; tinyshakespeare 119 s (3.6 epochs, 2x256) 2.1074 against 2.1631,
# 1,985 steps against 1,585. Again later (no flag but --dropout, tinyshakespeare, bf16): 102 s
# (2x256, 4.4 epochs read) 2.1152 against 2.1661, 2,147 steps against 1,450; 300 s (2x384, 6.1
# epochs read, 6.8 foreseen) 2.0484 against 2.0602, 3,000 steps against 2,462: the gain narrows
# as the epochs grow. Longer runs, not measured without it, keep the default.
DROPOUT_FREE_EPOCHS = 7.0


def dropout_for_budget(choice: SizeChoice, train_tokens: int) -> tuple[float, str] | None:
    """(0.0, a note) when a budget-sized run reads its text at most DROPOUT_FREE_EPOCHS times; else None."""
    epochs = choice.tokens / max(train_tokens, 1)
    if epochs > DROPOUT_FREE_EPOCHS:
        return None
    return 0.0, (
        f"dropout 0: in this budget the run reads its text about {epochs:.1f} times, too few to memorise "
        f"it, and dropout slows training on a CPU (--dropout to choose)"
    )


def _next(candidates: tuple[tuple[int, int], ...], hidden: int, layers: int) -> tuple[int, int]:
    return candidates[candidates.index((hidden, layers)) + 1]


# ----------------------------------------------------------------------------- speed probe


def measure_flops_per_sec(
    device: torch.device, precision: str, seconds: float = PROBE_SECONDS, shape: tuple[int, ...] = PROBE_SHAPE
) -> float:
    """Training FLOP/s of a mid-sized LSTM step here: AdamW, random tokens, after one warm-up step.
    shape: (hidden, layers, batch, seq_len)."""
    hidden, layers, batch, seq_len = shape
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, PROBE_VOCAB, (batch, seq_len + 1), generator=generator).to(device)
    model = RNNLanguageModel("lstm", PROBE_VOCAB, 64, hidden, layers, dropout=0.0).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(batch: int, seq_len: int) -> None:
        window = tokens[:batch, : seq_len + 1]
        with autocast_for(device, precision):
            logits, _ = model(window[:, :-1])  # (B, T, V)
        loss = F.cross_entropy(logits.float().reshape(-1, PROBE_VOCAB), window[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    # On the thread count that runs it fastest now, a step of about a fifth of the probe: the
    # full shape on a usual machine, less on a slow or busy one.
    with on_fastest_threads(lambda: step(min(batch, 4), min(seq_len, 8))):
        batch, seq_len = fitting_step(lambda b, t: timed(lambda: step(b, t), device), batch, seq_len, seconds / 5)
        step(batch, seq_len)
        steps, began = 0, time.perf_counter()
        while steps < 2 or time.perf_counter() - began < seconds:
            step(batch, seq_len)
            steps += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - began
    return steps * batch * seq_len * training_flops_per_token("lstm", 64, hidden, layers, PROBE_VOCAB) / elapsed


def speed_key(device: torch.device, precision: str) -> str:
    """What the measured speed depends on: the processor, threads, torch, precision."""
    return f"{machine_key(device, threads=torch.get_num_threads())}|{precision}"


def speed_cache(path: Path | None = None, now: Callable[[], float] = time.time) -> ProbeCache:
    """speed.json next to the token-id cache: the recent probes per key (probes.cache)."""
    return ProbeCache("speed", ("flops",), path, now)


@dataclass(frozen=True)
class MachineSpeed:
    flops_per_sec: float  # the fastest recent probe
    probes: int  # how many recent probes it is the best of
    probed_now: bool  # whether this call ran one


def machine_flops_per_sec(
    device: torch.device,
    precision: str,
    *,
    path: Path | None = None,
    measure: Callable[[torch.device, str], float] = measure_flops_per_sec,
    now: Callable[[], float] = time.time,
) -> MachineSpeed:
    """Training FLOP/s here: the best of the recent probes, probing (and caching) once more
    while there are fewer than SETTLED_PROBES of them."""
    cache, key = speed_cache(path, now), speed_key(device, precision)
    probes = cache.recent(key)
    probed_now = len(probes) < SETTLED_PROBES
    if probed_now:
        probes = cache.add(key, {"flops": measure(device, precision)})
    return MachineSpeed(max(p["flops"] for p in probes), len(probes), probed_now)


BUSY_PROBE_FACTOR = 2.0  # a probe this much slower than a run of this machine was taken while it was busy


def forget_busy_probes(key: str, run_flops_per_sec: float, *, path: Path | None = None) -> int:
    """Forget the speed probes under `key` (a speed_key) that a run's own training speed shows were
    taken on a busy machine: under 1/BUSY_PROBE_FACTOR of what the run did. Without this, three busy
    probes would size every later run (smaller models than the machine affords) until they aged out;
    once forgotten, the next budgeted run probes again, at the probe's own shape. The run's speed is
    never kept as a probe: it was measured at another shape. How many probes went."""
    if not math.isfinite(run_flops_per_sec) or run_flops_per_sec <= 0:
        return 0
    return speed_cache(path).discard(key, lambda p: p["flops"] * BUSY_PROBE_FACTOR < run_flops_per_sec)


def cached_tokens_per_sec(model_cfg: ModelConfig, device: torch.device, precision: str) -> float | None:
    """This machine's training speed for `model_cfg` from the speed cache, in tokens/s (the best
    recent probe over the model's FLOPs per token); None when nothing is cached. Never probes."""
    probes = speed_cache().recent(speed_key(device, precision))
    if not probes:
        return None
    per_token = training_flops_per_token(
        model_cfg.cell, model_cfg.embed_size, model_cfg.hidden_size, model_cfg.num_layers, model_cfg.vocab_size
    )
    return max(p["flops"] for p in probes) / per_token


def size_for_budget(
    model_cfg: ModelConfig, train_cfg: TrainConfig, train_chars: int, vocab: int, placement: Placement
) -> SizeChoice:
    """The choice for a fresh run with --time-budget and no size flags: this machine's training
    speed (the best recent probe, cached) at the run's device and precision, the corpus size, the budget."""
    precision = placement.precision
    speed = machine_flops_per_sec(placement.device, precision)
    choice = choose_size(
        budget_seconds=train_cfg.time_budget or 0.0,
        flops_per_sec=speed.flops_per_sec,
        train_chars=train_chars,
        vocab=vocab,
        embed=model_cfg.embed_size,
        cell=model_cfg.cell,
        tied=model_cfg.tie_weights,
    )
    how = f"best of {speed.probes} probe{'s' if speed.probes > 1 else ''}"
    how += ", one just now" if speed.probed_now else ", measured earlier"
    return replace(choice, reason=f"{choice.reason}; speed {speed.flops_per_sec / 1e9:.0f} GFLOP/s {precision} ({how})")
