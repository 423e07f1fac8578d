"""ABC tunes: the folk-abc builder, the checker (valid tunes and each kind of corruption),
MIDI output, and `sample --tunes`."""

from __future__ import annotations

import json
import random
import re
import sys

import pytest
from conftest import one_error_line

from charrnn.errors import CorpusError
from charrnn.music.folk import (
    build_folk_abc,
    corrupt_delete_notes,
    corrupt_remove_header,
    corrupt_swap_bars,
    require_music21,
    split_documents,
)

REEL = """X:1
T:The Test Reel
M:4/4
L:1/8
K:D
A|:d2fd efdB|AFDF A2FA|d2fd efdB|AFEF D3:|
|:e|f2af gfed|cAeA fAeA|f2af gfed|cAeg fd d2:|"""

JIG = """X:2
T:First and Second
M:6/8
L:1/8
K:G
D|:G2B dBG|A2B cBA|G2B dBG|1 FAF G2D:|2 FAF G3||
|:d2e fed|c2d edc|B2c dcB|AGF G3:|"""

WALTZ = """X:3
T:Waltz
M:3/4
L:1/4
K:C
C E G|c2 G|E G c|e3|d B G|c3|]"""

RAW_COLLECTION = {
    "b.abc": """% a file header comment
X:7
T:Second File Tune
N:a note that is dropped
R:reel
M:2/4
L:1/16
K:G
"Em"G2A2 B2c2|!trill!d4 {g}d4|\\
~e2d2 (B2A2)|G8|]

X:8
T:Free meter
M:none
K:C
CDEF GABc
""",
    "a.abc": """X:1
T:First File Tune
Z:someone
M:6/8
K:D
A|d2e fed|uB2A vA2F|d2e f2a|1 gfe d2:|2 gfe d3|]

X:2
T:Two voices
M:4/4
K:C
V:1
CDEF GABc|
V:2
C,D,E,F, G,A,B,C|
""",
}


@pytest.fixture
def music21():
    return pytest.importorskip("music21", reason="needs the [music] extra (pip install music21)")


def _collection(root):
    root.mkdir()
    for name, text in RAW_COLLECTION.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


# ----------------------------------------------------------------------------- the builder


def test_build_is_deterministic_and_normalized(tmp_path):
    first = build_folk_abc(_collection(tmp_path / "c1"))
    assert first == build_folk_abc(_collection(tmp_path / "c2"))
    tunes = split_documents(first)
    # Files in sorted order; the two-voice and the free-meter tunes are out of scope.
    assert [t.split("\n")[1] for t in tunes] == ["T:First File Tune", "T:Second File Tune"]
    assert [t.split("\n")[0] for t in tunes] == ["X:1", "X:2"]  # renumbered
    assert first.count("\n\n") == 1 and first.endswith("\n") and "\n\n\n" not in first
    reel = tunes[1]
    assert reel.split("\n")[:5] == ["X:2", "T:Second File Tune", "M:2/4", "L:1/16", "K:G"]
    for dropped in ('"', "!", "{", "~", "(", "N:", "R:", "%", "\\"):
        assert dropped not in reel
    assert "G2A2 B2c2|d4 d4|" in reel
    assert "L:1/8" in tunes[0]  # ABC's default unit length for 6/8, made explicit
    assert "|1 gfe d2:|2 gfe d3|]" in tunes[0] and "uB2A" not in tunes[0]


def test_missing_music21_says_how_to_install(monkeypatch, cli, tmp_path):
    monkeypatch.setitem(sys.modules, "music21", None)
    with pytest.raises(CorpusError, match="pip install"):
        require_music21()
    (tmp_path / "t.abc").write_text(REEL, encoding="utf-8")
    result = cli("abc", "check", "t.abc")
    assert result.exit_code != 0
    assert "pip install" in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- the checker


def test_real_tunes_pass(music21):
    from charrnn.music.check import STRICT, check_tunes

    summary = check_tunes([REEL, JIG, WALTZ], allowance=STRICT)
    assert [r.problems() for r in summary.results] == [[], [], []]
    assert (summary.tunes, summary.valid) == (3, 3)
    assert summary.results[1].title == "First and Second"


