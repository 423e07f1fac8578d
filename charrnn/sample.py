"""Text generation: temperature, top-k, top-p, a prime, a stop string, streaming output.

The prime runs through the fused module in one call (fast for long primes); each new token
then goes through `FastStepper`, one small matmul per layer. `fast=False` uses the plain
module per step instead: slower, and the reference the fast path is tested against.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import replace
from typing import Callable, Generator, Iterator

import torch

from .config import SampleConfig
from .errors import ConfigError
from .model import HiddenState, RNNLanguageModel
from .probes.threads import backend_cache, tune_stepper
from .stepper import FastStepper
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
    was_training = model.training
    model.eval()
    try:
        yield from _generate(model, tokenizer, cfg, prime, generator, fast)
    finally:
        model.train(was_training)


def _generate(
    model: RNNLanguageModel,
    tokenizer: Tokenizer,
    cfg: SampleConfig,
    prime: str,
    generator: torch.Generator | None,
    fast: bool,
) -> Generator[str, None, None]:
    length, stop = cfg.length, cfg.stop
    if prime:
        yield prime
    device = model.head.weight.device
    context = torch.tensor([_context_ids(tokenizer, prime)], dtype=torch.long, device=device)  # (1, T)
    logits, state = model(context)  # prime through the fused module
    logits = logits[:, -1]  # (1, V)
    stepper = tuned_stepper(model, streams=1) if fast else None
    decoder = tokenizer.stream_decoder()
    produced = 0
    # A stop string may begin inside the prime, but must end in new text: keep len(stop) - 1 chars.
    tail = prime[max(0, len(prime) - len(stop) + 1) :] if stop and len(stop) > 1 else ""
    while produced < length:
        token = choose_next(logits, cfg.temperature, cfg.top_k, cfg.top_p, generator)  # (1,)
        piece = decoder.feed(int(token))
        if piece:
            piece = piece[: length - produced]
            if stop:
                window = tail + piece
                at = window.find(stop)
                if at >= 0:
                    yield piece[: at + len(stop) - len(tail)]
                    return
                tail = window[-(len(stop) - 1) :] if len(stop) > 1 else ""
            produced += len(piece)
            yield piece
        if produced >= length:
            break
        logits, state = _advance(model, stepper, token, state)
    rest = decoder.flush()[: length - produced]
    if rest:
        yield rest


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


# Why generate_documents dropped a document (for its `on_drop`).
DROPPED_TOO_LONG = "longer than the length limit"
DROPPED_WRONG_START = "does not begin as asked"


def generate_documents(
    model: RNNLanguageModel,
    tokenizer: Tokenizer,
    count: int,
    cfg: SampleConfig = SampleConfig(),
    *,
    start: str = "",
    renumber: str | None = None,
    max_chars: int = 2000,
    attempts: int = 10,
    generator: torch.Generator | None = None,
    on_drop: Callable[[str], None] | None = None,
) -> Iterator[str]:
    """Yield up to `count` whole documents, each as the model wrote it between two blank lines
    (without them). The model starts conditioned on a blank line, i.e. at a document's start;
    documents that do not begin with `start` or run past `max_chars` without ending are dropped.
    With `renumber` (a field such as "X:"), the document's line starting with it becomes
    `X:1`, `X:2`, ... in output order. Stops after `count * attempts` documents were drawn.
    Drawn with cfg.temperature, top_k and top_p (its length and stop do not apply).
    `on_drop` hears of each dropped document: DROPPED_TOO_LONG or DROPPED_WRONG_START."""
    if count < 1:
        raise ConfigError(f"the number of documents must be at least 1 (got {count})")
    # Conditioning on a blank line puts the model at the start of a document.
    prime = "\n\n" if not tokenizer.unknown_chars("\n") else ""
    produced = drawn = 0
    buffer = ""
    overflow = False  # the current document ran past max_chars: drop it at its end
    first = True  # text before the first blank line may be the tail of a document
    pieces = generate(
        model,
        tokenizer,
        replace(cfg, length=count * attempts * max_chars, stop=None),
        prime=prime,
        generator=generator,
    )
    try:
        for piece in pieces:
            buffer += piece
            if first and prime:
                buffer = buffer[len(prime) :]  # the prime is context, not output
                first = False
            while "\n\n" in buffer:
                doc, buffer = buffer.split("\n\n", 1)
                doc = doc.strip("\n")
                if overflow:  # the tail of a document that ran too long ends here
                    overflow, doc = False, ""
                if not doc:
                    continue
                drawn += 1
                if doc.startswith(start):
                    produced += 1
                    yield _renumber(doc, renumber, produced) if renumber else doc
                elif on_drop is not None:
                    on_drop(DROPPED_WRONG_START)
                if produced >= count or drawn >= count * attempts:
                    return
            if len(buffer) > max_chars and not overflow:  # counted once, however long it runs
                overflow, buffer = True, ""
                drawn += 1
                if on_drop is not None:
                    on_drop(DROPPED_TOO_LONG)
    finally:
        pieces.close()


def _renumber(doc: str, field: str, number: int) -> str:
    lines = doc.split("\n")
    for i, line in enumerate(lines):
        if line.startswith(field):
            lines[i] = f"{field}{number}"
            break
    return "\n".join(lines)
