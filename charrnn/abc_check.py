"""`abc check`: is each ABC tune of a file a playable, well-formed tune? And its MIDI file.

A tune is valid when music21 parses it, its header has a title (T:), a meter (M:) and a key
(K:), it contains notes, and every bar fills its meter. Real tunes bend that last rule in
known ways, which are allowed: a pickup (anacrusis) before the first bar, a short last bar,
and short bars next to a section boundary (a repeat sign, a double bar, a first or second
ending), where the bar before the boundary and the pickup after it share one bar between them,
and a change of meter that the tune does not mark: four or more bars in a row of one other
length (Essen's tunes mix meters under one M: field). Anything else that is too short or too
long (a deleted note, a bar from another meter) is a misfit; a tune may have one, or
12% of its bars (`MisfitAllowance`), as real collections do.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from .atomic import make_dirs, write_atomic
from .errors import ConfigError
from .music import require_music21, split_documents

_HEADER = re.compile(r"^([A-Za-z]):[ \t]*(.*)$")
# Quarter lengths are exact binary fractions or tuplet thirds: compare with a tolerance.
_EPS = 1e-6


@dataclass
class TuneCheck:
    """The verdict on one tune (index counts from 1 in file order)."""

    index: int
    title: str = ""
    parses: bool = False
    has_title: bool = False
    has_meter: bool = False
    has_key: bool = False
    has_notes: bool = False
    bars_ok: bool = False
    bars: int = 0
    bad_bars: list[int] = field(default_factory=list)  # music21 measure numbers
    error: str = ""  # why it does not parse, or why its bars cannot be measured
    midi: str = ""  # the .mid written for it, when asked
    midi_error: str = ""  # why music21 could not write it as MIDI

    @property
    def valid(self) -> bool:
        # A tune music21 reads but cannot render (asked for with --midi) is no use to a player.
        ok = self.has_title and self.has_meter and self.has_key and self.has_notes and self.bars_ok
        return self.parses and ok and not self.midi_error

    def problems(self) -> list[str]:
        if not self.parses:
            return [f"does not parse: {self.error}"]
        named = [("no title", self.has_title), ("no meter", self.has_meter), ("no key", self.has_key)]
        out = [name for name, ok in named if not ok]
        if not self.has_notes:
            out.append("no notes")
        elif self.error:
            out.append(f"bars cannot be measured: {self.error}")
        elif self.has_meter and not self.bars_ok:
            shown = ", ".join(str(b) for b in self.bad_bars[:5]) + (", ..." if len(self.bad_bars) > 5 else "")
            out.append(f"bars that do not fit the meter: {shown}")
        if self.midi_error:
            out.append(f"no MIDI file: {self.midi_error}")
        return out

    def to_dict(self) -> dict:
        return {**asdict(self), "valid": self.valid, "problems": self.problems()}


@dataclass
class CheckSummary:
    results: list[TuneCheck]

    @property
    def tunes(self) -> int:
        return len(self.results)

    @property
    def valid(self) -> int:
        return sum(r.valid for r in self.results)

    @property
    def valid_share(self) -> float:
        return self.valid / self.tunes if self.tunes else 0.0

    def to_dict(self) -> dict:
        return {
            "tunes": self.tunes,
            "valid": self.valid,
            "valid_share": round(self.valid_share, 4),
            "results": [r.to_dict() for r in self.results],
        }


def header_fields(tune: str) -> dict[str, str]:
    """The first value of each header field, read up to and including the K: line."""
    found: dict[str, str] = {}
    for line in tune.split("\n"):
        m = _HEADER.match(line.strip())
        if not m:
            if found:
                break  # the body began without a K: line
            continue
        found.setdefault(m.group(1), m.group(2).strip())
        if m.group(1) == "K":
            break
    return found


@dataclass(frozen=True)
class MisfitAllowance:
    """How many bars that do not fit its meter a tune may have and still be valid: `bars`, or
    `share` of its bars where that is more. Real collections have such slips (a bar one note
    short in the source, a meter that changes for a bar or two); damage leaves many more: a
    quarter of the bars swapped, or a note in 20 deleted. See the README's calibration."""

    bars: int = 1
    share: float = 0.12

    def __post_init__(self) -> None:
        if self.bars < 0 or not 0 <= self.share <= 1:
            raise ConfigError(
                f"--max-misfit-bars must be >= 0 and --max-misfit-share in [0, 1] (got {self.bars}, {self.share})"
            )

    def limit(self, total_bars: int) -> int:
        return max(self.bars, math.floor(self.share * total_bars + 1e-9))

    def __str__(self) -> str:
        return f"max(bars={self.bars}, share={self.share:g})"