@pytest.mark.parametrize(
    "damaged, problem",
    [
        (REEL.replace("T:The Test Reel\n", ""), "no title"),
        (REEL.replace("M:4/4\n", ""), "no meter"),
        (REEL.replace("K:D\n", "") + "\n", "no key"),
        (REEL.replace("AFDF A2FA", "AFD A2FA").replace("cAeA fAeA", "cAeA fA"), "bars that do not fit"),
        (JIG.replace("A2B cBA|G2B", "A2B cBA d2|G2B").replace("c2d edc", "c2d edc d"), "bars that do not fit"),
        ("X:9\nT:Words\nM:4/4\nL:1/8\nK:C\n", "no notes"),
    ],
)
def test_corruptions_fail(music21, damaged, problem):
    from charrnn.music.check import check_tune

    result = check_tune(damaged)
    assert not result.valid
    assert any(p.startswith(problem) for p in result.problems()), result.problems()


@pytest.mark.parametrize("symbol", ["C", "C|"])
def test_common_and_cut_time_are_checked(music21, symbol):
    from charrnn.music.check import STRICT, check_tune

    # music21 cannot build a TimeSignature from "C|"; the checker must still hold bars to 4/4 or 2/2.
    tune = REEL.replace("M:4/4", f"M:{symbol}")
    assert check_tune(tune, allowance=STRICT).valid
    damaged = tune.replace("AFDF A2FA|", "AFD A2F|").replace("cAeA fAeA", "cAe fAe")
    assert check_tune(damaged, allowance=STRICT).bad_bars


def test_misfit_rules_on_bar_layouts():
    from charrnn.music.bars import Bar, misfit_bars

    def bars(*lengths, ends=(), meter=4.0):
        return [Bar(i + 1, q, meter, i in ends) for i, q in enumerate(lengths)]

    assert misfit_bars(bars(1, 4, 4, 3)) == []  # pickup and short last bar
    assert misfit_bars(bars(4, 3, 4, 4)) == [2]  # a short bar inside a section
    assert misfit_bars(bars(4, 5, 4, 4)) == [2]  # a long bar anywhere
    assert misfit_bars(bars(1, 4, 3, 1, 4, 3, ends=(2,))) == []  # 3 + 1 across a repeat
    assert misfit_bars(bars(1, 4, 3, 2, 4, 3, ends=(2,))) == [4]  # 3 + 2 is not one bar
    assert misfit_bars([Bar(1, 3.0, None), Bar(2, 4.0, 4.0)]) == []  # no meter in force yet
    assert misfit_bars(bars(4, 4, 3, 3, 3, 3, 4, 4)) == []  # an unmarked change of meter (a run of four)
    assert misfit_bars(bars(4, 4, 3, 3, 3, 4, 4, 4)) == [3, 4, 5]  # three equal short bars are damage


def test_bars_music21_split_are_joined_back(music21):
    from charrnn.music.check import STRICT, check_tune

    # music21 cuts each 3/4 bar of this 2/4 tune into a full bar and a remainder; the checker
    # sees the bars as written: six bars of 3/4, an unmarked change of meter, so the tune fits.
    tune = (
        "X:1\nT:t\nM:2/4\nL:1/16\nK:G\nD4 | B2B2B4A4 | G4z4G4 | d2d2d4c4 | B4z4\nD2D2 | G2G2A4A4 | B4A4B2d2 | d2c4 |]"
    )
    result = check_tune(tune, allowance=STRICT)
    assert result.valid and result.bars == 8, result.problems()  # the pickup and 7 bars
    # One such bar in a 2/4 tune is a misfit (one long bar, not a full one and a short one).
    one = "X:1\nT:t\nM:2/4\nL:1/16\nK:G\nD4 | B2B2A4 | G4z4G4 | d2d2c4 | B4z4 | D2D2G4 | B4A4 | d2c4 |]"
    assert check_tune(one, allowance=STRICT).bad_bars == [2]


def test_misfit_allowance():
    from charrnn.errors import ConfigError
    from charrnn.music.check import DEFAULT_ALLOWANCE, MisfitAllowance

    assert [DEFAULT_ALLOWANCE.limit(n) for n in (0, 9, 16, 17, 25, 34)] == [1, 1, 1, 2, 3, 4]
    assert MisfitAllowance(0, 0.0).limit(100) == 0
    with pytest.raises(ConfigError):
        MisfitAllowance(1, 1.5)


def test_long_bar_before_a_section_end_is_caught(music21):
    from charrnn.music.check import STRICT, check_tune

    head = "X:1\nT:t\nM:2/4\nL:1/16\nK:G\n"
    for close in (":|", "||", "|]"):
        tune = head + f"G4z4 | d2d2c4 | B4z4 | D2D2G4A4 {close}\nB4A4 | d2c4B2 | G4z4 | G4G4 |]"
        assert check_tune(tune.replace("D2D2G4A4", "D2D2G4"), allowance=STRICT).valid, close
        assert len(check_tune(tune, allowance=STRICT).bad_bars) == 1, close  # the 3/4 bar, nothing else


