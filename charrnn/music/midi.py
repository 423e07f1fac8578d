"""ABC tune text -> music21 score -> MIDI bytes, without music21 ever touching a file.

music21's `converter.parse` reads a string that names an existing file as that file's path,
and `parseFile` then loads (or writes) a pickle in music21's scratch directory: a tune whose
text is a path could make charrnn unpickle a file someone planted there. Tunes are therefore
parsed with `parseData` (the text is ABC data, never a path or a URL), and MIDI is built in
memory; the caller decides where the bytes go.

MIDI export works around two ways in which music21 fails on tunes it reads: its ABC reader
puts one TimeSignature object into several measures when it cuts a too-long bar, which its
MIDI writer then refuses ("already found in this Stream"); and repeats it cannot expand
("badly formed repeats"), where the tune is written as it stands, each section once.
"""

from __future__ import annotations

import copy
import re
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from .folk import require_music21

if TYPE_CHECKING:
    from music21.stream import Score, Stream

# `:|:` (end one repeat, start the next) loses its start in music21's ABC reader, and an end
# repeat with no start since the previous one makes music21 repeat everything before it: a
# tune of 13 such sections became 2^14 bars and hung its MIDI export (a real folk-abc tune).
# music21 reads `::` and `:||:`, the other spellings of the same bar line, as both; starts
# that a tune leaves implied are marked before export (`_mark_implied_starts`).
_END_START_REPEAT = re.compile(r"(?<![|:]):\|:(?![|:])")


def parse_abc(tune: str) -> Score:
    """The music21 stream (Score, or Opus for several tunes) of ABC `tune` text. Raises what
    music21 raises on text it cannot read."""
    require_music21()
    from music21 import converter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # One tune is a Score (parseData's type also allows Part and Opus); code that gets
        # another kind fails at `.parts`, which callers treat as a tune that does not parse.
        return cast("Score", converter.parseData(_END_START_REPEAT.sub(":||:", tune), format="abc"))


def score_midi(score: Score) -> tuple[bytes, bool]:
    """(MIDI file bytes, whether the repeats were expanded) of a parsed tune. The score keeps
    its notes and meters (an element shared by several measures becomes one copy in each;
    no copy of the whole score, which would cost as much as the export). Raises what music21
    raises when it cannot render the score at all."""
    music21 = require_music21()
    _unshare_elements(score)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _mark_implied_starts(music21, score)
        try:
            return _midi_bytes(music21, score), True
        except music21.repeat.ExpanderException:
            return _midi_bytes(music21, _unexpanded(music21, score)), False


def tune_midi(tune: str) -> bytes:
    """The MIDI file of ABC `tune` text (repeats expanded where music21 can)."""
    return score_midi(parse_abc(tune))[0]


def _midi_bytes(music21: ModuleType, score: Score) -> bytes:
    midi_file = music21.midi.translate.music21ObjectToMidiFile(score)
    data: bytes = midi_file.writestr()
    return data


def _unshare_elements(score: Score) -> None:
    """Give each measure its own copy of an element that sits in several (music21's ABC reader
    reuses the tune's TimeSignature object after a bar it cut in two)."""
    seen: set[int] = set()
    for measure in score.recurse().getElementsByClass("Measure"):
        for element in list(measure.getElementsByClass(("TimeSignature", "KeySignature", "MetronomeMark"))):
            if id(element) in seen:
                measure.replace(element, copy.deepcopy(element))
            else:
                seen.add(id(element))


def _mark_implied_starts(music21: ModuleType, score: Score) -> None:
    """Give each end repeat that follows an earlier one with no start repeat between them its
    start: the bar after the earlier end, as ABC means `A :| B :|` (AABB). music21 would
    instead replay everything before it, earlier repeats included (AA AAB AAB), doubling
    the tune at each such bar."""
    parts: list[Stream[Any]] = list(score.parts) or [score]
    for part in parts:
        measures = list(part.getElementsByClass("Measure"))
        last_end, started = None, False
        for i, measure in enumerate(measures):
            started |= _repeat_direction(measure.leftBarline) == "start"
            if _repeat_direction(measure.rightBarline) != "end":
                continue
            if last_end is not None and not started:
                measures[last_end + 1].leftBarline = music21.bar.Repeat(direction="start")
            last_end, started = i, False


def _repeat_direction(barline: object) -> str | None:
    return getattr(barline, "direction", None)  # only a music21 Repeat bar line has one


def _unexpanded(music21: ModuleType, score: Score) -> Score:
    """The score with each part flattened out of its measures: MIDI export expands repeats only
    in measures, so the tune plays once through as written."""
    out: Score = music21.stream.Score()
    parts: list[Stream[Any]] = list(score.parts) or [score]
    for part in parts:
        out.insert(0, part.flatten())
    return out
