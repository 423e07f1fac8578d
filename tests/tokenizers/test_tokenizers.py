"""The char tokenizer and the shared tokenizer helpers (state, dtypes, UTF-8 streaming)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_TEXT
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn.errors import ConfigError, CorpusError
from charrnn.tokenizers import char as tokenizers
from charrnn.tokenizers.char import CharTokenizer, Utf8StreamDecoder, smallest_uint_dtype
from charrnn.tokenizers.factory import fit_tokenizer, tokenizer_from_state

VOCAB = sorted(set(TINY_TEXT + "\u00e9\U0001f600\t"))
CHAR = CharTokenizer(VOCAB)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(VOCAB), max_size=200))
def test_char_decode_of_encode_is_the_text(text):
    ids = CHAR.encode(text)
    assert ids.dtype == np.uint8 and len(ids) == len(text)
    assert CHAR.decode(ids) == text
    stream = CHAR.stream_decoder()
    assert "".join(stream.feed(int(i)) for i in ids) + stream.flush() == text


def test_fit_orders_ids_by_code_point_and_encodes_exactly():
    tok = fit_tokenizer("char", "baca\n")
    assert tok.kind == "char" and tok.chars == ["\n", "a", "b", "c"]
    assert tok.encode("abc\n").tolist() == [1, 2, 3, 0]


def test_unknown_characters_are_named_not_mangled():
    tok = CharTokenizer.fit("abc")
    assert tok.unknown_chars("abxz\u00e9") == ["x", "z", "\u00e9"]
    assert tok.unknown_chars("cab") == []
    with pytest.raises(CorpusError, match='"x"'):
        tok.encode("ax")
    with pytest.raises(CorpusError, match=r'"\u00e9" \(U\+00E9\)'):  # shown as itself, with its code point
        tok.encode("a\u00e9")
    with pytest.raises(CorpusError, match=r'"\\u200b"'):  # an invisible one escaped, so it is visible
        tok.encode("a\u200b")


def test_extend_keeps_old_ids_and_appends_new_characters():
    old = CharTokenizer.fit("hello")
    new, added = old.extend("help!")
    assert added == 2 and new.chars[: old.vocab_size] == old.chars
    assert new.chars[old.vocab_size :] == ["!", "p"]
    assert new.encode("hello").tolist() == old.encode("hello").tolist()
    same, none = new.extend("hop")
    assert none == 0 and same.chars == new.chars


def test_char_state_round_trip_and_fingerprint():
    state, blob = CHAR.to_state()
    assert blob is None and state["kind"] == "char"
    again = tokenizer_from_state(state, None)
    assert again.encode(TINY_TEXT).tolist() == CHAR.encode(TINY_TEXT).tolist()
    assert again.fingerprint() == CHAR.fingerprint() != CharTokenizer.fit("xyz").fingerprint()
    # The state of checkpoints written before subword tokenizers existed: only kind and chars.
    old = tokenizer_from_state({"kind": "char", "chars": "\n abc"}, None)
    assert old.decode([2, 3, 1, 4]) == "ab c"
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        tokenizer_from_state({"kind": "words"}, None)


def test_smallest_uint_dtype_boundaries():
    assert smallest_uint_dtype(256) == np.uint8
    assert smallest_uint_dtype(257) == np.uint16
    assert smallest_uint_dtype(65536) == np.uint16
    assert smallest_uint_dtype(65537) == np.uint32
    big = CharTokenizer([chr(c) for c in range(0x4E00, 0x4E00 + 300)])
    assert big.encode("\u4e00\u4e01").dtype == np.uint16


def test_unknown_tokenizer_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="--tokenizer"):
        fit_tokenizer("wordpiece", "abc")


def test_utf8_stream_decoder_waits_for_whole_characters():
    data = "a\u00e9\U0001f600".encode()
    dec = Utf8StreamDecoder()
    out = [dec.feed_bytes(data[i : i + 1]) for i in range(len(data))]
    assert out == ["a", "", "\u00e9", "", "", "", "\U0001f600"]
    assert dec.flush() == ""
    broken = Utf8StreamDecoder()
    assert broken.feed_bytes(b"\xf0\x9f") == "" and broken.flush() == "\ufffd"  # a cut-off character is replaced


def test_char_encode_matches_a_plain_lookup_across_chunks(monkeypatch):
    monkeypatch.setattr(tokenizers, "_ENCODE_CHUNK", 7)  # many chunk boundaries, a short last chunk
    text = "Hello, wörld — “quoted” 😀 end\n" * 5
    tok = CharTokenizer.fit(text)
    ids = tok.encode(text)
    assert ids.dtype == np.uint8
    assert ids.tolist() == [tok.index[c] for c in text]
    assert tok.decode(ids) == text
    with pytest.raises(CorpusError, match='"Z"'):
        tok.encode("Hello Z")
    with pytest.raises(CorpusError, match="U\\+1F916"):  # beyond the largest code point of the vocabulary
        tok.encode("Hello 🤖")


def test_char_encode_full_byte_vocabulary_uses_uint8_ids():
    tok = CharTokenizer([chr(i) for i in range(256)])
    ids = tok.encode("\x00\xff a")
    assert ids.dtype == np.uint8 and ids.tolist() == [0, 255, 32, 97]


def test_characters_in_messages_are_shown_as_themselves_unless_invisible():
    from charrnn.tokenizers.char import show_chars

    shown = show_chars(["\u00e9", "\n", "\u200b", '"', "a", "\u20ac"])
    assert shown == '"\u00e9" (U+00E9), "\\n", "\\u200b", "\\"", "a", "\u20ac" (U+20AC)'
    assert show_chars("abcdefghijkl").endswith('"j" and 2 more')