def test_check_cli_allowance_options_reach_the_checker(music21, cli, tmp_path):
    tunes = tmp_path / "t.abc"
    tunes.write_text(REEL.replace("AFDF A2FA", "AFD A2FA") + "\n")  # one bar a note short
    default = json.loads(cli("abc", "check", str(tunes), "--json").stdout)
    strict = cli("abc", "check", str(tunes), "--json", "--max-misfit-bars", "0", "--max-misfit-share", "0")
    assert default["valid"] == 1 and json.loads(strict.stdout)["valid"] == 0


def test_check_cli_bad_allowance_is_one_line(music21, cli, tmp_path):
    tunes = tmp_path / "t.abc"
    tunes.write_text(REEL + "\n")
    result = cli("abc", "check", str(tunes), "--max-misfit-share", "2")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "--max-misfit-share" in result.stderr


def test_calibrate_reports_each_allowance(music21):
    from charrnn.music.calibrate import calibrate

    result = calibrate([REEL, JIG, WALTZ], sample=3, seed=0)
    assert result["sample"] == 3
    rows = [result[key] for key in ("max(bars=0, share=0)", "max(bars=1, share=0)", "max(bars=1, share=0.12)")]
    strict, default = rows[0], rows[2]
    assert set(default) == {
        "real",
        "swap_bars",
        "delete_notes",
        "remove_header",
        "long_bars",
        "short_bars",
        "corrupted",
        "real_95",
        "corrupted_95",
    }
    assert default["real_95"] == [pytest.approx(0.4385, abs=1e-4), 1.0]  # Wilson's interval for 3 of 3
    assert default["real"] == 1.0 and default["remove_header"] == 1.0
    assert strict["delete_notes"] == 1.0 and strict["swap_bars"] > 0.5  # three deletions always show
    assert strict["long_bars"] == 1.0 and strict["short_bars"] == 1.0  # three bars each, always seen
    for kind in ("swap_bars", "delete_notes", "long_bars", "short_bars", "corrupted"):  # looser never rejects more
        assert [row[kind] for row in rows] == sorted((row[kind] for row in rows), reverse=True)
    kinds = ("swap_bars", "delete_notes", "remove_header", "long_bars", "short_bars")
    assert default["corrupted"] == pytest.approx(sum(default[k] for k in kinds) / 5, abs=1e-4)


def test_corruption_functions_are_caught(music21):
    from charrnn.music.check import STRICT, check_tune

    rng = random.Random(3)
    assert not check_tune(corrupt_swap_bars(REEL, WALTZ, rng, count=3)).valid
    assert not check_tune(corrupt_delete_notes(REEL, rng, count=3), allowance=STRICT).valid
    for seed in range(3):
        damaged = corrupt_remove_header(JIG, random.Random(seed))
        assert damaged != JIG and not check_tune(damaged).valid


def test_check_cli_json_midi_and_compact_lines(music21, cli, tmp_path, read_midi, score_notes):
    no_key = REEL.replace("K:D\n", "").replace("The Test Reel", "[/a] Keyless")  # Rich markup in a title
    (tmp_path / "tunes.abc").write_text("\n\n".join([REEL, JIG, no_key]) + "\n", encoding="utf-8")
    result = cli("abc", "check", "tunes.abc", "--json", "--midi", "midi")
    assert result.exit_code == 1, result.stderr  # a tune is not valid: the check fails, as a linter does
    summary = json.loads(result.stdout)
    assert (summary["tunes"], summary["valid"]) == (3, 2)
    assert summary["valid_95"][0] < 2 / 3 < summary["valid_95"][1]
    files = sorted((tmp_path / "midi").glob("*.mid"))
    # A MIDI file for every tune music21 reads, the invalid one (no key) included.
    assert [f.name for f in files] == ["001-the-test-reel.mid", "002-first-and-second.mid", "003-a-keyless.mid"]
    for tune, file in zip([REEL, JIG, no_key], files):
        notes, tempos, length = read_midi(file.read_bytes())
        assert notes == score_notes(tune) > 30 and tempos and length > 0

    lines = cli("abc", "check", "tunes.abc", "--midi", "midi")
    assert lines.exit_code == 1 and "error" not in lines.stderr, lines.stderr
    out = lines.stdout.splitlines()
    assert len(out) == 4 and all(len(line) <= 79 for line in out)
    assert out[0].split()[:2] == ["1", "valid"] and out[2].split()[:3] == ["3", "invalid", "[/a]"]
    assert "no key" in out[2] and out[3].startswith("2 of 3 tunes valid (67%; 95% interval")
    assert lines.stderr.startswith("wrote 3 MIDI files to midi/")


