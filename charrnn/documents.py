"""Whole documents from the sampler (`charrnn sample --docs N`, `--tunes N`): the text the
model writes between two blank lines, one document at a time, renumbered on request."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterator

import torch

from .config import SampleConfig
from .errors import ConfigError
from .model import RNNLanguageModel
from .sample import generate
from .tokenizers.char import Tokenizer

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
                    yield renumber_field(doc, renumber, produced) if renumber else doc
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


def renumber_field(doc: str, field: str, number: int) -> str:
    """`doc` with its first line starting with `field` (such as "X:") made `field` + number."""
    lines = doc.split("\n")
    for i, line in enumerate(lines):
        if line.startswith(field):
            lines[i] = f"{field}{number}"
            break
    return "\n".join(lines)
