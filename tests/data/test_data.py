"""Reading corpora, the split and the token-id cache."""

from __future__ import annotations

import numpy as np
import pytest

from charrnn.data.tokens import (
    CorpusBytes,
    decode_corpus,
    load_tokens,
    read_corpus_bytes,
)
from charrnn.errors import CorpusError


def corpus(data: bytes) -> CorpusBytes:
    return CorpusBytes(name="t", source="t.txt", data=data)


def test_decode_normalises_bom_and_line_endings():
    assert decode_corpus(corpus("\ufeffa\r\nb\rc\n".encode())) == "a\nb\nc\n"


def test_decode_reports_byte_offset_of_invalid_utf8():
    with pytest.raises(CorpusError, match="offset 3"):
        decode_corpus(corpus(b"abc\xff\xfe def"))


@pytest.mark.parametrize("data,message", [(b"", "empty"), (b" \n\t\n", "only whitespace"), (b"ab\x00cd", "NUL")])
def test_decode_rejects_unusable_text(data, message):
    with pytest.raises(CorpusError, match=message):
        decode_corpus(corpus(data))


def test_directory_joins_sorted_files_with_a_blank_line(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "b.txt").write_text("second\n")
    (folder / "a.txt").write_text("first\n")
    (folder / "image.png").write_bytes(b"\x89PNG")
    assert read_corpus_bytes(folder).data == b"first\n\nsecond\n"


def test_char_ids_are_cached_memory_mapped_in_the_smallest_dtype():
    raw = corpus(("hello world\n" * 500).encode())
    first = load_tokens(raw)
    second = load_tokens(raw)
    assert not first.cached and second.cached
    assert isinstance(second.train, np.memmap) and second.train.dtype == np.uint8
    assert np.array_equal(first.train, second.train) and np.array_equal(first.val, second.val)
    assert second.tokenizer.chars == first.tokenizer.chars
    assert first.val_chars == len(first.val)
    other = load_tokens(corpus(("hello there\n" * 500).encode()))
    assert not other.cached  # keyed by content: a different corpus is encoded anew
