"""The bar check reads bars from the ABC text's own bar lines (music21 re-bars what it reads),
tells unfinished tunes from finished ones, and `abc check` says when a file holds no tunes."""

from __future__ import annotations

import json
import random
from fractions import Fraction

import pytest

from charrnn.music.folk import corrupt_long_bars, corrupt_short_bars

HEAD = "X:1\nT:t\nM:2/4\nL:1/8\nK:C\n"


@pytest.fixture
def music21():
    return pytest.importorskip("music21", reason="needs the [music] extra (pip install music21)")


def check(body: str, head: str = HEAD, strict: bool = True):
    from charrnn.music.check import DEFAULT_ALLOWANCE, STRICT, check_tune

    return check_tune(head + body, allowance=STRICT if strict else DEFAULT_ALLOWANCE)


# ----------------------------------------------------------------------------- bars as written


def test_double_length_bars_are_misfits_though_music21_cuts_them_into_full_ones(music21):
    from charrnn.music.midi import parse_abc

    body = "GABc|e8|e8|d4|GABc|]"
    # music21 cuts each 8-eighth bar into two full 2/4 measures: 7 measures, all of them full.
    measures = list(parse_abc(HEAD + body).parts[0].getElementsByClass("Measure"))
    assert [float(m.duration.quarterLength) for m in measures] == [2.0] * 7
    result = check(body, strict=False)
    assert (result.bars, result.bad_bars, result.valid) == (5, [2, 3], False)
    assert result.problems() == ["bars that do not fit the meter: 2, 3"]


def test_bars_are_measured_with_fewer_than_two_plain_bar_lines(music21):
    # music21 makes no measures at all of a tune with one plain bar line.
    assert (check("GABc|d4|]").bars, check("GABc|d4|]").bad_bars, check("GABc|d4|]").valid) == (2, [], True)
    assert (check("GABc|d8|]").bars, check("GABc|d8|]").bad_bars) == (2, [2])


@pytest.mark.parametrize(
    "body, bars, bad",
    [
        ("GABc|e2|GABc|GABc|]", 4, [2]),  # half a bar inside a section
        ("GABc|GABcde|GABc|GABc|]", 4, [2]),  # a 3/4 bar, which music21 splits into 2/4 + 1/4
        ("G|ABcd|e4|GA|]", 4, []),  # a pickup (bar 0) and a short last bar
        ("GABc|e4:|GA|]", 3, []),  # a short bar after a repeat, the tune's last
        ("GABc|e4-|e8|d4|]", 4, [3]),  # a double bar tied from a full one
    ],
)
def test_bar_lengths_and_numbers(music21, body, bars, bad):
    result = check(body)
    assert (result.bars, result.bad_bars) == (bars, bad), result.problems()


def test_line_ends_close_bars_where_the_tune_does_so():
    from charrnn.music.bars import written_bars
    from charrnn.music.scan import scan_bars

    def lengths(body, head=HEAD):
        return [(b.number, b.length) for b in written_bars(scan_bars(head + body))]

    # Essen's habit: a line end closes a full bar without a bar line.
    assert lengths("G2|ABcd|e4\nf4|g2a2|") == [(0, 1.0), (1, 2.0), (2, 2.0), (3, 2.0), (4, 2.0)]
    # A bar that runs on across a line end, and a phrase's end and the next one's pickup.
    assert lengths("ABcd|e2\nf2|g4|]") == [(1, 2.0), (2, 2.0), (3, 2.0)]
    # Otherwise a line end is no bar line, as in ABC: one bar, too short or too long.
    assert lengths("ABcd|e2\nf|g4|]") == [(1, 2.0), (2, 1.5), (3, 2.0)]
    assert lengths("ABcd|e3\nfga|g4|]") == [(1, 2.0), (2, 3.0), (3, 2.0)]
    # A whole bar before the line end, the next one short: the line end closed the whole one.
    assert lengths("ABcd|e4\nf|g4|]") == [(1, 2.0), (2, 2.0), (3, 0.5), (4, 2.0)]
    # ABC's rules where music21 reads otherwise: an invisible rest x takes time, Z alone in a
    # bar rests that many bars, an inline [L:] changes the unit.
    assert lengths("x2 e2|Z2|[L:1/16]c4 d4|") == [(1, 2.0), (2, 2.0), (3, 2.0), (4, 2.0)]


@pytest.mark.parametrize(
    "body",
    [
        "G>A B<c|(3Bcd c|[CE]2 [DF]/[EG]/ z|{ag}e4|",
        "A/B/c/d/ e2|[M:3/4]e4f4g4|\nM:6/8\nL:1/8\nABc (3def|",
        "G3/2A/ B2|(3:2:2G2A2 B2|c//d//e/ f2|",
    ],
)
def test_bar_lengths_read_from_the_text_add_up_to_music21s_notes(music21, body):
    from charrnn.music.midi import parse_abc
    from charrnn.music.scan import scan_bars

    tune = HEAD + body
    part = parse_abc(tune).parts[0]
    theirs = sum(Fraction(n.quarterLength).limit_denominator(96) for n in part.flatten().notesAndRests)
    assert sum(not n.duration.isGrace for n in part.flatten().notesAndRests) > 5
    assert sum(s.length for s in scan_bars(tune)) * 4 == theirs


