"""`abc check`: is each ABC tune of a file a playable, well-formed tune? And its MIDI file.

A tune is valid when music21 parses it, its header has a title (T:), a meter (M:) and a key
(K:), it contains notes, it is not unfinished (it does not stop where no tune ends, as one cut
off by a length limit does: see `bars.cut_off`), and every bar fills its meter. Bars are
read from the tune's own bar lines (`scan`), not from music21's measures, which cut a
too-long bar into full ones. Real tunes bend the meter in known ways, which are allowed: a
pickup (anacrusis) before the first bar, a short last bar, and short bars next to a section
boundary (a repeat sign, a double bar, a first or second ending), where the bar before the
boundary and the pickup after it share one bar between them, and a change of meter that the
tune does not mark: four or more bars in a row of one other length (Essen's tunes mix meters
under one M: field). Anything else that is too short or too long (a deleted note, a bar from
another meter, a bar written twice) is a misfit; a tune may have one, or 12% of its bars
(`MisfitAllowance`), as real collections do.

The bar rules live in `bars`, parsing and MIDI in `midi`. The verdict never depends on
the MIDI file: every tune music21 reads that has notes gets one, valid or not.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..atomic import make_dirs, write_atomic
from ..errors import ConfigError, CorpusError
from .bars import cut_off, misfit_bars, written_bars
from .folk import FIELD_LINE, require_music21, split_documents
from .midi import parse_abc, score_midi
from .scan import scan_bars

_REASON_KINDS = {
    "bars that do not fit the meter": "bars do not fit the meter",
    "unfinished": "unfinished (stops where no tune ends)",
}
UNFINISHED = "unfinished: cut off before its end"


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
    bad_bars: list[int] = field(default_factory=list)  # bar numbers as written (a pickup is bar 0)
    unfinished: bool = False  # it stops where no tune ends (cut off by a length limit): never valid
    error: str = ""  # why music21 cannot read it
    midi: str = ""  # the .mid written for it, when asked
    midi_expanded: bool = False  # its MIDI file plays the repeats (else each section once, as written)
    midi_error: str = ""  # why music21 could not render it as MIDI (this does not change the verdict)

    @property
    def valid(self) -> bool:
        ok = self.has_title and self.has_meter and self.has_key and self.has_notes and self.bars_ok
        return self.parses and ok and not self.unfinished

    @property
    def reason(self) -> str:
        """The kind of its first problem, for counts ("bars do not fit the meter"); "" if valid."""
        problems = self.problems()
        if self.valid or not problems:
            return ""
        return _REASON_KINDS.get(problems[0].split(":")[0], problems[0].split(":")[0])

    def problems(self) -> list[str]:
        """What is wrong with it, most telling first ("unfinished: ..." before what that causes)."""
        out = [UNFINISHED] if self.unfinished else []
        if not self.parses:
            return out + [f"does not parse: {self.error}"]
        named = [("no title", self.has_title), ("no meter", self.has_meter), ("no key", self.has_key)]
        out += [name for name, ok in named if not ok]
        if not self.has_notes:
            out.append("no notes")
        elif self.has_meter and not self.bars_ok:
            shown = ", ".join(str(b) for b in self.bad_bars[:5]) + (", ..." if len(self.bad_bars) > 5 else "")
            out.append(f"bars that do not fit the meter: {shown}")
        return out

    def to_dict(self) -> dict[str, Any]:
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

    @property
    def valid_interval(self) -> tuple[float, float]:
        """95% Wilson interval of the valid share, reading the tunes as a sample of their source."""
        return wilson_interval(self.valid, self.tunes)

    @property
    def unfinished(self) -> int:
        return sum(r.unfinished for r in self.results)

    @property
    def midi_files(self) -> int:
        return sum(bool(r.midi) for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tunes": self.tunes,
            "valid": self.valid,
            "unfinished": self.unfinished,
            "valid_share": round(self.valid_share, 4),
            "valid_95": [round(x, 4) for x in self.valid_interval],
            "results": [r.to_dict() for r in self.results],
        }


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a share (95% for z = 1.96): unlike p +- z*se, it stays inside
    [0, 1] and holds for shares near 0 or 1 and small samples."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def header_fields(tune: str) -> dict[str, str]:
    """The first value of each header field, read up to and including the K: line."""
    found: dict[str, str] = {}
    for line in tune.split("\n"):
        m = FIELD_LINE.match(line.strip())
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
UNLIMITED = MisfitAllowance(10**9, 0.0)  # calibration counts misfits itself


def check_tune_midi(
    tune: str, index: int = 1, allowance: MisfitAllowance = DEFAULT_ALLOWANCE, render: bool = True
) -> tuple[TuneCheck, bytes | None]:
    """The verdict on one tune's text and, with `render`, its MIDI file bytes: for every tune
    music21 reads that has notes, valid or not (else None; where music21 cannot render it, the
    verdict's `midi_error` says why). The verdict never depends on the MIDI file."""
    require_music21()
    header = header_fields(tune)
    result = TuneCheck(index=index, title=header.get("T", ""))
    result.has_title = bool(header.get("T"))
    result.has_key = "K" in header
    segments = scan_bars(tune)  # the bars as written, read from the text (see scan.py)
    bars = written_bars(segments)
    result.unfinished = cut_off(tune, bars)
    result.bars = len(bars)
    try:
        score = parse_abc(tune)
        part = score.parts[0] if score.parts else score
        notes = list(part.recurse().notes)
    except Exception as exc:  # music21 raises many kinds on bad input; any of them means "does not parse"
        result.error = _one_line(exc)
        return result, None
    result.parses = True
    result.has_meter = "M" in header and bool(list(part.recurse().getElementsByClass("TimeSignature")))
    result.has_notes = bool(notes)
    result.bad_bars = misfit_bars(bars) if result.has_meter else []
    fits = len(result.bad_bars) <= allowance.limit(result.bars)
    result.bars_ok = result.has_meter and result.has_notes and fits
    if not render or not result.has_notes:  # no notes, nothing to play
        return result, None
    try:  # after the check: rendering gives shared elements copies of their own (see midi.py)
        midi, result.midi_expanded = score_midi(score)
    except Exception as exc:  # music21 can parse scores it cannot render
        result.midi_error = _one_line(exc)
        return result, None
    return result, midi


def check_tune(
    tune: str, index: int = 1, midi_path: Path | None = None, allowance: MisfitAllowance = DEFAULT_ALLOWANCE
) -> TuneCheck:
    """Check one tune; with `midi_path`, write its MIDI file there, valid or not."""
    result, midi = check_tune_midi(tune, index, allowance, render=midi_path is not None)
    if midi is not None and midi_path is not None:
        write_midi(midi_path, midi)
        result.midi = str(midi_path)
    return result


def write_midi(path: Path, midi: bytes) -> None:
    """MIDI bytes to `path` (its folder made), whole or not at all; WriteError where it cannot be written."""
    make_dirs(path.parent)
    write_atomic(path, midi, durable=False)


def _one_line(exc: Exception) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


def tune_file_name(index: int, title: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()[:40] or "tune"
    return f"{index:03d}-{slug}.mid"


def check_tunes(
    tunes: Iterable[str],
    midi_dir: Path | None = None,
    allowance: MisfitAllowance = DEFAULT_ALLOWANCE,
    progress: Callable[[TuneCheck], None] = lambda _: None,
) -> CheckSummary:
    """Check every tune; with `midi_dir`, write one .mid per tune music21 can render into it."""
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
    from ..data.tokens import read_text_file

    text = read_text_file(path, "ABC file")
    tunes = split_documents(text)
    if not any(re.search(r"^X:", tune, flags=re.M) for tune in tunes):
        raise CorpusError(f"{path} has no ABC tunes (no X: tune found: each tune starts with an X: line)")
    require_music21()
    return check_tunes(tunes, midi_dir, allowance, progress)
