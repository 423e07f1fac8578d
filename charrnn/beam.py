"""Beam search: the most likely continuation of a prime, K hypotheses at a time.

The prime runs through the fused module once; the live hypotheses then advance together as one
batch of `FastStepper.step` (one small matmul per layer for all of them). At each step the K
best one-token extensions of the live hypotheses (by log-probability) are kept; a hypothesis
ends where the stop string appears or when it has `length` characters (counted and cut as
`charrnn sample` does, whatever the tokenizer), and is set aside. The search ends when K
hypotheses have ended, when none is live, or (no length penalty) when no live one can still
beat the best ended one, since log-probabilities only fall as a text grows.

Ended hypotheses are ranked by score = log-probability / ((5 + characters) / 6) ** A, the
length penalty of Wu et al. 2016 (GNMT): A = 0 ranks by log-probability alone; A > 0 favours
longer texts (it matters only where texts end at different lengths: with a stop string).

Memory: the state and the step's scores of K hypotheses (K x hidden x layers, K x vocabulary),
and each live text as a chain of pieces that shares the prefix hypotheses have in common.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

from .errors import ConfigError
from .model import RNNLanguageModel, eval_mode, map_state
from .sample import _context_ids, tuned_stepper
from .stepper import torch_ops_beside
from .tokenizers.char import Tokenizer

# Wider beams cost K times the time and memory of --temp 0 and rarely change the text.
MAX_BEAM = 1000


def check_beam(width: int, length_penalty: float) -> None:
    """ConfigError for a beam width or length penalty the search cannot use."""
    if not 1 <= width <= MAX_BEAM:
        raise ConfigError(f"--beam must be between 1 and {MAX_BEAM} (got {width})")
    if not math.isfinite(length_penalty) or length_penalty < 0:
        raise ConfigError(f"--length-penalty must be a number >= 0 (got {length_penalty})")


def length_penalized(logprob: float, chars: int, alpha: float) -> float:
    """GNMT's score: logprob / ((5 + chars) / 6) ** alpha."""
    return logprob / ((5 + chars) / 6) ** alpha if alpha else logprob


@dataclass(frozen=True)
class Hypothesis:
    """One ended continuation: `text` (after the prime, cut as `charrnn sample` cuts it),
    the ids it was drawn as, their summed log-probability (natural log), its score, and
    whether it ended at the stop string (else at the length limit)."""

    text: str
    token_ids: tuple[int, ...]
    logprob: float
    score: float
    stopped: bool


# A live hypothesis's text: (piece, token id, previous link) back to None, shared by descendants.
_Link = Optional[tuple[str, int, Any]]


@dataclass
class _Live:
    link: _Link
    decoder: Any
    produced: int  # characters so far
    tail: str  # the last len(stop) - 1 characters (prime included), to find a stop across pieces


@torch.inference_mode()
def beam_search(
    model: RNNLanguageModel,
    tokenizer: Tokenizer,
    width: int,
    length: int,
    *,
    prime: str = "",
    stop: str | None = None,
    length_penalty: float = 0.0,
) -> list[Hypothesis]:
    """The ended hypotheses of a `width`-beam search, best score first (at most `width`).
    width 1 is greedy decoding: the text of `charrnn sample --temp 0`."""
    check_beam(width, length_penalty)
    with eval_mode(model):
        return _search(model, tokenizer, width, length, prime, stop, length_penalty)


def _search(
    model: RNNLanguageModel, tokenizer: Tokenizer, width: int, length: int, prime: str, stop: str | None, alpha: float
) -> list[Hypothesis]:
    device = model.head.weight.device
    context = torch.tensor([_context_ids(tokenizer, prime)], dtype=torch.long, device=device)
    logits, state = model(context)
    logits = logits[:, -1].float()
    tail = prime[max(0, len(prime) - len(stop) + 1) :] if stop and len(stop) > 1 else ""
    live = [_Live(None, tokenizer.stream_decoder(), 0, tail)]
    scores = torch.zeros(1, device=device, dtype=torch.float64)
    ended: list[Hypothesis] = []
    if length == 0:
        return [Hypothesis("", (), 0.0, 0.0, False)]
    stepper = tuned_stepper(model, streams=width)
    with torch_ops_beside(stepper):  # beam's scores: one thread, when the steps are numpy's
        while live and len(ended) < width:
            logp = torch.log_softmax(logits.double(), dim=-1)  # (B, V); float64 keeps argmax's order
            total = (scores[:, None] + logp).flatten()
            top = torch.topk(total, min(width, total.numel()))
            vocab = logp.shape[1]
            parents, tokens = (top.indices // vocab).tolist(), (top.indices % vocab).tolist()
            keep, kept = [], []
            for value, parent, token in zip(top.values.tolist(), parents, tokens):
                child = _extend(live[parent], token, length, stop)
                if isinstance(child, _Live):
                    keep.append(parent)
                    kept.append((child, token, value))
                else:
                    text, stopped = child
                    chars = len(text)
                    ids = _ids(live[parent].link) + (token,)
                    ended.append(Hypothesis(text, ids, value, length_penalized(value, chars, alpha), stopped))
            if not kept or _settled(ended, kept, alpha):
                break
            live = [c for c, _, _ in kept]
            scores = torch.tensor([v for _, _, v in kept], device=device, dtype=torch.float64)
            index = torch.tensor(keep, device=device)
            token_batch = torch.tensor([t for _, t, _ in kept], device=device)
            logits, state = stepper.step(token_batch, map_state(lambda t: t.index_select(1, index), state))
    return sorted(ended, key=lambda h: -h.score)[:width]


def _settled(ended: list[Hypothesis], kept: list[tuple[Any, int, float]], alpha: float) -> bool:
    """No live hypothesis can still beat the best ended one: without a length penalty a text's
    log-probability only falls as it grows."""
    return alpha == 0 and bool(ended) and max(h.score for h in ended) >= max(v for _, _, v in kept)


def _extend(parent: _Live, token: int, length: int, stop: str | None) -> _Live | tuple[str, bool]:
    """The parent extended by `token`: a new _Live, or (text, stopped) where it ends."""
    decoder = copy.deepcopy(parent.decoder, _shared(parent.decoder))  # siblings each go on from it
    piece = decoder.feed(token)[: length - parent.produced]
    tail = parent.tail
    if stop and piece:
        window = tail + piece
        at = window.find(stop)
        if at >= 0:
            return _text(parent.link) + piece[: at + len(stop) - len(tail)], True
        tail = window[-(len(stop) - 1) :] if len(stop) > 1 else ""
    produced = parent.produced + len(piece)
    if produced >= length:
        return _text(parent.link) + piece, False
    return _Live((piece, token, parent.link), decoder, produced, tail)


def _shared(decoder: Any) -> dict[int, Any]:
    """deepcopy's memo that keeps a stream decoder's tables (lists of pieces) shared, not copied:
    only its pending state (a partial UTF-8 character) is the hypothesis's own."""
    return {id(v): v for v in vars(decoder).values() if isinstance(v, (list, tuple))}


def _pieces(link: _Link) -> list[tuple[str, int]]:
    out = []
    while link is not None:
        piece, token, link = link
        out.append((piece, token))
    return out[::-1]


def _text(link: _Link) -> str:
    return "".join(piece for piece, _ in _pieces(link))


def _ids(link: _Link) -> tuple[int, ...]:
    return tuple(token for _, token in _pieces(link))
