"""charrnn copies and sample --max-copy: verbatim copies of the training text, found by a suffix array."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from conftest import TINY_TRAIN, one_error_line, train_tiny_run
from typer.testing import CliRunner

from charrnn.cli import app
from charrnn.copies import CappedDraw, TrainingText, draw_capped, find_copies, index_of
from charrnn.data.split import held_out

WORDS = "the of and to in that it with as for was on be by at this had not are but from or have an they which".split()
OUTSIDE = "#"  # a character the corpus never holds: it bounds a copied passage


def _prose(seed: int, lines: int) -> str:
    rng = random.Random(seed)
    return "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "\n" for _ in range(lines))


CORPUS = _prose(1, 800)  # about 30 KB, no 30-character run repeated by chance


@pytest.fixture(scope="module")
def prose_run(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("copies"), text=CORPUS, name="prose")


def _texts(result) -> list[dict]:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["texts"]


def test_a_copied_passage_is_found_exactly_with_its_offset_and_line(cli, prose_run, tmp_path):
    start = 5003
    passage = CORPUS[start : start + 300]
    text = tmp_path / "copy.txt"
    text.write_text(OUTSIDE * 40 + passage + OUTSIDE * 60, encoding="utf-8")
    corpus = prose_run.parent / "prose.txt"
    (found,) = _texts(cli("copies", prose_run, text, "--corpus", corpus, "--json"))
    assert set(found) == {"source", "chars", "longest", "longest_at", "copied_share"}
    assert found["source"] == str(text) and found["chars"] == 400
    assert found["longest"] == 300
    assert found["longest_at"] == {"offset": start, "line": CORPUS[:start].count("\n") + 1}
    assert found["copied_share"] == pytest.approx(300 / 400)


def test_random_letters_copy_little_and_min_span_sets_what_counts(cli, prose_run, tmp_path):
    rng = random.Random(7)
    text = tmp_path / "letters.txt"
    text.write_text("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(3000)), encoding="utf-8")
    corpus = str(prose_run.parent / "prose.txt")
    (found,) = _texts(cli("copies", prose_run, text, "--corpus", corpus, "--json"))
    assert 0 < found["longest"] < 10 and found["copied_share"] == 0.0
    (loose,) = _texts(cli("copies", prose_run, text, "--corpus", corpus, "--json", "--min-span", "2"))
    letters = text.read_text(encoding="utf-8")
    train = CORPUS[: int(len(CORPUS) * 0.9) + 40]  # more than the training split: pairs are everywhere in it
    covered = set()  # by brute force: the characters of every 2-character pair found in the corpus
    for i in range(len(letters) - 1):
        if letters[i : i + 2] in train:
            covered |= {i, i + 1}
    assert loose["longest"] == found["longest"]
    assert loose["copied_share"] == pytest.approx(len(covered) / len(letters))


def test_stdin_held_out_text_and_unseen_characters(cli, prose_run):
    corpus = prose_run.parent / "prose.txt"
    val = CORPUS[-400:]  # the tail split holds this out: it was never trained on
    unseen = "\u263a\u00e9" * 10 + CORPUS[100:150]
    texts = _texts(cli("copies", prose_run, "-", "--corpus", corpus, "--json", input=val))
    assert texts[0]["source"] == "stdin" and texts[0]["longest"] < 100
    path = Path("unseen.txt")
    path.write_text(unseen, encoding="utf-8")
    (found,) = _texts(cli("copies", prose_run, path, "--corpus", corpus, "--json"))
    assert found["chars"] == 70 and found["longest"] >= 50  # copies are about characters: unseen ones just don't match


def test_fresh_samples_by_default_and_a_table(cli, prose_run):
    corpus = prose_run.parent / "prose.txt"
    texts = _texts(cli("copies", prose_run, "--corpus", corpus, "--samples", "3", "--length", "80", "--json"))
    assert [t["source"] for t in texts] == ["sample 1", "sample 2", "sample 3"]
    assert all(t["chars"] == 80 for t in texts)
    result = cli("copies", prose_run, "--corpus", corpus, "--samples", "2", "--length", "50")
    assert result.exit_code == 0, result.stderr
    assert "drawing 2 samples of 50 characters (--temp 0.8, --seed 0)" in result.stderr
    greedy = _texts(
        cli("copies", prose_run, "--corpus", corpus, "--samples", "2", "--length", "50", "--temp", "0", "--json")
    )
    assert greedy[0] == {**greedy[1], "source": "sample 1"}  # --temp reaches the sampler: greedy draws agree
    assert result.stdout.splitlines()[0].split()[:3] == ["text", "chars", "longest"]
    assert result.stdout.splitlines()[-1].startswith("all")


def test_a_corpus_of_files_names_the_file_and_line(cli, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    files = {f"mod{k}.py": _prose(10 + k, 60) for k in range(8)}
    for name, content in files.items():
        (tree / name).write_text(content, encoding="utf-8")
    args = ["train", str(tree), *TINY_TRAIN, "--steps", "2", "--eval-every", "2", "--device", "cpu"]
    args += ["--precision", "fp32", "--out", str(tmp_path / "tree-run"), "--val-frac", "0.3"]
    assert CliRunner().invoke(app, args).exit_code == 0
    trained = [n for n, c in sorted(files.items()) if not held_out(c.rstrip("\n"), 0.3)]
    assert trained  # some files are trained on, others held out
    name = trained[-1]
    passage = files[name][700:950]
    text = tmp_path / "q.txt"
    text.write_text(OUTSIDE + passage + OUTSIDE, encoding="utf-8")
    (found,) = _texts(cli("copies", tmp_path / "tree-run", text, "--corpus", tree, "--json"))
    assert found["longest"] == 250
    assert found["longest_at"]["file"] == name
    assert found["longest_at"]["file_line"] == files[name][:700].count("\n") + 1


def test_the_index_is_cached_as_plain_arrays(tmp_path):
    from charrnn.copies import index_dir

    text = TrainingText("t", "d" * 64, CORPUS.encode())
    built = index_of(text)
    (cached,) = list(index_dir().glob("*.npy"))
    import numpy as np

    assert np.array_equal(np.load(cached, allow_pickle=False), built.suffixes)
    again = index_of(text)
    assert np.array_equal(again.suffixes, built.suffixes)
    assert find_copies(again, CORPUS[:300], source="x").longest == 300


def test_draw_capped_redraws_only_the_copies():
    index = index_of(TrainingText("t", "d" * 64, CORPUS.encode()), use_cache=False)
    drawn = iter([CORPUS[:200], "#" * 50, CORPUS[1000:1100], "##"])
    draw = CappedDraw(asked=2, max_copy=40, max_attempts=10)
    kept = list(draw_capped(lambda: next(drawn), index, draw))
    assert kept == ["#" * 50, "##"] and draw.redrawn == [200, 100] and draw.drawn == 4
    assert "redrew 2 of 4 samples" in draw.summary() and "longest 200" in draw.summary()


def test_sample_max_copy_redraws_and_says_so(cli, prose_run):
    corpus = prose_run.parent / "prose.txt"
    plain = cli("sample", prose_run, "--seed", "3", "--length", "60")
    capped = cli("sample", prose_run, "--seed", "3", "--length", "60", "--max-copy", "1000", "--corpus", corpus)
    assert capped.exit_code == 0, capped.stderr
    assert capped.stdout == plain.stdout  # nothing redrawn: the same draw
    assert "no sample copied more than 1000 characters" in capped.stderr
    refused = cli("sample", prose_run, "--seed", "3", "--length", "60", "--max-copy", "0", "--corpus", corpus)
    line = one_error_line(refused)
    assert "only 0 of 1 samples copied at most 0 characters in 10 drawn" in line
    assert "redrew 10 of 10 samples drawn: each copied more than 0 characters" in refused.stderr
    assert refused.stdout == ""


def test_user_errors_are_one_line(cli, prose_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(prose_run, moved)
    other = tmp_path / "other.txt"
    other.write_text(CORPUS[::-1], encoding="utf-8")
    text = tmp_path / "t.txt"
    text.write_text("the of and\n", encoding="utf-8")
    corpus = prose_run.parent / "prose.txt"
    cases = [
        (("copies", moved, text), "cannot find its training corpus 'prose' (looked in"),
        (("copies", prose_run, text, "--corpus", other), "is not the corpus"),
        (("copies", prose_run, text, "--corpus", corpus, "--min-span", "0"), "--min-span must be at least 1"),
        (("copies", prose_run, tmp_path / "missing.txt", "--corpus", corpus), "not found"),
        (("copies", prose_run, "--corpus", corpus, "--samples", "0"), "--samples and --length"),
        (("copies", prose_run, "--corpus", corpus, "--temp", "-1"), "--temp must be a number >= 0"),
        (("sample", prose_run, "--max-copy", "-1"), "--max-copy must be 0 or more"),
        (("sample", prose_run, "--max-copy", "5", "--beam", "2"), "--max-copy redraws random samples"),
        (("sample", prose_run, "--corpus", corpus), "give --max-copy N"),
        (("sample", moved, "--max-copy", "5"), "cannot find its training corpus"),
    ]
    for args, message in cases:
        line = one_error_line(cli(*args))
        assert message in line, (args, line)


def test_a_ready_corpus_is_found_by_name_and_its_absence_says_how_to_get_it(cli, local_mirror, tmp_path, monkeypatch):
    from conftest import TINY_TEXT

    args = ["train", local_mirror, *TINY_TRAIN, "--steps", "2", "--eval-every", "2", "--device", "cpu"]
    assert cli(*args, "--precision", "fp32", "--out", tmp_path / "run").exit_code == 0
    text = tmp_path / "t.txt"
    text.write_text("~" + TINY_TEXT[:120] + "~", encoding="utf-8")
    (found,) = _texts(cli("copies", tmp_path / "run", text, "--json"))
    at = found["longest_at"]  # the text repeats: any occurrence is right, if it is one
    assert found["longest"] == 120 and TINY_TEXT[at["offset"] : at["offset"] + 120] == TINY_TEXT[:120]
    assert at["line"] == TINY_TEXT[: at["offset"]].count("\n") + 1
    monkeypatch.setenv("CHARRNN_MIRROR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("CHARRNN_CORPORA", str(tmp_path / "empty"))
    line = one_error_line(cli("copies", tmp_path / "run", text))
    assert f"`charrnn corpus get {local_mirror}`, or give it with --corpus PATH" in line and "nowhere" in line