DEFAULT_ALLOWANCE = MisfitAllowance()
STRICT = MisfitAllowance(0, 0.0)
_ANY = MisfitAllowance(10**9, 0.0)  # calibration counts misfits itself


def check_tune(
    tune: str, index: int = 1, midi_path: Path | None = None, allowance: MisfitAllowance = DEFAULT_ALLOWANCE
) -> TuneCheck:
    """Check one tune; when it is valid and `midi_path` is given, write its MIDI file there."""
    music21 = require_music21()
    header = header_fields(tune)
    result = TuneCheck(index=index, title=header.get("T", ""))
    result.has_title = bool(header.get("T"))
    result.has_key = "K" in header
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # `::` is shorthand for `:|:`, which music21 does not read as a repeat.
            score = music21.converter.parse(re.sub(r"(?<![|:]):{2}(?![|:])", ":|:", tune), format="abc")
        part = score.parts[0] if score.parts else score
        notes = list(part.recurse().notes)
    except Exception as exc:  # music21 raises many kinds on bad input; any of them means "does not parse"
        result.error = _one_line(exc)
        return result
    result.parses = True
    result.has_meter = "M" in header and bool(list(part.recurse().getElementsByClass("TimeSignature")))
    result.has_notes = bool(notes)
    try:
        bars = bar_layout(measures_of(part), declared_meters(music21, tune))
        result.bars = len(bars)
        result.bad_bars = misfit_bars(bars) if result.has_meter else []
    except Exception as exc:  # a score music21 built but cannot walk (seen on sampled tunes)
        result.error = _one_line(exc)  # it parses, but its bars cannot be measured: not valid
    fits = len(result.bad_bars) <= allowance.limit(result.bars)
    result.bars_ok = result.has_meter and result.has_notes and not result.error and fits
    if midi_path is not None and result.valid:
        make_dirs(midi_path.parent)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from music21.midi.translate import music21ObjectToMidiFile

                midi = music21ObjectToMidiFile(score, addEndDelay=True).writestr()  # what score.write("midi") writes
        except Exception as exc:  # music21 can parse scores it cannot render (e.g. a meter change inside a bar)
            result.midi_error = _one_line(exc)
        else:  # rendered in memory, then written whole: a full disk is an error, not a half file
            write_atomic(midi_path, midi, durable=False)
            result.midi = str(midi_path)
    return result


def _one_line(exc: Exception) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


# music21 reads these symbols in a tune but not as a TimeSignature argument.
_METER_SYMBOLS = {"C": "4/4", "C|": "2/2"}


def declared_meters(music21, tune: str) -> set[str]:
    """The meters the tune declares (header M: and any later M: field), as music21 ratios."""
    found = set()
    for value in re.findall(r"(?:^|\[)M:\s*([^\]\n]*)", tune, flags=re.M):
        value = _METER_SYMBOLS.get(value.strip(), value.strip())
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
        if m.length <= _EPS:
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
        while end + 1 < len(bars) and abs(bars[end + 1].length - bars[start].length) < _EPS:
            end += 1
        first = bars[start]
        if end - start + 1 >= IMPLIED_METER_RUN and first.meter is not None and abs(first.length - first.meter) > _EPS:
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
        if bar.meter is None or abs(bar.length - bar.meter) < _EPS:
            continue  # before any meter nothing to compare with, or a full bar
        if bar.length > bar.meter:
            bad.append(bar.number)
            continue
        prev = bars[pos - 1] if pos > 0 else None
        first, last = prev is None, pos == len(bars) - 1
        after_boundary = prev is not None and prev.section_end
        if not (first or last or after_boundary or bar.section_end):
            bad.append(bar.number)
        elif after_boundary and prev.length < bar.meter - _EPS and abs(prev.length + bar.length - bar.meter) > _EPS:
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


def _fraction(meter: str) -> float | None:
    m = re.fullmatch(r"(\d+)/(\d+)", meter.strip())
    return int(m.group(1)) / int(m.group(2)) if m else None