# ----------------------------------------------------------------------------- sampling


def test_sample_tunes_gives_whole_renumbered_tunes(music21, cli, tmp_path, read_midi, score_notes):
    corpus = tmp_path / "tunes.abc"
    two = "X:1\nT:Reel\nM:2/4\nL:1/8\nK:D\nA|:dfed|cAFA|dfed|cdd2:|\n\nX:2\nT:Jig\nM:6/8\nL:1/8\nK:G\nGAB dBG|A3 A2D|]\n\n"
    corpus.write_text(two * 100, encoding="utf-8")
    small = ["--hidden", "64", "--embed", "16", "--layers", "1", "--seq-len", "32", "--batch-size", "8", "--lr", "0.01"]
    trained = cli("train", corpus, *small, "--steps", "120", "--out", "run", "--seed", "1")
    assert trained.exit_code == 0, trained.stderr
    result = cli("sample", "run", "--tunes", "3", "--seed", "1", "--temp", "0.5")
    assert result.exit_code == 0, result.stderr
    tunes = split_documents(result.stdout)
    assert len(tunes) == 3 and result.stdout.count("\n\n") == 2 and not result.stdout.endswith("\n\n")
    assert [t.split("\n")[0] for t in tunes] == ["X:1", "X:2", "X:3"]
    assert all("\nK:" in t for t in tunes)

    cut = cli("sample", "run", "--tunes", "2", "--length", "25", "--seed", "1", "--temp", "0.5")
    assert "note: left out" in cut.stderr and "unfinished tune(s) (no end within --length 25)" in cut.stderr
    assert "ran past --length 25 unfinished" in one_error_line(cut, alone=False)  # no tune fits 25 characters

    refused = cli("sample", "run", "--tunes", "2", "--prime", "X:")
    assert refused.exit_code != 0 and "--tunes" in refused.stderr

    valid = cli("sample", "run", "--tunes", "3", "--valid-only", "--midi", "midi", "--seed", "1", "--temp", "0.5")
    assert valid.exit_code == 0, valid.stderr
    from charrnn.music.check import check_tune

    tunes = split_documents(valid.stdout)
    assert [t.split("\n")[0] for t in tunes] == ["X:1", "X:2", "X:3"] and all(check_tune(t).valid for t in tunes)
    files = sorted((tmp_path / "midi").glob("*.mid"))
    assert [f.name[:4] for f in files] == ["001-", "002-", "003-"]
    for tune, file in zip(tunes, files):
        notes, tempos, length = read_midi(file.read_bytes())
        assert notes == score_notes(tune) > 0 and tempos and length > 0
    drew = valid.stderr.splitlines()[0]
    assert drew.startswith("drew ") and ": 3 valid" in drew

    # Without --valid-only every tune is printed, and each one with notes gets its MIDI file.
    every = cli("sample", "run", "--tunes", "2", "--midi", "every", "--seed", "2", "--temp", "0.5")
    assert every.exit_code == 0 and len(split_documents(every.stdout)) == 2, every.stderr
    assert every.stderr == "wrote 2 MIDI files to every/\n"

    # Every tune longer than --length 30: none valid within the bound; what was drawn is said.
    short = cli("sample", "run", "--tunes", "2", "--valid-only", "--max-attempts", "4", "--length", "30", "--seed", "1")
    assert short.exit_code == 1 and short.stdout == ""
    drew, error = short.stderr.splitlines()
    # At most 4 drawn: a tune that runs on also uses up the characters the sampler may write.
    n = re.fullmatch(r"drew ([1-4]) tunes?: 0 valid; rejected: \1 unfinished \(no end within --length 30\)", drew)
    n = n.group(1)
    assert (
        error
        == f"error: only 0 of 2 tunes passed the checker in {n} drawn (raise --max-attempts, train longer, or raise --length above 30)"
    )
    for bad in (
        ["--valid-only"],
        ["--tunes", "2", "--max-attempts", "5"],
        ["--tunes", "3", "--valid-only", "--max-attempts", "2"],
    ):
        refused = cli("sample", "run", *bad)
        assert refused.exit_code != 0 and refused.stderr.count("\n") == 1, bad