def test_long_and_short_bar_damage_is_caught(music21):
    from charrnn.music.check import check_tune

    tune = HEAD + "G|ABcd|e2f2|g4|fedc|B2A2|G4|ABcd|e2f2|g4|fedc|B2A2|G3|]"
    assert check_tune(tune).valid
    for damage in (corrupt_long_bars, corrupt_short_bars):
        damaged = damage(tune, random.Random(0))
        result = check_tune(damaged)
        assert damaged != tune and len(result.bad_bars) == 3 and not result.valid, (damage, damaged)


# ----------------------------------------------------------------------------- unfinished tunes


@pytest.mark.parametrize(
    "cut",
    [
        HEAD + "GABc|e4|GABc|e4|\nGABc|e4|GA",  # stops inside a bar, lines elsewhere end with bar lines
        HEAD + "GABc|e4|[CE",  # inside a chord
        HEAD + "GABc|e4|G>",  # inside broken rhythm
        HEAD + "GABc|e4|G-",  # on a tie
        "X:1\nT:t\nM:2/4\nL:1/",  # inside its header
        HEAD,  # nothing after its header
    ],
)
def test_cut_off_tunes_are_unfinished_never_valid(music21, cut):
    from charrnn.music.check import check_tune

    result = check_tune(cut)
    assert result.unfinished and not result.valid
    assert result.to_dict()["unfinished"] is True and result.to_dict()["valid"] is False
    assert result.problems()[0] == "unfinished: cut off before its end"
    assert result.reason == "unfinished (stops where no tune ends)"


@pytest.mark.parametrize(
    "body",
    [
        "GABc|e4|GABc|e4|]",
        "G2|ABcd|e4\nf4|g2a2\nB2c2|d2",  # Essen: no bar line ends any line, the pickup's bar is whole
        "GABc|e4|GABc|e4:|\nGABc|e4|GABc|e4",  # a whole last bar
        "G|ABcd|e4|GABc|e4|\nGABc|e4|GABc|e3",  # the pickup's rest of a bar
    ],
)
def test_finished_tunes_are_not_unfinished(music21, body):
    result = check(body, strict=False)
    assert not result.unfinished and result.to_dict()["unfinished"] is False, result.problems()
    assert result.valid


# ----------------------------------------------------------------------------- abc check


@pytest.mark.parametrize("name, text", [("code.py", "import os\n\n\ndef f():\n    return 1\n"), ("play.txt", None)])
def test_check_cli_on_a_file_without_tunes_is_one_line(music21, cli, tmp_path, name, text):
    if text is None:
        text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 30
    (tmp_path / name).write_text(text, encoding="utf-8")
    result = cli("abc", "check", name)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == f"error: {name} has no ABC tunes (no X: tune found: each tune starts with an X: line)\n"


def test_check_cli_lines_are_tidy_and_say_unfinished(music21, cli, tmp_path):
    long_error = "X:2\nT:A title much longer than the column\nM:4/0\nL:1/8\nK:C\nabcd|]"
    tunes = [HEAD + "GABc|e4|GABc|e4|]", long_error, HEAD + "GABc|e4|\nGABc|e4|GA", HEAD + "G|" + "e2|ABcd|" * 20 + "]"]
    (tmp_path / "t.abc").write_text("\n\n".join(tunes) + "\n", encoding="utf-8")
    result = cli("abc", "check", "t.abc")
    assert result.exit_code == 1, result.stderr  # not every tune is valid
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and all(len(line) <= 79 for line in lines)
    assert lines[0].split()[:2] == ["1", "valid"]
    assert lines[1].split()[:2] == ["2", "invalid"] and "Exception" not in lines[1] and "Error" not in lines[1]
    assert lines[2].split()[:2] == ["3", "unfinished"] and lines[2].endswith("cut off before its end")
    assert lines[3].endswith("misfit bars: 1, 3, 5, 7, 9, ...")
    assert lines[4].startswith("1 of 4 tunes valid (") and lines[4].endswith(", 1 unfinished")
    summary = json.loads(cli("abc", "check", "t.abc", "--json").stdout)
    assert summary["unfinished"] == 1 and [r["unfinished"] for r in summary["results"]] == [False, False, True, False]


def test_fit_problems_keeps_whole_words_and_counts_what_it_leaves_out():
    from charrnn.cli.music import fit_problems

    assert fit_problems(["no title", "no key"], 40) == "no title; no key"
    assert fit_problems(["does not parse: float division by zero"], 30) == "does not parse: float..."
    assert fit_problems(["no title", "no key", "misfit bars: 1, 2, 3, 4, 5, ..."], 30) == "no title; no key (+1 more)"


def test_numbers_of_any_size_are_read(music21):
    from charrnn.music.check import check_tune

    huge = "7" * 5000  # past Python's limit on converting digits to an int
    tune = f"X:1\nT:t\nM:{huge}/4\nL:1/{huge}\nK:C\nA{huge}/ (3:{huge} abc |{huge} Z{huge}|\n"
    result = check_tune(tune)
    assert not result.valid and result.bars >= 1
