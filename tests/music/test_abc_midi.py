"""MIDI from ABC text: every tune music21 reads gets a file (read back here with mido, an
independent reader), and tune text is only ever parsed as data, never as a path whose pickle
cache music21 would load."""

from __future__ import annotations

import os
import pickle
import re
import zlib
from pathlib import Path

import pytest
from conftest import REPO

from charrnn.errors import WriteError

# 16 eighth notes, each section repeated: 32, 8.0 s at music21's default 120 quarter notes a minute.
REPEATED = "X:1\nT:Count\nM:2/4\nL:1/8\nK:C\n|:CDEF|GABc:|\n|:cdef|gfed:|"
# music21 cannot expand these repeats (an end repeat, then a start repeat that never ends):
# the tune is written once through as it stands, 16 eighth notes.
BAD_REPEATS = "X:1\nT:Bad repeats\nM:2/4\nL:1/8\nK:C\nCDEF | GABc :| |: cdef | gfed |]"
# A bar too long for 3/4: music21 cuts it and reuses one TimeSignature object in both halves,
# which its own MIDI writer refuses ("already found in this Stream"). 7 quarter notes.
LONG_BAR = "X:1\nT:Long bar\nM:3/4\nL:1/4\nK:C\nC D E F | G A B |"
CHORDS = "X:1\nT:Chords\nM:3/4\nL:1/4\nK:G\n[GBd] B d | [DFA]3 |]"  # 3 + 1 + 1 + 3 notes


@pytest.fixture
def music21():
    return pytest.importorskip("music21", reason="needs music21 (the [music] extra)")


@pytest.mark.parametrize(
    "tune, notes, seconds, expanded",
    [(REPEATED, 32, 8.0, True), (BAD_REPEATS, 16, 4.0, False), (LONG_BAR, 7, 3.5, True), (CHORDS, 8, 3.0, True)],
)
def test_midi_read_back_has_the_notes_tempo_and_length(music21, read_midi, tune, notes, seconds, expanded):
    from charrnn.music.midi import parse_abc, score_midi

    midi, was_expanded = score_midi(parse_abc(tune))
    got_notes, tempos, length = read_midi(midi)
    assert got_notes == notes and was_expanded is expanded
    assert tempos and all(t == 500_000 for t in tempos)  # 120 quarter notes a minute
    assert seconds <= length <= seconds + 1.5  # music21 adds a short delay at the end


SECTIONS = ["CDEF | DEFG", "EFGA | FGAB", "GABc | ABcd", "Bcde | cdef", "defg | efga", "fgab | gabc"]  # 8 notes each


def _chain(bar_line: str) -> str:
    return "X:1\nT:Chain\nM:2/4\nL:1/8\nK:C\n" + f" {bar_line} ".join(SECTIONS) + " :|"


@pytest.mark.parametrize("bar_line", [":|:", "::", ":||:"])
def test_each_section_between_end_start_repeats_plays_twice(music21, read_midi, bar_line):
    # music21 read `:|:` as an end repeat alone, and each such end replayed the whole tune so far:
    # 13 sections of a real folk-abc tune grew to 2^14 bars and its MIDI export never ended.
    from charrnn.music.midi import parse_abc, score_midi

    midi, expanded = score_midi(parse_abc(_chain(bar_line)))
    assert read_midi(midi)[0] == 2 * 8 * len(SECTIONS) and expanded


def test_an_end_repeat_with_no_start_repeats_from_the_previous_end(music21, read_midi):
    # `A :| B :|` is AABB in ABC; music21 alone replays the whole tune so far at each end repeat
    # (AA AAB AAB), doubling a tune for each section that leaves its start implied.
    from charrnn.music.midi import parse_abc, score_midi

    midi, expanded = score_midi(parse_abc(_chain(":|")))
    assert read_midi(midi)[0] == 2 * 8 * len(SECTIONS) and expanded


def test_midi_note_count_matches_the_expanded_score(music21, read_midi, score_notes):
    from test_music import JIG, REEL  # a sibling module: pytest puts tests/music on the path

    from charrnn.music.midi import tune_midi

    for tune in (REEL, JIG):
        notes, _, length = read_midi(tune_midi(tune))
        assert notes == score_notes(tune) > 30 and length > 0


def test_every_tune_gets_midi_valid_or_not_and_the_verdict_does_not_change(music21, read_midi, tmp_path):
    from charrnn.music.check import check_tune, check_tune_midi

    broken = LONG_BAR.replace("G A B", "G A B c d e f")  # far too long a bar: not valid
    for tune in (REPEATED, BAD_REPEATS, LONG_BAR, broken):
        alone, none = check_tune_midi(tune, render=False)
        written = check_tune(tune, midi_path=tmp_path / "t.mid")
        assert none is None and alone.valid == written.valid and not written.midi_error
        assert read_midi(Path(written.midi).read_bytes())[0] > 0
    assert not check_tune(broken).valid


def test_unwritable_midi_folder_is_one_line(music21, cli, tmp_path):
    (tmp_path / "t.abc").write_text(REPEATED + "\n", encoding="utf-8")
    (tmp_path / "a-file").write_text("x")
    result = cli("abc", "check", tmp_path / "t.abc", "--midi", tmp_path / "a-file" / "midi")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: cannot write {tmp_path / 'a-file'}")
    from charrnn.music.check import write_midi

    with pytest.raises(WriteError):
        write_midi(tmp_path / "a-file" / "x.mid", b"MThd")


def test_tune_text_naming_a_file_never_loads_music21s_pickle_cache(music21, cli, tmp_path, monkeypatch):
    from music21 import converter

    from charrnn.music.check import check_tune

    tune_file = tmp_path / "tune.abc"
    tune_file.write_text(REPEATED, encoding="utf-8")
    os.utime(tune_file, (1_000_000_000, 1_000_000_000))  # older than the cache, so the cache wins
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(converter.environLocal, "getRootTempDir", lambda: scratch)
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    planted = converter.PickleFilter(tune_file).getPickleFp(scratch, zipType="gz")
    planted.write_bytes(zlib.compress(pickle.dumps(Payload())))

    # A document whose whole text is that file's path: through the checker, with MIDI...
    assert not check_tune(str(tune_file), midi_path=tmp_path / "x.mid").valid
    # ... and through the command, with the path as one tune of a file.
    (tmp_path / "tunes.abc").write_text(f"{REPEATED}\n\n{tune_file}\n", encoding="utf-8")
    assert cli("abc", "check", tmp_path / "tunes.abc", "--midi", tmp_path / "midi").exit_code == 1  # the path: invalid
    assert not marker.exists() and sorted(p.name for p in scratch.iterdir()) == [planted.name]

    # music21's own parse() of the same text loads the planted pickle: the plant is where it looks.
    try:
        converter.parse(str(tune_file))
    except Exception:  # what it thawed is no score
        pass
    assert marker.exists()


def test_music_code_never_hands_music21_a_path():
    """The calls that can reach music21's pickle cache (parse of a string that may name a file,
    parseFile, the corpus and its cache, thaw) appear nowhere in charrnn; parseData does not."""
    package = REPO / "charrnn"
    risky = re.compile(r"converter\.parse\(|parseFile\(|parseURL\(|corpus\.parse\(|freezeThaw|\bthaw\(|\.parse\(")
    found = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if risky.search(line) and not line.lstrip().startswith("#")
    ]
    assert found == []
