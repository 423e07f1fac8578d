"""How the bars of a parsed tune fit its meter: the rules behind `abc check`'s bar verdict.

Bars are measured as written, from the text's own bar lines (see `scan` and
`written_bars`), then each is held to the meter in force, with the allowed exceptions of real
tunes (see the module docstring of `check`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .scan import Segment, music_lines, split_tune

# Quarter lengths are exact binary fractions or tuplet thirds: compare with a tolerance.
EPS = 1e-6


@dataclass(frozen=True)
class Bar:
    """One bar as written between two bar lines, as the meter check sees it (quarter notes)."""

    number: int
    length: float
    meter: float | None  # the bar length of the meter in force; None before any
    section_end: bool = False


def written_bars(segments: list[Segment]) -> list[Bar]:
    """The bars of a tune as written (`scan.scan_bars`), numbered as music21 does (a short
    first bar, the pickup, is bar 0). A line end without a bar line does not end a bar in ABC,
    but Essen's songs end one there: it closes the bar before it where that bar is whole (as
    long as the meter's or the bar before it) and the two sides do not together make one bar of
    the meter or of a neighbour's length. A multi-bar rest counts as that many full bars."""
    joined = _join_across_lines(segments)
    bars: list[Bar] = []
    for seg in joined:
        meter = float(seg.meter * 4) if seg.meter is not None else None
        if not bars:
            number = 0 if meter is not None and not seg.multi and seg.length * 4 < meter - EPS else 1
        else:
            number = bars[-1].number + 1
        if seg.multi and meter is not None:
            bars += [Bar(number + i, meter, meter) for i in range(seg.multi)]
            bars[-1] = replace(bars[-1], section_end=seg.close == "section")
            continue
        bars.append(Bar(number, float(seg.length * 4), meter, seg.close == "section"))
    return bars


def _join_across_lines(segments: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    pending = list(segments)
    while pending:
        a = pending.pop(0)
        if a.close != "line" or not pending or a.meter is None or a.multi or pending[0].multi:
            out.append(a)
            continue
        b = pending[0]
        whole = a.length + b.length
        both_full = a.length == a.meter and b.length == (b.meter or a.meter)
        neighbours = {a.meter, *(s.length for s in out[-1:]), *(s.length for s in pending[1:2])}
        a_whole = a.length == a.meter or (out and a.length == out[-1].length)
        if both_full or (whole not in neighbours and a_whole):
            out.append(a)  # the line end closed a whole bar
        else:
            pending[0] = Segment(whole, a.meter, b.close)  # one bar across the line end, as ABC reads it
    return out


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
        elif (
            after_boundary
            and prev is not None
            and prev.length < bar.meter - EPS
            and abs(prev.length + bar.length - bar.meter) > EPS
        ):
            # Short on both sides of a section boundary: together they must make one bar.
            bad.append(bar.number)
    return bad


# A line of music that stops on one of these (or inside a quoted chord symbol) stops inside a
# chord, inline field, grace group, tuplet, broken rhythm or tie, or before its note.
_DANGLING = re.compile(r"(\[(?![\d|])[^\]|]*|\{[^}|]*|[(<>\-^_=&])\s*$")


def cut_off(tune: str, bars: list[Bar]) -> bool:
    """Whether a tune stops where no tune ends: nothing after its header; a last line of music
    that stops inside a chord, field or note; or one with no bar line at its end, in a tune whose
    other lines end with one, where its last bar is short (not a full bar, not the rest of the
    pickup's bar, not as long as the bar before it). Real tunes end with a bar line, or on a
    whole bar or a long note where all their lines end without one (Essen's songs); a tune cut
    off by a length limit stops anywhere."""
    lines = music_lines(split_tune(tune)[1])
    if not lines or _DANGLING.search(lines[-1]) or lines[-1].count('"') % 2:
        return True
    if _BAR_LINE_END.search(lines[-1]) or not bars or bars[-1].meter is None:
        return False
    if sum(bool(_BAR_LINE_END.search(line)) for line in lines[:-1]) * 2 < len(lines) - 1:
        return False  # a tune whose lines end without bar lines (Essen's style) ends the same way
    last, meter = bars[-1], bars[-1].meter
    if last.length > meter - EPS:  # whole, or too long already (a misfit, not a cut)
        return False
    whole = [bars[-2].length] if len(bars) > 1 else []
    if bars[0].number == 0:
        whole.append(meter - bars[0].length)
    return all(abs(last.length - length) > EPS for length in whole)


_BAR_LINE_END = re.compile(r"[|:\]]\s*$")
