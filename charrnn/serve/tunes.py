"""What the page does with a finished ABC tune: the checker's verdict, its MIDI file, and the sounds
abcjs plays it with.

abcjs's synth fetches one recorded sound per note from a soundfont on the web; to play offline,
this server answers those requests itself with a plucked tone synthesised for the note's pitch.
"""

from __future__ import annotations

import io
import math
import re
import threading
import wave
from functools import lru_cache
from typing import Any

import numpy as np

from .generation import BadRequest

# music21 keeps module-level state (caches, environment): one tune at a time.
_MUSIC21 = threading.Lock()
_NOTE = re.compile(r"^([A-G])(b?)(\d)\.mp3$")  # abcjs's note file names: C4, Db4, ... (flats only)
_SEMITONE = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
RATE = 22050
SECONDS = 1.5


def tune_verdict(tune: str) -> dict[str, Any]:
    """`charrnn abc check`'s verdict on one tune, as JSON-ready data (valid, problems, bars, ...)."""
    from ..music.check import check_tune

    with _MUSIC21:
        return check_tune(tune).to_dict()


def midi_bytes(tune: str) -> bytes:
    """The tune's MIDI file, as `charrnn abc check --midi` writes it (for any tune music21 reads that
    has notes); BadRequest (422) when there is none, saying why."""
    from ..music.check import check_tune_midi

    with _MUSIC21:
        result, midi = check_tune_midi(tune)
    if midi is None:
        problem = "; ".join(result.problems()) or "music21 could not render it"
        raise Unplayable(f"no MIDI file for this tune: {problem}")
    return midi


class Unplayable(BadRequest):
    status = 422


@lru_cache(maxsize=128)
def wav_note(file_name: str) -> bytes | None:
    """A WAV file (whatever the name says: browsers decode by content) of the named note, or None."""
    match = _NOTE.match(file_name)
    if not match:
        return None
    letter, flat, octave = match.groups()
    midi = 12 * (int(octave) + 1) + _SEMITONE[letter] - (1 if flat else 0)
    freq = 440.0 * 2 ** ((midi - 69) / 12)
    t = np.arange(int(RATE * SECONDS)) / RATE
    # A few harmonics that fade faster than the fundamental: a plucked string, roughly.
    tone = sum(math.pow(0.5, k - 1) * np.exp(-(2.0 + k) * t) * np.sin(2 * math.pi * k * freq * t) for k in (1, 2, 3, 4))
    tone *= np.minimum(t / 0.005, 1.0)  # a 5 ms attack instead of a click
    pcm = (tone / np.abs(tone).max() * 0.6 * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return out.getvalue()
