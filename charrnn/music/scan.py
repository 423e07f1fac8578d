"""ABC tune text -> its bars as written: the length of the notes between each two bar lines.

music21 re-bars what it reads: it cuts a bar too long for the meter into full bars (a bar
twice too long reads as two good ones), and a tune with fewer than two plain bar lines gets no
bars at all. The meter check therefore reads bars from the text itself, with ABC's rules for
note lengths: the unit length (L:, or ABC's default from the meter), length multipliers (`A3`,
`A/2`, `A//`), chords (the first note's length times the chord's own), rests (`z`, `x`; `Z` alone
in a bar is that many whole bars), broken rhythm (`>`, `<`), tuplets (`(3`, `(p:q:r`) and grace
notes (no length), and meter or unit changes in the body (`M:`, `[L:1/16]`). Lengths are exact
fractions of a whole note. Whether music21 can read the tune is music21's verdict, not this one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from .folk import FIELD_LINE

# Meter symbols, and what ABC means by them.
METER_SYMBOLS = {"C": "4/4", "C|": "2/2"}

_TOKEN = re.compile(
    r"""
      (?P<skip>"[^"]*"?|![^!]*!|\+[^+]*\+|%.*)          # chord symbols, annotations, decorations, comment
    | (?P<field>\[(?P<fkey>[A-Za-z]):(?P<fval>[^\]]*)\])  # inline field: [M:3/4], [L:1/16], [K:G]
    | (?P<bar>(?::*\[?\|+\]?|::+|\[(?=\d))(?P<ending>\d+(?:[,-]\d+)*)?:*)  # bar lines, repeats, endings
    | (?P<grace>\{[^}]*\}?)                              # grace notes take no time
    | (?P<chord>\[(?P<inner>[^\]|]*)\](?P<clen>\d*/*\d*))
    | (?P<tuplet>\((?P<p>[2-9])(?::(?P<q>\d*))?(?::(?P<r>\d*))?)
    | (?P<note>[_^=]*[A-Ga-g][,']*(?P<nlen>\d*/*\d*))
    | (?P<rest>[zx](?P<rlen>\d*/*\d*))
    | (?P<multi>[ZX](?P<mlen>\d*))
    | (?P<broken>[<>]+)
    """,
    re.X,
)
MAX_REST_BARS = 1000  # a longer multi-bar rest (Z99999999) counts as this many bars
_NOTE_IN_CHORD = re.compile(r"[_^=]*[A-Ga-gzx][,']*(\d*/*\d*)")


def _int(digits: str) -> int:
    """A run of digits as a number; past nine digits the rest are left out (no tune needs them,
    and Python refuses to convert thousands of digits)."""
    return int(digits[:9])


def length_multiplier(text: str) -> Fraction:
    """ABC's length suffix -> its multiplier of the unit: '' 1, '3' 3, '/' 1/2, '//' 1/4, '3/2' 3/2."""
    m = re.fullmatch(r"(\d*)(/*)(\d*)", text)
    if m is None:
        return Fraction(1)
    num = _int(m.group(1)) if m.group(1) else 1
    if not m.group(2):
        return Fraction(num)
    den = _int(m.group(3)) if m.group(3) else 2 ** min(len(m.group(2)), 30)
    return Fraction(num, den or 1)


def meter_length(value: str) -> Fraction | None:
    """An M: value -> its bar length in whole notes ('6/8' 3/4, 'C' 1, 'C|' 1); None for none/free."""
    value = METER_SYMBOLS.get(value.strip(), value.strip())
    m = re.fullmatch(r"(\d+(?:\+\d+)*)\s*/\s*(\d+)", value)
    if m is None or _int(m.group(2)) == 0:
        return None
    return Fraction(sum(_int(n) for n in m.group(1).split("+")), _int(m.group(2)))


@dataclass
class Segment:
    """The notes between two bar lines (or a bar line and a line end), in whole notes."""

    length: Fraction
    meter: Fraction | None  # the bar length of the meter in force at its first note
    close: str = "plain"  # what ends it: "plain" bar line, "section" (repeat, double bar, ending), "line", "end"
    multi: int = 0  # a multi-bar rest alone in its bar: that many whole bars


class _Reader:
    """The running state of one tune's body: unit length, meter, tuplet, broken rhythm."""

    def __init__(self, meter: Fraction | None, unit: Fraction | None, numerator: int):
        self.meter = meter
        self.unit = unit if unit is not None else Fraction(1, 16) if (meter or 1) < Fraction(3, 4) else Fraction(1, 8)
        self.compound = numerator % 3 == 0 and numerator > 3
        self.segments: list[Segment] = []
        self.items: list[Fraction] = []  # lengths of the current bar's notes, rests and chords
        self.bar_meter: Fraction | None = None
        self.multi = 0
        self.tuplet: tuple[Fraction, int] | None = None  # (factor, notes left)
        self.broken_next = Fraction(1)  # what the next note's length is multiplied by (after `>`)
        self.ending_closes = False  # the bar opened by a second (or later) ending ends a section

    def field(self, key: str, value: str) -> None:
        if key == "M":
            self.meter = meter_length(value)
            digits = re.match(r"\s*(\d+)", value)
            self.compound = digits is not None and _int(digits.group(1)) % 3 == 0 and _int(digits.group(1)) > 3
        elif key == "L":
            unit = meter_length(value)
            self.unit = unit if unit else self.unit

    def add(self, multiplier: Fraction) -> None:
        self.multi = 0  # a multi-bar rest is one only alone in its bar
        if not self.items:
            self.bar_meter = self.meter
        length = self.unit * multiplier * self.broken_next
        self.broken_next = Fraction(1)
        if self.tuplet is not None:
            factor, left = self.tuplet
            length *= factor
            self.tuplet = (factor, left - 1) if left > 1 else None
        self.items.append(length)

    def broken(self, marks: str) -> None:
        shift = Fraction(1, 2 ** len(marks))
        first, second = (2 - shift, shift) if marks[0] == ">" else (shift, 2 - shift)
        if self.items:
            self.items[-1] *= first
        self.broken_next = second

    def start_tuplet(self, p: int, q: str | None, r: str | None) -> None:
        default_q = {2: 3, 3: 2, 4: 3, 6: 2, 8: 3}.get(p, 3 if self.compound else 2)
        q_n = _int(q) if q else default_q
        r_n = _int(r) if r else p
        self.tuplet = (Fraction(q_n, p), r_n) if r_n > 0 else None

    def close(self, kind: str, ending: int = 0) -> None:
        """End the current bar with a bar line of `kind` (an empty one only passes its boundary on)."""
        if self.items or self.multi:
            kind = "section" if self.ending_closes and kind in ("plain", "line", "end") else kind
            meter = self.bar_meter if self.items else self.meter
            self.segments.append(Segment(sum(self.items, Fraction(0)), meter, kind, self.multi))
            self.items, self.multi, self.ending_closes = [], 0, False
        elif self.segments and kind not in ("line", "end"):
            last = self.segments[-1]
            if last.close in ("plain", "line") or kind == "section":
                last.close = kind  # a bar line after a line end, or `:|` then `|:`
        if ending:
            self.ending_closes = ending >= 2
            if self.segments:
                self.segments[-1].close = "section"

    def line(self, text: str) -> None:
        for m in _TOKEN.finditer(text):
            self._token(m)
        if not text.rstrip().endswith("\\"):
            self.close("line")

    def _token(self, m: re.Match[str]) -> None:
        if m.group("field") is not None:
            self.field(m.group("fkey"), m.group("fval"))
        elif m.group("bar") is not None:
            bar, ending = m.group("bar"), m.group("ending")
            plain = bar == "|"
            self.close("plain" if plain else "section", _int(re.split(r"[,-]", ending)[0]) if ending else 0)
        elif m.group("chord") is not None:
            first = _NOTE_IN_CHORD.search(m.group("inner"))
            if first is not None:
                self.add(length_multiplier(first.group(1)) * length_multiplier(m.group("clen")))
        elif m.group("tuplet") is not None:
            self.start_tuplet(int(m.group("p")), m.group("q"), m.group("r"))
        elif m.group("note") is not None:
            self.add(length_multiplier(m.group("nlen")))
        elif m.group("rest") is not None:
            self.add(length_multiplier(m.group("rlen")))
        elif m.group("multi") is not None:
            count = min(_int(m.group("mlen")), MAX_REST_BARS) if m.group("mlen") else 1
            alone = not self.items
            self.add(Fraction(count))  # a rest of `count` units if the bar holds notes too
            self.multi = count if alone else 0
        elif m.group("broken") is not None:
            self.broken(m.group("broken"))


def split_tune(tune: str) -> tuple[dict[str, str], list[str]]:
    """(the header's first value of each field, up to its K: line; the body's lines after it).
    Without a K: line the body starts at the first line that is not a field."""
    lines = tune.split("\n")
    header_end = next((i for i, line in enumerate(lines) if line.startswith("K:")), None)
    if header_end is None:
        header_end = next((i for i, line in enumerate(lines) if not FIELD_LINE.match(line.strip())), len(lines)) - 1
    header: dict[str, str] = {}
    for line in lines[: header_end + 1]:
        field = FIELD_LINE.match(line.strip())
        if field:
            header.setdefault(field.group(1), field.group(2).split("%", 1)[0].strip())
    return header, lines[header_end + 1 :]


def music_lines(body: list[str]) -> list[str]:
    """The body's lines of music: not fields, comments or blank."""
    return [
        line
        for line in body
        if line.strip() and not FIELD_LINE.match(line.strip()) and not line.lstrip().startswith("%")
    ]


def scan_bars(tune: str) -> list[Segment]:
    """The bars of an ABC tune as written, in order: each one's length, the meter in force and
    what closed it. A line end without a bar line closes a bar as "line" (Essen's songs end a
    bar there; elsewhere a bar may run on to the next line: see `bars.written_bars`)."""
    header, body = split_tune(tune)
    meter_text = METER_SYMBOLS.get(header.get("M", ""), header.get("M", ""))
    numerator = re.match(r"\s*(\d+)", meter_text)
    unit = meter_length(header["L"]) if "L" in header else None
    reader = _Reader(meter_length(header.get("M", "")), unit, _int(numerator.group(1)) if numerator else 4)
    for line in body:
        field = FIELD_LINE.match(line.strip())
        if field:
            reader.field(field.group(1), field.group(2).split("%", 1)[0])
        elif not line.lstrip().startswith("%"):
            reader.line(line)
    reader.close("end")
    return reader.segments
