"""Text generation: temperature, top-k, top-p, a prime, a stop string, streaming output.

The prime runs through the fused module in one call (fast for long primes); each new token
then goes through `FastStepper`, one small matmul per layer. `fast=False` uses the plain
module per step instead: slower, and the reference the fast path is tested against.
`generate_samples` draws several samples at once, as the rows of one batch; whole documents
(--docs, --tunes) are `documents.py`'s.
"""

from __future__ import annotations

import time
import weakref
from typing import Generator, Iterator

import torch

from .config import SampleConfig
from .errors import ConfigError
from .model import HiddenState, RNNLanguageModel, eval_mode, select_streams, state_from_tensors, state_tensors
from .probes.threads import backend_cache, tune_stepper
from .stepper import FastStepper, torch_ops_beside
from .tokenizers.char import Tokenizer, show_chars

# Below this a temperature rounds to 0 in float32 (and 1/T overflows it): the draw runs in float64.
FLOAT32_TINY = torch.finfo(torch.float32).tiny


def choose_next(
    logits: torch.Tensor,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits (B, V) -> token ids (B,). Temperature 0 is argmax; top-k then top-p narrow the
    candidates before drawing. The draw uses `generator`, so a seed fixes the text."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1)
    if temperature < FLOAT32_TINY:
        logits = logits.double()
    # Softmax ignores a shift by the max; after it every value is <= 0, which no temperature
    # overflows (a tiny one divided into the raw logits made inf, then NaN probabilities).
    scaled = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    return _draw(scaled, top_k, top_p, generator)


def _draw(logits: torch.Tensor, top_k: int, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        # Drop a token when the tokens ranked above it already reach top_p (the top one stays).
        drop = (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) >= top_p
        drop[..., 0] = False  # a top_p below float32's smallest (1e-238) reads as 0: it would drop all
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    # One draw per row in proportion to probs, a third of torch.multinomial's time: give each
    # token an exponential clock E (rate 1) and take the largest p / E, i.e. the first to ring of
    # clocks E / p with rates p -- token i first with probability p_i / sum(p). A clock of 0
    # would make 0 / 0 for a dropped token; the smallest float keeps every clock positive.
    clocks = torch.empty_like(probs).exponential_(generator=generator).clamp_(min=FLOAT32_TINY)
    return (probs / clocks).argmax(dim=-1)


def check_prime(tokenizer: Tokenizer, prime: str, drop_unknown: bool) -> tuple[str, list[str]]:
    """The prime with unknown characters handled: an error naming them, or dropped on request."""
    unknown = tokenizer.unknown_chars(prime)
    if not unknown:
        return prime, []
    if not drop_unknown:
        raise ConfigError(
            f"--prime has {len(unknown)} character{'s' if len(unknown) > 1 else ''} the model never saw: "
            f"{show_chars(unknown)} (add --drop-unknown to leave them out)"
        )
    bad = set(unknown)
    return "".join(c for c in prime if c not in bad), unknown


def _context_ids(tokenizer: Tokenizer, prime: str) -> list[int]:
    """Ids to condition on. With no prime, a newline (when the vocabulary has one) sets the
    model at the start of a line; it is context only and is not printed."""
    if prime:
        return [int(i) for i in tokenizer.encode(prime)]
    if not tokenizer.unknown_chars("\n"):
        ids = [int(i) for i in tokenizer.encode("\n")]
        if ids:
            return ids[-1:]
    return [0]


@torch.inference_mode()
def generate(
    model: RNNLanguageModel,
    tokenizer: Tokenizer,
    cfg: SampleConfig,
    *,
    prime: str = "",
    generator: torch.Generator | None = None,
    fast: bool = True,
) -> Generator[str, None, None]:
    """Yield text as it is generated: the prime first, then `cfg.length` new characters (fewer
    when `cfg.stop` appears; the sample then ends with it). Drawn with cfg.temperature, top_k,
    top_p; `generator` fixes the draws (cfg.seed is the caller's to turn into one)."""
    with eval_mode(model):
        yield from _generate(model, tokenizer, cfg, prime, generator, fast)


def _generate(
    model: RNNLanguageModel,
    tokenizer: Tokenizer,
    cfg: SampleConfig,
    prime: str,
    generator: torch.Generator | None,
    fast: bool,
) -> Generator[str, None, None]:
    if prime:
        yield prime
    logits, state = _primed(model, tokenizer, prime)  # (1, V)
    stepper = tuned_stepper(model, streams=1) if fast else None
    text = _SampleText(tokenizer, cfg, prime)
    while not text.done:
        token = choose_next(logits, cfg.temperature, cfg.top_k, cfg.top_p, generator)  # (1,)
        piece = text.feed(int(token))
        if piece:
            yield piece
        if not text.done:
            logits, state = _advance(model, stepper, token, state)


def _primed(model: RNNLanguageModel, tokenizer: Tokenizer, prime: str) -> tuple[torch.Tensor, HiddenState]:
    """The logits (1, V) for the first new token and the state after the prime, which runs
    through the fused module in one call."""
    device = model.head.weight.device
    context = torch.tensor([_context_ids(tokenizer, prime)], dtype=torch.long, device=device)  # (1, T)
    logits, state = model(context)
    return logits[:, -1], state


class _SampleText:
    """One sample's new text as its tokens come: decoded, cut at cfg.length characters or just
    after cfg.stop, which may begin inside the prime but must end in new text."""

    def __init__(self, tokenizer: Tokenizer, cfg: SampleConfig, prime: str) -> None:
        self.decoder = tokenizer.stream_decoder()
        self.length, self.stop = cfg.length, cfg.stop
        self.produced = 0
        self.done = self.length <= 0
        stop = self.stop
        self.tail = prime[max(0, len(prime) - len(stop) + 1) :] if stop and len(stop) > 1 else ""  # len(stop) - 1 chars

    def feed(self, token: int) -> str:
        """The text `token` completes (often all of it; "" while a multi-byte character is partial)."""
        piece = self.decoder.feed(token)[: self.length - self.produced]
        if piece and self.stop:
            window = self.tail + piece
            at = window.find(self.stop)
            if at >= 0:
                self.done = True
                return piece[: at + len(self.stop) - len(self.tail)]
            self.tail = window[-(len(self.stop) - 1) :] if len(self.stop) > 1 else ""
        self.produced += len(piece)
        self.done = self.produced >= self.length
        return piece


# The most samples stepped as one batch: the texts of a batch but its first wait in memory
# until their turn on stdout, so --num-samples 10000 runs in batches of this many.
MAX_STREAMS = 64


@torch.inference_mode()
def generate_samples(
    model: RNNLanguageModel,
    tokenizer: Tokenizer,
    cfg: SampleConfig,
    *,
    prime: str = "",
    generator: torch.Generator | None = None,
    fast: bool = True,
) -> Iterator[tuple[int, str]]:
    """cfg.num_samples samples drawn at once, as rows of one batch: a step multiplies the
    weights by all rows together (a matrix product, which keeps every core busy, where one
    stream's matrix-vector product waits on memory). Yields (sample index, piece) in sample
    order: the first sample's pieces as they come, each later one's text once it is its turn.
    Each sample is cut and stopped as `generate`'s is; with one sample, it is the same text for
    the same seed (with several, the rows share the random stream: other texts)."""
    with eval_mode(model):
        for first in range(0, cfg.num_samples, MAX_STREAMS):
            count = min(MAX_STREAMS, cfg.num_samples - first)
            for index, piece in _in_order(_batch(model, tokenizer, cfg, prime, count, generator, fast), count):
                yield first + index, piece


def _batch(
    model: RNNLanguageModel,
    tokenizer: Tokenizer,
    cfg: SampleConfig,
    prime: str,
    count: int,
    generator: torch.Generator | None,
    fast: bool,
) -> Iterator[tuple[int, str | None]]:
    """(row, piece) as the rows' texts grow, and (row, None) when a row's text is complete."""
    logits, state = _primed(model, tokenizer, prime)  # the prime once: (1, V), every row starts there
    logits = logits.expand(count, -1)  # (B, V)
    parts = [t.expand(-1, count, -1).contiguous() for t in state_tensors(state)]  # each (L, B, H)
    hidden = state_from_tensors(parts, model.cell)
    stepper = tuned_stepper(model, streams=count) if fast else None
    texts = [_SampleText(tokenizer, cfg, prime) for _ in range(count)]
    rows = list(range(count))  # the batch's rows: samples not yet complete
    for row in rows:
        if prime:
            yield row, prime
        if texts[row].done:
            yield row, None
    rows = [row for row in rows if not texts[row].done]
    while rows:
        with torch_ops_beside(stepper):  # the draw: one thread, when the steps are numpy's
            tokens = choose_next(logits, cfg.temperature, cfg.top_k, cfg.top_p, generator)  # (B,)
        for row, token in zip(rows, tokens.tolist()):
            piece = texts[row].feed(token)
            if piece:
                yield row, piece
            if texts[row].done:
                yield row, None
        going = [i for i, row in enumerate(rows) if not texts[row].done]
        if len(going) < len(rows):  # the complete rows leave the batch
            keep = torch.tensor(going, dtype=torch.long, device=tokens.device)
            tokens, logits = tokens[keep], logits[keep]
            hidden = select_streams(hidden, keep)
            rows = [rows[i] for i in going]
        if rows:
            logits, hidden = _advance(model, stepper, tokens, hidden)


def _in_order(events: Iterator[tuple[int, str | None]], count: int) -> Iterator[tuple[int, str]]:
    """`_batch`'s events reordered by sample: row 0's pieces as they come; a later row's text,
    kept until every row before it is complete, then as it comes. Each row yields at least once."""
    kept: list[list[str]] = [[] for _ in range(count)]
    complete = [False] * count
    current = 0
    yield 0, ""  # every sample yields at least once, an empty one too
    for row, piece in events:
        if piece is None:
            complete[row] = True
        elif row == current:
            yield row, piece
        else:
            kept[row].append(piece)
        while current < count and complete[current]:
            current += 1
            if current < count:
                yield current, "".join(kept[current])
                kept[current] = []


# A measured thread count is reused for this long per model and stream count (charrnn serve
# samples the same model for every request); how busy the machine is changes on that scale.
TUNED_FOR_SECONDS = 30.0
_tuned: weakref.WeakKeyDictionary[RNNLanguageModel, dict[int, tuple[str, int | None, float]]] = (
    weakref.WeakKeyDictionary()
)


def tuned_stepper(model: RNNLanguageModel, streams: int) -> FastStepper:
    """The single-step path for `streams` streams at a time, on the backend and thread count
    measured fastest for it on this machine now (torch or numpy's BLAS, one thread or all: it
    depends on the CPU, its BLAS and how busy it is)."""
    stepper = FastStepper(model)
    known = _tuned.setdefault(model, {}).get(streams)
    if known is not None and time.monotonic() - known[2] < TUNED_FOR_SECONDS:
        stepper.backend, stepper.threads = known[0], known[1]
    else:
        tune_stepper(stepper, streams, cache=backend_cache())
        _tuned[model][streams] = (stepper.backend, stepper.threads, time.monotonic())
    return stepper


def _advance(
    model: RNNLanguageModel, stepper: FastStepper | None, token: torch.Tensor, state: HiddenState
) -> tuple[torch.Tensor, HiddenState]:
    if stepper is not None:
        return stepper.step(token, state)
    logits, state = model(token[:, None], state)
    return logits[:, -1], state
