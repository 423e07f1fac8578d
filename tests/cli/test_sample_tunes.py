"""`charrnn sample --tunes/--docs` with --max-copy (tunes and documents that copy the training text
are redrawn) and with --beam (the best distinct complete tunes), on a model that learnt three
short ABC tunes by heart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import one_error_line, train_tiny_run

from charrnn.checkpoint import load_model
from charrnn.copies import longest_copy, run_index

pytestmark = pytest.mark.usefixtures("one_thread")

SHORT = [  # 60 and 55 characters
    "X:1\nT:Ash Grove\nM:3/4\nL:1/8\nK:G\nG2 B2 d2|c2 A2 F2|G4 D2|G6|]",
    "X:2\nT:Birch Lane\nM:2/4\nL:1/8\nK:D\nd2 fd|e2 ce|dB AF|D4|]",
]
LONG = "X:3\nT:Cold Hill Reel\nM:4/4\nL:1/8\nK:A\nA2 cA e2 ce|f2 ec B2 AB|c2 BA E2 FG|A4 a4|]"  # 80
TUNES = [*SHORT, LONG]
CAP = 65  # between the short tunes and the long one


@pytest.fixture(scope="module")
def memorised(tmp_path_factory) -> Path:
    """A 1x64 LSTM trained 600 steps on the three tunes, 30 times over: it writes them back."""
    text = "\n\n".join(TUNES * 30) + "\n"
    root = tmp_path_factory.mktemp("memorised")
    options = ["--model", "lstm", "--hidden", "64", "--seq-len", "64", "--batch-size", "8", "--val-split", "tail"]
    return train_tiny_run(root, *options, "--steps", "600", "--eval-every", "600", text=text, name="tunes")


def _corpus(run: Path) -> str:
    return str(run.parent / "tunes.txt")


def _blocks(stdout: str) -> list[str]:
    return [b for b in stdout.strip("\n").split("\n\n") if b]


def _body(tune: str) -> str:
    """A tune without its X: line: what the model copies, whatever number it is printed with."""
    return re.sub(r"^X:.*\n", "", tune, count=1)


@pytest.mark.parametrize("what", ["--tunes", "--docs"])
def test_max_copy_redraws_tunes_and_documents_that_copy_too_much(cli, memorised, what):
    args = ("sample", memorised, what, "4", "--seed", "3", "--length", "300", "--corpus", _corpus(memorised))
    plain = cli(*args[:-2])
    loose = cli(*args, "--max-copy", "1000")
    assert loose.exit_code == 0, loose.stderr
    assert loose.stdout == plain.stdout  # nothing redrawn: the same draw, numbered the same
    kind = "tune" if what == "--tunes" else "document"
    assert f"no {kind} copied more than 1000 characters of the training text" in loose.stderr
    capped = cli(*args, "--max-copy", str(CAP))
    assert capped.exit_code == 0, capped.stderr
    kept = _blocks(capped.stdout)
    index = run_index(load_model(memorised / "best.safetensors"), _corpus(memorised))
    assert len(kept) == 4 and all(longest_copy(index, _body(t)) <= CAP for t in kept)
    if what == "--tunes":
        assert [t.split("\n")[0] for t in kept] == ["X:1", "X:2", "X:3", "X:4"]  # renumbered in output order
    said = re.search(rf"redrew (\d+) of (\d+) {kind}s drawn: each copied more than {CAP} characters", capped.stderr)
    assert said and int(said.group(2)) == 4 + int(said.group(1)) and int(said.group(1)) >= 1
    assert CAP < int(re.search(r"\(longest (\d+)\)", capped.stderr).group(1)) <= len(LONG)


@pytest.mark.parametrize("what", ["--tunes", "--docs"])
def test_max_copy_gives_up_in_one_line_when_every_draw_copies(cli, memorised, what):
    result = cli("sample", memorised, what, "2", "--seed", "1", "--length", "300", "--max-copy", "3", "--corpus",
                 _corpus(memorised))  # fmt: skip
    kind = "tunes" if what == "--tunes" else "documents"
    line = one_error_line(result)
    drawn = int(re.search(rf"only 0 of 2 {kind} copied at most 3 characters in (\d+) drawn: raise --max-copy", line)[1])
    assert 15 <= drawn <= 20  # 10 per one asked, the sampler's own drops (unfinished, ...) included in the 20
    assert f"redrew {drawn} of {drawn} {kind} drawn" in result.stderr and result.stdout == ""


def test_max_copy_with_valid_only_rejects_copies_among_the_checker_s_reasons(cli, memorised):
    pytest.importorskip("music21")
    args = ("sample", memorised, "--tunes", "2", "--valid-only", "--seed", "3", "--length", "300")
    result = cli(*args, "--max-copy", str(CAP), "--corpus", _corpus(memorised))
    assert result.exit_code == 0, result.stderr
    assert len(_blocks(result.stdout)) == 2
    assert re.search(rf"drew \d+ tunes: 2 valid; rejected: \d+ copied more than {CAP} characters", result.stderr)
    refused = cli(*args, "--max-copy", "10", "--corpus", _corpus(memorised))
    assert "raise --max-copy" in one_error_line(refused)


# ----------------------------------------------------------------------------- --tunes --beam


def test_beam_tunes_are_distinct_complete_tunes_ranked_by_score(cli, memorised):
    result = cli("sample", memorised, "--tunes", "2", "--beam", "16", "--length", "300")
    assert result.exit_code == 0, result.stderr
    tunes = _blocks(result.stdout)
    assert [t.split("\n")[0] for t in tunes] == ["X:1", "X:2"]
    assert all(re.search(r"^K:", t, re.M) for t in tunes) and len({_body(t) for t in tunes}) == 2
    reports = re.findall(r"beam 16: log-probability (-?[\d.]+) nats .* \(ended at --stop\)", result.stderr)
    assert len(reports) == 2 and float(reports[0]) >= float(reports[1])


def test_beam_one_writes_the_greedy_tune(cli, memorised):
    greedy = cli("sample", memorised, "--tunes", "1", "--temp", "0", "--length", "300")
    beam = cli("sample", memorised, "--tunes", "1", "--beam", "1", "--length", "300")
    assert greedy.exit_code == 0 and beam.exit_code == 0, beam.stderr
    assert beam.stdout == greedy.stdout and re.search(r"^K:", beam.stdout, re.M)


def test_beam_tunes_with_checker_music_parse(cli, memorised):
    pytest.importorskip("music21")
    from charrnn.music.check import check_tune_midi

    result = cli("sample", memorised, "--tunes", "2", "--beam", "16", "--length", "300")
    for n, tune in enumerate(_blocks(result.stdout)):
        check, _ = check_tune_midi(tune, n + 1, render=False)
        assert check.parses and check.has_key and check.has_notes, check


@pytest.mark.parametrize(
    "args,says",
    [
        (["--tunes", "1", "--beam", "4", "--length", "20"], "the beam ended only 0 distinct complete tune(s)"),
        (["--tunes", "3", "--beam", "2"], "--beam >= 3"),
        (["--tunes", "1", "--beam", "2", "--valid-only"], "cannot be combined with --valid-only"),
        (["--tunes", "1", "--beam", "2", "--max-copy", "5"], "--beam draws none"),
    ],
)
def test_beam_tunes_refusals_are_one_line(cli, memorised, args, says):
    assert says in one_error_line(cli("sample", memorised, *args))


def test_beam_tunes_need_a_model_that_saw_tunes(cli, tiny_run):
    line = one_error_line(cli("sample", tiny_run, "--tunes", "1", "--beam", "2"))
    assert "never saw 'X:' after a blank line" in line