def tune_file_name(index: int, title: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()[:40] or "tune"
    return f"{index:03d}-{slug}.mid"


def check_tunes(
    tunes: Iterable[str],
    midi_dir: Path | None = None,
    allowance: MisfitAllowance = DEFAULT_ALLOWANCE,
    progress: Callable[[TuneCheck], None] = lambda _: None,
) -> CheckSummary:
    """Check every tune; with `midi_dir`, write one .mid per valid tune into it."""
    results = []
    for i, tune in enumerate(tunes, start=1):
        title = header_fields(tune).get("T", "")
        path = midi_dir / tune_file_name(i, title) if midi_dir is not None else None
        result = check_tune(tune, i, path, allowance)
        results.append(result)
        progress(result)
    return CheckSummary(results)


def check_abc_file(
    path: Path,
    midi_dir: Path | None = None,
    allowance: MisfitAllowance = DEFAULT_ALLOWANCE,
    progress: Callable[[TuneCheck], None] = lambda _: None,
) -> CheckSummary:
    """Check the blank-line-separated tunes of an ABC file."""
    from .data import read_text_file
    from .errors import CorpusError

    text = read_text_file(path, "ABC file")
    tunes = split_documents(text)
    if not tunes:
        raise CorpusError(f"{path} holds no tunes (tunes are separated by a blank line)")
    require_music21()
    return check_tunes(tunes, midi_dir, allowance, progress)


def calibrate(
    tunes: list[str],
    sample: int = 500,
    seed: int = 0,
    allowances: tuple[MisfitAllowance, ...] = (
        STRICT,
        MisfitAllowance(1, 0.0),
        DEFAULT_ALLOWANCE,
        MisfitAllowance(2, 0.12),
    ),
    progress: Callable[[str], None] = lambda _: None,
) -> dict:
    """How often the checker passes real tunes and rejects corrupted copies of them, on a
    seeded random sample, for each allowance of misfit bars: {"max(bars=N, share=S)": {"real":
    share passed, "swap_bars"/"delete_notes"/"remove_header": share rejected, "corrupted":
    share of all corrupted copies rejected}}. Each tune is checked once; the allowances only
    change the verdict."""
    import random

    from .music import corrupt_delete_notes, corrupt_remove_header, corrupt_swap_bars

    rng = random.Random(seed)
    chosen = rng.sample(tunes, min(sample, len(tunes)))

    def bar_and_unit(tune: str) -> tuple[float | None, str | None]:
        fields = header_fields(tune)
        m = fields.get("M", "")
        bar = _fraction(_METER_SYMBOLS.get(m, m))
        return bar, fields.get("L")

    shape = {id(t): bar_and_unit(t) for t in tunes}

    def donor_for(tune: str) -> str:
        # A tune whose bars are a different length but written in the same unit note length,
        # so that a moved bar keeps the durations it had (else a 2/4 bar in 1/16 units can
        # read as a full 4/4 bar in 1/8 units: a different tune, not a damaged one).
        bar, unit = shape[id(tune)]
        for _ in range(10_000):
            donor = rng.choice(tunes)
            if shape[id(donor)][1] == unit and shape[id(donor)][0] != bar:
                return donor
        return rng.choice(tunes)

    kinds = {
        "real": lambda t: t,
        "swap_bars": lambda t: corrupt_swap_bars(t, donor_for(t), rng),
        "delete_notes": lambda t: corrupt_delete_notes(t, rng),
        "remove_header": lambda t: corrupt_remove_header(t, rng),
    }
    # Per kind, per tune: (misfit bars, bars), or None when something else already fails it.
    misfits: dict[str, list[tuple[int, int] | None]] = {}
    for kind, make in kinds.items():
        results = [check_tune(make(t), allowance=_ANY) for t in chosen]
        misfits[kind] = [(len(r.bad_bars), r.bars) if r.valid else None for r in results]
        progress(f"{kind}: checked {len(chosen)} tunes")
    out: dict = {"sample": len(chosen), "seed": seed}
    for allowance in allowances:
        passed = {
            k: sum(m is not None and m[0] <= allowance.limit(m[1]) for m in v) / len(chosen) for k, v in misfits.items()
        }
        row = {"real": passed.pop("real")}
        row.update({k: 1.0 - share for k, share in passed.items()})
        row["corrupted"] = sum(row[k] for k in passed) / len(passed)
        out[str(allowance)] = {k: round(v, 4) for k, v in row.items()}
    return out
