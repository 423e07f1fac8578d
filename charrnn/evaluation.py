"""Scoring held-out text with a trained model (`charrnn eval`).

`evaluate_ids` is also what training validates with: the text is cut into parallel streams
with the hidden state carried from window to window, every token is predicted once, and the
total is reported in bits per character (comparable across tokenizers) and bits per token.
With the checkpoint's own stream count and window length, and `validation_only` on the
training corpus, the number is the validation bpc that training reported: exactly, or to float
rounding where the run validated with its rows split over threads (training/split.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import LoadedModel
from .config import TrainConfig
from .data.streams import validation_windows
from .data.tokens import decode_corpus, split_corpus
from .errors import CheckpointError, ConfigError, CorpusError
from .model import HiddenState, select_streams, stream_count
from .runtime import autocast_for
from .tokenizers.char import Tokenizer, show_chars
from .training.distributed import DistContext

LN2 = math.log(2.0)


class StatefulModel(Protocol):
    """What `evaluate_ids` needs of a model: RNNLanguageModel, or a bench model with the same calls."""

    @property
    def training(self) -> bool: ...
    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> HiddenState: ...
    def __call__(self, tokens: torch.Tensor, state: HiddenState | None = None) -> tuple[torch.Tensor, HiddenState]: ...
    def eval(self) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...


@torch.no_grad()
def evaluate_ids(
    model: StatefulModel,
    ids: np.ndarray,
    context_token: int | None,
    *,
    seq_len: int,
    num_streams: int,
    device: torch.device,
    precision: str = "fp32",
    dist: DistContext | None = None,
) -> tuple[float, int]:
    """(total nats, targets scored) over `ids`, every id predicted once, hidden state carried."""
    dist = dist or DistContext()
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    state: HiddenState | None = None
    for x, y, reset in validation_windows(ids, context_token, num_streams, seq_len, dist.rank, dist.world_size):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if reset or state is None:
            state = model.init_state(x.shape[0], device)
        elif stream_count(state) != x.shape[0]:  # the leftover ids continue the last stream
            state = select_streams(state, torch.tensor([stream_count(state) - 1], device=device))
        with autocast_for(device, precision):
            logits, state = model(x, state)
        losses = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total += losses.double()
        count += (y >= 0).sum()
    model.train(was_training)
    total, count = dist.all_reduce_sum(total), dist.all_reduce_sum(count)
    return float(total), int(count)


@dataclass
class TextScore:
    """How well a model predicts one text."""

    source: str
    chars: int  # characters scored: the denominator of bits per character
    tokens: int  # tokens scored: the denominator of bits per token
    nats: float  # total negative log-likelihood
    bits_per_char: float
    bits_per_token: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _score(source: str, nats: float, chars: int, tokens: int) -> TextScore:
    return TextScore(
        source=source,
        chars=chars,
        tokens=tokens,
        nats=nats,
        bits_per_char=nats / max(chars, 1) / LN2,
        bits_per_token=nats / max(tokens, 1) / LN2,
    )


def start_context(tokenizer: Tokenizer) -> int | None:
    """The id a text is predicted from when nothing precedes it: a newline when the vocabulary
    has one (a file starts like a line does), so that its first character is scored too."""
    if tokenizer.unknown_chars("\n"):
        return None
    ids = tokenizer.encode("\n")
    return int(ids[-1]) if len(ids) else None


def train_settings(loaded: LoadedModel) -> TrainConfig:
    """The checkpoint's training settings (streams, window, validation split), checked."""
    try:
        return TrainConfig.from_dict(loaded.meta.get("train", {}))
    except (TypeError, ValueError) as exc:  # ConfigError is a ValueError
        raise CheckpointError(f"{loaded.path}: unreadable training settings in the checkpoint ({exc})") from None


def checkpoint_precision(loaded: LoadedModel, device: torch.device) -> str:
    """The precision the model was validated in during training, where `device` runs it; else fp32.
    (bf16 and fp32 differ in the 4th decimal of bpc: same precision, same number.)"""
    from .runtime import resolve_precision

    wanted = loaded.meta.get("precision", "fp32")
    if loaded.meta.get("device_type") != device.type or wanted not in ("fp32", "bf16", "fp16"):
        return "fp32"
    try:
        return resolve_precision(wanted, device)[0]
    except ConfigError:
        return "fp32"


