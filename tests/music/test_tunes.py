"""Drawing tunes until enough pass the checker (`sample --tunes N --valid-only`), without a model:
the documents are given, so each count can be checked."""

from __future__ import annotations

import pytest

from charrnn.errors import ConfigError
from charrnn.music.tunes import NO_MIDI, TuneDraw, check_max_attempts, draw_tunes

pytest.importorskip("music21", reason="needs music21 (the [music] extra)")

GOOD = "X:9\nT:Good\nM:2/4\nL:1/8\nK:D\ndfed|cAFA|dfed|cdd2|]"
OFF = "X:9\nT:Off\nM:2/4\nL:1/8\nK:D\ndfedcB|cAF|dfedc|cA|dfed|cdd2|]"  # bars of 6, 3, 5 and 2 eighths
NO_KEY = "X:9\nT:Keyless\nM:2/4\nL:1/8\ndfed|cAFA|]"


def counted(documents):
    """The documents, and a list that grows by one each time one is taken."""
    taken = []

    def gen():
        for doc in documents:
            taken.append(doc)
            yield doc

    return gen(), taken


def test_draws_until_enough_pass_and_counts_rejections_by_reason():
    docs, taken = counted([OFF, GOOD, NO_KEY, OFF, GOOD, GOOD, GOOD])
    draw = TuneDraw(asked=2, max_attempts=10)
    draw.reject("no X: header")  # what the sampler dropped before handing over a document
    kept = list(draw_tunes(docs, draw))
    assert [t.text.split("\n")[0] for t in kept] == ["X:1", "X:2"] and all(t.check.valid for t in kept)
    assert len(taken) == 5  # no document drawn past the second valid tune
    assert draw.complete and draw.drawn == 6
    assert draw.rejected == {"bars do not fit the meter": 2, "no key": 1, "no X: header": 1}
    assert draw.summary() == "drew 6 tunes: 2 valid; rejected: 2 bars do not fit the meter, 1 no X: header, 1 no key"


def test_stops_at_the_bound_on_attempts():
    docs, taken = counted([OFF, GOOD, OFF, OFF, GOOD, GOOD])
    draw = TuneDraw(asked=3, max_attempts=4)
    kept = list(draw_tunes(docs, draw))
    assert len(kept) == 1 and not draw.complete and draw.drawn == 4 and len(taken) == 4


def test_midi_rendered_for_kept_tunes_and_a_tune_without_one_is_rejected(monkeypatch):
    import charrnn.music.tunes as tunes

    draw = TuneDraw(asked=1, max_attempts=5)
    kept = list(draw_tunes([GOOD], draw, render_midi=True))
    assert kept[0].midi.startswith(b"MThd")

    real = tunes.check_tune_midi
    monkeypatch.setattr(tunes, "check_tune_midi", lambda *a, **k: (real(*a, **k)[0], None))
    draw = TuneDraw(asked=1, max_attempts=5)
    assert list(draw_tunes([GOOD, GOOD], draw, render_midi=True)) == []
    assert draw.rejected == {NO_MIDI: 2}


def test_without_valid_only_every_tune_is_kept():
    draw = TuneDraw(asked=2, max_attempts=20)
    kept = list(draw_tunes([OFF, NO_KEY, GOOD], draw, valid_only=False))
    assert [t.check.title for t in kept] == ["Off", "Keyless"] and not draw.rejected


def test_max_attempts_default_and_refusal():
    assert check_max_attempts(3, None) == 30 and check_max_attempts(3, 3) == 3
    with pytest.raises(ConfigError, match="--max-attempts"):
        check_max_attempts(3, 2)
