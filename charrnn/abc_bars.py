"""How the bars of a parsed tune fit its meter: the rules behind `abc check`'s bar verdict.

Bars are measured as written (see `bar_layout`), then each is held to the meter in force,
with the allowed exceptions of real tunes (see the module docstring of `abc_check`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

# Quarter lengths are exact binary fractions or tuplet thirds: compare with a tolerance.
EPS = 1e-6


# music21 reads these symbols in a tune but not as a TimeSignature argument.
METER_SYMBOLS = {"C": "4/4", "C|": "2/2"}


def declared_meters(music21, tune: str) -> set[str]:
    """The meters the tune declares (header M: and any later M: field), as music21 ratios."""
    found = set()
    for value in re.findall(r"(?:^|\[)M:\s*([^\]\n]*)", tune, flags=re.M):
        value = METER_SYMBOLS.get(value.strip(), value.strip())
        try:
            found.add(music21.meter.TimeSignature(value).ratioString)
        except Exception:  # not a meter music21 knows: declares nothing
            pass
    return found


@dataclass(frozen=True)
class Measure:
    """What the meter check needs of one music21 measure (lengths in quarter notes)."""

    number: int  # music21's measure number, as reported to the user
    length: float
    meter: str | None = None  # the time signature music21 set on it ("3/4"), if any
    meter_length: float | None = None  # that time signature's bar length
    section_end: bool = False  # a repeat sign, double bar or ending closes it


@dataclass(frozen=True)
class Bar:
    """One bar as written between two bar lines, as the meter check sees it."""

    number: int
    length: float
    meter: float | None  # the bar length of the declared meter in force; None before any
    section_end: bool = False


def measures_of(part) -> list[Measure]:
    """The music21 part's measures as plain records."""
    measures = list(part.getElementsByClass("Measure"))
    ends = _section_ends(part, measures)
    out = []
    for i, m in enumerate(measures):
        ts = m.timeSignature
        ratio, bar = (ts.ratioString, float(ts.barDuration.quarterLength)) if ts is not None else (None, None)
        out.append(Measure(m.number, float(m.duration.quarterLength), ratio, bar, i in ends))
    return out


def bar_layout(measures: list[Measure], declared: set[str]) -> list[Bar]:
    """Measures -> the bars as written. music21 splits a bar that is too long for the meter into
    a full measure and a remainder with a made-up time signature that fits it (what we want for
    Essen tunes, where a line end closes a bar without a bar line). A remainder is joined back
    to the bar it was cut from, so a 3/4 bar in a 2/4 tune is one long bar, not a full bar and a
    short one, and made-up meters never count as the meter in force. Empty measures (a bar line
    at the very start, `||:`) carry nothing and are left out."""
    bars: list[Bar] = []
    current = None
    for m in measures:
        invented = m.meter is not None and m.meter not in declared
        if m.meter is not None and not invented:
            current = m.meter_length
        if m.length <= EPS:
            if m.section_end and bars:  # an empty measure that only carries a boundary
                bars[-1] = replace(bars[-1], section_end=True)
            continue
        if invented and bars:
            # music21 puts the closing bar line of a cut bar on the remainder's left, which
            # marks the first half as a section end: the boundary belongs to the joined bar.
            prev = bars[-1]
            bars[-1] = replace(prev, length=prev.length + m.length, section_end=prev.section_end or m.section_end)
            continue
        bars.append(Bar(m.number, m.length, current, m.section_end))
    return bars


# This many bars in a row of one length other than the declared meter's are an unmarked change
# of meter, not damage: Essen's tunes mix meters under one M: field. Damage (a bar swapped in,
# a note deleted) almost never leaves four equal bars in a row. See the README's calibration.
IMPLIED_METER_RUN = 4


def implied_meters(bars: list[Bar]) -> list[Bar]:
    """The bars, with each run of IMPLIED_METER_RUN or more equal bars that do not fit the
    declared meter held to their own length instead."""
    out = list(bars)
    start = 0
    while start < len(bars):
        end = start
        while end + 1 < len(bars) and abs(bars[end + 1].length - bars[start].length) < EPS:
            end += 1
        first = bars[start]
        if end - start + 1 >= IMPLIED_METER_RUN and first.meter is not None and abs(first.length - first.meter) > EPS:
            for i in range(start, end + 1):
                out[i] = replace(bars[i], meter=first.length)
        start = end + 1
    return out


def misfit_bars(bars: list[Bar]) -> list[int]:
    """Numbers of the bars whose length disagrees with their meter, beyond the allowed pickups,
    section-boundary splits and unmarked meter changes (see the module docstring)."""
    bars = implied_meters(bars)
    bad: list[int] = []
    for pos, bar in enumerate(bars):
        if bar.meter is None or abs(bar.length - bar.meter) < EPS:
            continue  # before any meter nothing to compare with, or a full bar
        if bar.length > bar.meter:
            bad.append(bar.number)
            continue
        prev = bars[pos - 1] if pos > 0 else None
        first, last = prev is None, pos == len(bars) - 1
        after_boundary = prev is not None and prev.section_end
        if not (first or last or after_boundary or bar.section_end):
            bad.append(bar.number)
        elif after_boundary and prev.length < bar.meter - EPS and abs(prev.length + bar.length - bar.meter) > EPS:
            # Short on both sides of a section boundary: together they must make one bar.
            bad.append(bar.number)
    return bad


def _section_ends(part, measures: list) -> set[int]:
    """Indices of measures after which a section ends: a repeat sign, double or final bar on
    either side of the bar line, or the end of a first/second ending."""
    index = {id(m): i for i, m in enumerate(measures)}
    ends: set[int] = set()
    for i, m in enumerate(measures):
        right = m.rightBarline
        if right is not None and (right.type != "regular" or type(right).__name__ == "Repeat"):
            ends.add(i)
        left = m.leftBarline
        if i > 0 and left is not None and (left.type != "regular" or type(left).__name__ == "Repeat"):
            ends.add(i - 1)
    for bracket in part.spanners.getElementsByClass("RepeatBracket"):
        spanned = [index[id(m)] for m in bracket.getSpannedElements() if id(m) in index]
        if spanned:
            ends.add(max(spanned))
            if min(spanned) > 0:
                ends.add(min(spanned) - 1)
    return ends