def read_text(
    path: Path | str,
    encoding: str = "utf-8",
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    log: Callable[[str], None] = lambda _: None,
) -> str:
    """A text file, a directory of them, or a ready corpus name, decoded and normalised the way
    training reads a corpus (BOM dropped, line endings), so that the same text gives the same ids."""
    from .data.corpora import resolve_corpus

    corpus = resolve_corpus(str(path), log, encoding=encoding, include=include, exclude=exclude)
    return decode_corpus(corpus, encoding)


def read_validation_text(
    path: Path | str,
    cfg: TrainConfig,
    encoding: str = "utf-8",
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    log: Callable[[str], None] = lambda _: None,
) -> tuple[str, str]:
    """(training text, validation text) of a corpus, split as a run with settings `cfg` split it."""
    from .data.corpora import resolve_corpus

    corpus = resolve_corpus(str(path), log, encoding=encoding, include=include, exclude=exclude)
    split = split_corpus(corpus, cfg.val_frac, cfg.val_split, encoding)
    return split.train, split.val


def evaluate_text(
    loaded: LoadedModel,
    text: str,
    *,
    source: str = "<text>",
    context_token: int | None = None,
    use_start_context: bool = True,
    device: torch.device | str = "cpu",
    num_streams: int | None = None,
    seq_len: int | None = None,
    precision: str | None = None,
) -> TextScore:
    """Score `text` (every token predicted once, hidden state carried).

    Streams and window length default to the checkpoint's validation settings, which is what
    makes the result match training's validation bpc (streams start from a zero state, so
    their number changes the figure slightly).
    """

    tokenizer = loaded.tokenizer
    unknown = tokenizer.unknown_chars(text)
    if unknown:
        raise CorpusError(
            f"{source}: {len(unknown)} character{'s' if len(unknown) > 1 else ''} the model never saw: "
            f"{show_chars(unknown)} (the model cannot score them)"
        )
    if not text:
        raise CorpusError(f"{source}: no text to evaluate")
    cfg = train_settings(loaded)
    ids = tokenizer.encode(text)
    if context_token is None and use_start_context:
        context_token = start_context(tokenizer)
    device = torch.device(device)
    loaded.model.to(device)
    nats, count = evaluate_ids(
        loaded.model,
        ids,
        context_token,
        seq_len=seq_len or cfg.seq_len,
        num_streams=num_streams or cfg.eval_batch_size,
        device=device,
        precision=precision or checkpoint_precision(loaded, device),
    )
    # Without any context the first token is not predicted; its characters are not scored either.
    chars = len(text) if context_token is not None else len(text) - len(tokenizer.decode(ids[:1]))
    return _score(source, nats, chars, count)


def evaluate_files(
    loaded: LoadedModel,
    paths: list[Path],
    *,
    validation_only: bool = False,
    encoding: str = "utf-8",
    device: torch.device | str = "cpu",
    num_streams: int | None = None,
    seq_len: int | None = None,
    precision: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    log: Callable[[str], None] = lambda _: None,
) -> tuple[list[TextScore], TextScore]:
    """Scores of each file and of all of them together (totals, not a mean of ratios).

    `validation_only`: score only the part of each file that training held out (the last
    --val-frac, cut as training cuts it), predicted from the last training token, as training
    did. On the training corpus this reproduces the validation bpc of the checkpoint.
    """
    scores = []
    train_cfg = train_settings(loaded)
    for path in paths:
        context = None
        if not validation_only:
            text = read_text(path, encoding, include=include, exclude=exclude, log=log)
        else:
            train_text, text = read_validation_text(
                path, train_cfg, encoding, include=include, exclude=exclude, log=log
            )
            # The whole training part, not its tail: a subword tokenizer's last piece may depend on more.
            train_ids: np.ndarray | list[int] = loaded.tokenizer.encode(train_text) if train_text else []
            context = int(train_ids[-1]) if len(train_ids) else None
        scores.append(
            evaluate_text(
                loaded,
                text,
                source=str(path),
                context_token=context,
                use_start_context=not validation_only,
                device=device,
                num_streams=num_streams,
                seq_len=seq_len,
                precision=precision,
            )
        )
    total = _score(
        "total",
        sum(s.nats for s in scores),
        sum(s.chars for s in scores),
        sum(s.tokens for s in scores),
    )
    return scores, total
