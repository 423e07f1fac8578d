"""The train/validation split: whole documents spread over a corpus of documents, the tail of a running text."""

from __future__ import annotations

from conftest import TINY_TEXT

from charrnn.data.split import blocks, split_text, tail_point
from charrnn.data.tokens import load_tokens, read_corpus_bytes, split_corpus


def abc_tunes(count: int) -> str:
    """`count` distinct ABC tunes in order of a 'collection' number, a blank line between them."""
    return "\n\n".join(f"X:{i}\nT:Tune {i}\nM:6/8\nK:D\n{'abc' * (1 + i % 5)}def|{i % 7}gfe|\n" for i in range(count))


def test_abc_tunes_are_held_out_whole_and_spread_over_the_corpus():
    text = abc_tunes(400)
    split = split_text(text, 0.1)
    assert split.how == "documents"
    held = [b.strip() for b in blocks(split.val)]
    assert 20 <= len(held) <= 60  # about a tenth of 400
    assert set(held) <= {b.strip() for b in blocks(text)}  # whole tunes
    assert not set(held) & {b.strip() for b in blocks(split.train)}
    numbers = sorted(int(t.split("\n")[0][2:]) for t in held)
    assert numbers[0] < 100 and numbers[-1] > 300  # from all over the corpus, not its end
    assert split_text(text, 0.1) == split  # deterministic


def test_a_tune_is_held_out_whatever_else_the_corpus_holds():
    text = abc_tunes(400)
    held = {b.strip() for b in blocks(split_text(text, 0.1).val)}
    more = abc_tunes(400) + "\n\n" + "X:999\nT:New\nK:G\nGAB|\n"
    assert held <= {b.strip() for b in blocks(split_text(more, 0.1).val)}


def test_a_running_text_keeps_its_tail():
    split = split_text(TINY_TEXT, 0.2)  # blank-line-separated speeches, not documents
    assert split.how == "tail"
    assert TINY_TEXT.startswith(split.train) and TINY_TEXT.endswith(split.val)
    assert split_text(TINY_TEXT, 0.2, "documents").how == "documents"  # unless asked
    assert split_text(abc_tunes(400), 0.1, "tail").how == "tail"


def test_too_few_documents_fall_back_to_the_tail():
    split = split_text("X:1\nK:D\nabc|\n\nX:2\nK:D\ndef|\n", 0.1, "documents")
    assert split.how == "tail" and split.val


def test_a_directory_holds_out_whole_files(tmp_path):
    tree = tmp_path / "src"
    tree.mkdir()
    for i in range(60):  # each file has blank lines inside: the files, not the blocks, are the documents
        (tree / f"m{i:02d}.py").write_text(f"def f{i}():\n    return {i}\n\n\ndef g{i}():\n    return -{i}\n")
    corpus = read_corpus_bytes(tree)
    split = split_corpus(corpus, 0.2)
    assert split.how == "documents" and split.documents == 60
    for name in (f"f{i}" for i in range(60)):
        side = split.val if f"def {name}()" in split.val else split.train
        assert f"def g{name[1:]}()" in side  # both halves of a file on the same side
    data = load_tokens(corpus, val_frac=0.2)
    assert "documents held out" in data.split
    again = load_tokens(corpus, val_frac=0.2)  # from the cache: the same split
    assert again.cached and len(again.val) == len(data.val) and again.split == data.split


def test_the_tail_moves_to_a_paragraph_start():
    text = "x" * 85 + "\n\n" + "y" * 13
    assert text[tail_point(text, 0.2) :] == "y" * 13
