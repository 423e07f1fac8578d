"""Tunes that pass the checker: `sample --tunes N --valid-only`.

A model's tunes are drawn one by one and checked (`check`) until N pass, within a bound on
attempts; every drawn tune counts as an attempt, those the sampler drops (no `X:` start, no
end within the length limit) included. Each rejection is counted by its reason, so the user
learns why the others failed. The MIDI file of each kept tune is rendered on the way.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from ..errors import ConfigError
from .check import DEFAULT_ALLOWANCE, MisfitAllowance, TuneCheck, check_tune_midi

ATTEMPTS_PER_TUNE = 10  # the default bound: 10 drawn tunes for each one asked
NO_MIDI = "no MIDI file"


@dataclass
class DrawnTune:
    """A tune kept (valid, or any tune when validity is not asked for), renumbered X:n."""

    text: str
    check: TuneCheck
    midi: bytes | None = None


@dataclass
class TuneDraw:
    """How a draw went: tunes drawn, tunes kept, and rejections counted by reason."""

    asked: int
    max_attempts: int
    drawn: int = 0
    kept: list[DrawnTune] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    kept_as: str = "valid"  # what a kept tune is called in the summary ("kept" when validity is not asked)

    @property
    def complete(self) -> bool:
        return len(self.kept) >= self.asked

    def reject(self, reason: str) -> None:
        self.drawn += 1
        self.rejected[reason] += 1

    def summary(self) -> str:
        """One line: 'drew 14 tunes: 3 valid; rejected: 9 bars do not fit the meter, 2 ...'."""
        line = f"drew {self.drawn} tune{'s' * (self.drawn != 1)}: {len(self.kept)} {self.kept_as}"
        if self.rejected:
            line += "; rejected: " + ", ".join(
                f"{n} {why}" for why, n in sorted(self.rejected.items(), key=lambda r: (-r[1], r[0]))
            )
        return line


def check_max_attempts(count: int, max_attempts: int | None) -> int:
    """The bound on attempts for `count` tunes: `max_attempts`, or ATTEMPTS_PER_TUNE per tune."""
    if max_attempts is None:
        return ATTEMPTS_PER_TUNE * count
    if max_attempts < count:
        raise ConfigError(f"--max-attempts must be at least --tunes ({count}), got {max_attempts}")
    return max_attempts


def draw_tunes(
    documents: Iterable[str],
    draw: TuneDraw,
    *,
    valid_only: bool = True,
    render_midi: bool = False,
    allowance: MisfitAllowance = DEFAULT_ALLOWANCE,
) -> Iterator[DrawnTune]:
    """Check each drawn document and yield those kept, renumbered X:1, X:2, ..., until
    `draw.asked` are kept or `draw.max_attempts` were drawn (counted in `draw`, with the
    sampler's own drops, which it reports with `draw.reject`). With `valid_only` a tune must
    pass the checker, and with `render_midi` also render as MIDI."""
    for doc in documents:
        if draw.complete or draw.drawn >= draw.max_attempts:  # the sampler's drops count too
            return
        check, midi = check_tune_midi(doc, len(draw.kept) + 1, allowance, render=render_midi)
        if valid_only and not check.valid:
            draw.reject(check.reason)
        elif valid_only and render_midi and midi is None:
            draw.reject(NO_MIDI)
        else:
            draw.drawn += 1
            text = re.sub(r"^X:.*$", f"X:{len(draw.kept) + 1}", doc, count=1, flags=re.M)
            tune = DrawnTune(text, check, midi)
            draw.kept.append(tune)
            yield tune
        if draw.complete or draw.drawn >= draw.max_attempts:  # draw no further document
            return
