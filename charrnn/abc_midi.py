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

from .music import require_music21

# `:|:` (end one repeat, start the next) loses its start in music21's ABC reader, and an end
# repeat with no start since the previous one makes music21 repeat everything before it: a
# tune of 13 such sections became 2^14 bars and hung its MIDI export (a real folk-abc tune).
# music21 reads `::` and `:||:`, the other spellings of the same bar line, as both.
_END_START_REPEAT = re.compile(r"(?<![|:]):\|:(?![|:])")


def parse_abc(tune: str):
    """The music21 stream (Score, or Opus for several tunes) of ABC `tune` text. Raises what
    music21 raises on text it cannot read."""
    music21 = require_music21()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return music21.converter.parseData(_END_START_REPEAT.sub(":||:", tune), format="abc")


def score_midi(score) -> tuple[bytes, bool]:
    """(MIDI file bytes, whether the repeats were expanded) of a parsed tune. The score keeps
    its notes and meters (an element shared by several measures becomes one copy in each;
    no copy of the whole score, which would cost as much as the export). Raises what music21
    raises when it cannot render the score at all."""
    music21 = require_music21()
    _unshare_elements(score)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if _repeats_compound(score):
            return _midi_bytes(music21, _unexpanded(music21, score)), False
        try:
            return _midi_bytes(music21, score), True
        except music21.repeat.ExpanderException:
            return _midi_bytes(music21, _unexpanded(music21, score)), False


def tune_midi(tune: str) -> bytes:
    """The MIDI file of ABC `tune` text (repeats expanded where music21 can)."""
    return score_midi(parse_abc(tune))[0]


def _midi_bytes(music21, score) -> bytes:
    return music21.midi.translate.music21ObjectToMidiFile(score).writestr()


def _unshare_elements(score) -> None:
    """Give each measure its own copy of an element that sits in several (music21's ABC reader
    reuses the tune's TimeSignature object after a bar it cut in two)."""
    seen: set[int] = set()
    for measure in score.recurse().getElementsByClass("Measure"):
        for element in list(measure.getElementsByClass(("TimeSignature", "KeySignature", "MetronomeMark"))):
            if id(element) in seen:
                measure.replace(element, copy.deepcopy(element))
            else:
                seen.add(id(element))


def _repeats_compound(score) -> bool:
    """Whether an end repeat follows an earlier one with no start repeat between them. music21
    then plays everything before it again, earlier repeats included, so each such bar doubles
    the expanded tune (sampled tunes write `:|` freely): play those tunes as written instead."""
    for part in list(score.parts) or [score]:
        ends, started = 0, False
        for measure in part.getElementsByClass("Measure"):
            started |= _repeat_direction(measure.leftBarline) == "start"
            if _repeat_direction(measure.rightBarline) == "end":
                if ends and not started:
                    return True
                ends, started = ends + 1, False
            started |= _repeat_direction(measure.rightBarline) == "start"
    return False


def _repeat_direction(barline) -> str | None:
    return getattr(barline, "direction", None)  # only a music21 Repeat bar line has one


def _unexpanded(music21, score):
    """The score with each part flattened out of its measures: MIDI export expands repeats only
    in measures, so the tune plays once through as written."""
    out = music21.stream.Score()
    parts = list(score.parts) or [score]
    for part in parts:
        out.insert(0, part.flatten())
    return out
