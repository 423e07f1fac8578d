"""ABC folk tunes: the offline `folk-abc` corpus builder and tune-level text helpers.

The corpus is built from the ABC collections bundled with music21 (Essen, O'Neill's, Aird's,
Ryan's Mammoth, ...), so it needs the `[music]` extra but no network. Each tune is normalized
to what a character model can usefully learn and a checker can verify: the header keeps
X (renumbered), T, M, L and K; the body keeps notes, rests, chords, bar lines, repeats,
endings, ties, tuplets and broken rhythm, and loses what does not change the notes
(annotations, chord symbols, decorations, grace notes, slurs, fingerings, comments, lyrics).
Tunes are separated by one blank line and never contain one, so the blank line is the
document boundary everywhere (validation split, `sample --tunes`, `abc check`).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from types import ModuleType
from typing import Callable

from ..errors import CorpusError

INSTALL_HINT = "pip install 'charrnn[music]' (or: pip install music21)"

# music21's bundled collections of single-line folk tunes, in build order. Josquin (polyphony)
# and the Nottingham stub are left out.
FOLK_COLLECTIONS = ("essenFolksong", "oneills1850", "airdsAirs", "ryansMammoth", "miscFolk")

HEADER_ORDER = ("X", "T", "M", "L", "K")
FIELD_LINE = re.compile(r"^([A-Za-z]):\s*(.*)$")  # an ABC field line such as "M:6/8" (header or body)
_QUOTED = re.compile(r'"[^"]*"')
_BANG_DECORATION = re.compile(r"![^!\s]*!|\+[^+\s]*\+")
_GRACE = re.compile(r"\{[^}]*\}")
_INLINE_FIELD = re.compile(r"\[([A-Za-z]):([^\]]*)\]")
_SLUR_OPEN = re.compile(r"\((?!\d)")
# Outside inline fields, body letters other than notes (A-G a-g), rests (z x Z) are decorations
# (~ . H-W h-w: trills, rolls, bowings...) or spacers (y, `).
# A lone ! is an old-style line break and * a spacer.
_DECORATION_CHARS = re.compile(r"[~.`H-Wh-wYy!*]")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # mojibake in some titles


def require_music21() -> ModuleType:
    """The music21 module, or a CorpusError that says how to install it."""
    try:
        import music21
    except ImportError:
        raise CorpusError(f"this needs music21, the optional [music] extra: {INSTALL_HINT}") from None
    return music21


def music21_corpus_dir() -> Path:
    module_file = require_music21().__file__
    assert module_file is not None  # an installed package (not a namespace one) has a file
    return Path(module_file).resolve().parent / "corpus"


def split_tunes(text: str) -> list[str]:
    """Raw ABC text -> one string per tune (from its X: line; file headers are dropped)."""
    tunes: list[list[str]] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if re.match(r"^X:", line):
            tunes.append([line])
        elif tunes:
            tunes[-1].append(line)
    return ["\n".join(lines) for lines in tunes]


def split_documents(text: str) -> list[str]:
    """Text -> the blank-line-separated documents (tunes) in it, stripped, none empty."""
    docs = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n"))
    return [d.strip("\n") for d in docs if d.strip()]


def _clean_body_line(line: str) -> str:
    line = line.split("%", 1)[0]
    line = _QUOTED.sub("", line)
    line = _BANG_DECORATION.sub("", line)
    line = _GRACE.sub("", line)
    kept_fields: list[str] = []

    def protect(match: re.Match[str]) -> str:
        if match.group(1) not in "MLK":  # [P:A], [Q:...] and the like carry no notes
            return ""
        kept_fields.append(f"[{match.group(1)}:{match.group(2).strip()}]")
        return f"\x00{len(kept_fields) - 1}\x00"

    line = _INLINE_FIELD.sub(protect, line)
    line = _SLUR_OPEN.sub("", line).replace(")", "")
    line = _DECORATION_CHARS.sub("", line)
    line = line.replace("\\", " ")
    line = re.sub(r"\x00(\d+)\x00", lambda m: kept_fields[int(m.group(1))], line)
    return " ".join(line.split())


def normalize_tune(raw: str, number: int) -> str | None:
    """One raw tune -> its normalized text with X:`number`, or None when it is out of scope
    (several voices, no meter or a free one, no key, no notes)."""
    header: dict[str, str] = {}
    body: list[str] = []
    in_body = False
    for line in raw.split("\n"):
        if line.lstrip().startswith("%"):
            continue
        field = FIELD_LINE.match(line)
        if field:
            key, value = field.group(1), field.group(2).split("%", 1)[0].strip()
            if key == "V":
                return None  # multi-voice: out of scope for a one-line melody model
            if not in_body:
                if key in HEADER_ORDER and key not in header:
                    header[key] = " ".join(_CONTROL_CHARS.sub("", value).split())
                in_body = in_body or key == "K"
            elif key in "MLK" and value:  # a change of meter, unit length or key mid-tune
                body.append(f"{key}:{' '.join(value.split())}")
            continue
        if in_body:
            cleaned = _clean_body_line(line)
            if cleaned:
                body.append(cleaned)
    meter = header.get("M", "")
    if not meter or meter.lower() == "none" or not re.fullmatch(r"C\|?|\d+/\d+", meter) or "K" not in header:
        return None
    if not any(re.search(r"[A-Ga-g]", b) for b in body if not FIELD_LINE.match(b)):
        return None
    header.setdefault("T", "Untitled")
    header.setdefault("L", "1/16" if _meter_value(meter) < 0.75 else "1/8")  # ABC's default
    header["X"] = str(number)
    lines = [f"{k}:{header[k]}" for k in HEADER_ORDER] + body
    return "\n".join(lines)


def _meter_value(meter: str) -> float:
    if meter.startswith("C"):
        return 1.0
    num, den = meter.split("/")
    return int(num) / int(den)


def build_folk_abc(root: Path | None = None) -> str:
    """The folk-abc corpus text: every in-scope tune of the collections under `root` (default:
    music21's bundled corpus), normalized, numbered from 1, one blank line between tunes.
    Files are read in sorted order, so the output is byte-for-byte deterministic."""
    if root is None:
        base = music21_corpus_dir()
        files = [f for name in FOLK_COLLECTIONS for f in sorted((base / name).rglob("*.abc"))]
    else:
        files = sorted(Path(root).rglob("*.abc"))
    if not files:
        raise CorpusError(f"no .abc files under {root or music21_corpus_dir()}")
    tunes: list[str] = []
    for path in files:
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:  # older collections are Latin-1
            text = data.decode("latin-1")
        for raw in split_tunes(text):
            tune = normalize_tune(raw, len(tunes) + 1)
            if tune is not None:
                tunes.append(tune)
    return "\n\n".join(tunes) + "\n"


# ----------------------------------------------------------------------------- corruptions
# Damaged copies of real tunes, the negatives that calibrate `abc check` (see `calibrate`).

_BAR_SEPARATOR = re.compile(r"(:*\|[|\]:]*\d?|::|\[\d)")
_NOTE = re.compile(r"[_^=]*[A-Ga-gz][,']*\d*/*\d*")


def split_header_body(tune: str) -> tuple[list[str], list[str]]:
    lines = tune.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("K:"):
            return lines[: i + 1], lines[i + 1 :]
    return lines, []


def _bar_slots(body: list[str]) -> list[tuple[int, int]]:
    """(line, piece) positions of the bar contents of a body, split at bar lines."""
    slots = []
    for li, line in enumerate(body):
        if FIELD_LINE.match(line):
            continue
        pieces = _BAR_SEPARATOR.split(line)
        slots += [(li, pi) for pi in range(0, len(pieces), 2) if re.search(r"[A-Ga-g]", pieces[pi])]
    return slots


def corrupt_swap_bars(tune: str, donor: str, rng: random.Random, count: int | None = None) -> str:
    """`count` bars of `tune` (not its first or last; default a quarter of them, at least 3)
    replaced by bars of `donor`, a tune in another meter."""
    header, body = split_header_body(tune)
    _, donor_body = split_header_body(donor)
    slots = _bar_slots(body)[1:-1]
    count = count if count is not None else max(3, len(slots) // 4)
    donor_bars = [_BAR_SEPARATOR.split(donor_body[li])[pi] for li, pi in _bar_slots(donor_body)]
    if not slots or not donor_bars:
        return tune
    split = {li: _BAR_SEPARATOR.split(line) for li, line in enumerate(body)}
    for li, pi in rng.sample(slots, min(count, len(slots))):
        split[li][pi] = f" {rng.choice(donor_bars).strip()} "
    return "\n".join(header + ["".join(split[li]).strip() for li in range(len(body))])


def corrupt_delete_notes(tune: str, rng: random.Random, count: int | None = None) -> str:
    """`count` random notes or rests of the body deleted (default one in 20, at least 3)."""
    header, body = split_header_body(tune)
    spots = [
        (li, m.start(), m.end())
        for li, line in enumerate(body)
        if not FIELD_LINE.match(line)
        for m in _NOTE.finditer(line)
    ]
    count = count if count is not None else max(3, len(spots) // 20)
    for li, start, end in sorted(rng.sample(spots, min(count, len(spots))), key=lambda s: (s[0], -s[1])):
        body[li] = body[li][:start] + body[li][end:]
    return "\n".join(header + body)


def corrupt_remove_header(tune: str, rng: random.Random) -> str:
    """The tune without one of its title, meter or key lines."""
    field = rng.choice(["T:", "M:", "K:"])
    header, body = split_header_body(tune)
    return "\n".join([line for line in header if not line.startswith(field)] + body)


# A note, rest or chord with its length: the units a bar is made of.
_NOTE_OR_CHORD = re.compile(r"\[[^\]|:]*\][\d/]*|[_^=]*[A-Ga-gz][,']*\d*/*\d*")


def _damage_bars(tune: str, rng: random.Random, count: int | None, change: Callable[[str], str | None]) -> str:
    """`count` bars of the body (not its first or last; default a quarter, at least 3) rewritten
    by `change` (bar text -> new text, or None to leave that bar be)."""
    header, body = split_header_body(tune)
    slots = _bar_slots(body)[1:-1]
    count = count if count is not None else max(3, len(slots) // 4)
    split = {li: _BAR_SEPARATOR.split(line) for li, line in enumerate(body)}
    for li, pi in rng.sample(slots, min(count, len(slots))):
        changed = change(split[li][pi])
        if changed is not None:
            split[li][pi] = f" {changed} "
    return "\n".join(header + ["".join(split[li]).strip() for li in range(len(body))])


def corrupt_long_bars(tune: str, rng: random.Random, count: int | None = None) -> str:
    """`count` bars (not the first or last; default a quarter, at least 3) written twice over,
    so each is twice its length: the bar music21 cuts into two full ones."""
    return _damage_bars(tune, rng, count, lambda bar: f"{bar.strip()} {bar.strip()}")


def corrupt_short_bars(tune: str, rng: random.Random, count: int | None = None) -> str:
    """`count` bars of two notes or more (not the first or last; default a quarter, at least 3)
    cut to the first half of their notes, rests and chords."""

    def halve(bar: str) -> str | None:
        units = list(_NOTE_OR_CHORD.finditer(bar))
        return bar[: units[(len(units) + 1) // 2].start()].strip() if len(units) >= 2 else None

    return _damage_bars(tune, rng, count, halve)
