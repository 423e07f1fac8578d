"""SentencePiece tokenizers: lossless round trips, streaming, checkpoints, training split only, CLI."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from conftest import TINY_TEXT, TINY_TRAIN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charrnn.checkpoint import load_checkpoint, load_model, save_checkpoint
from charrnn.config import SampleConfig
from charrnn.data.tokens import CorpusBytes, load_tokens
from charrnn.errors import ConfigError, CorpusError
from charrnn.model import RNNLanguageModel
from charrnn.sample import generate
from charrnn.tokenizers.char import CharTokenizer
from charrnn.tokenizers.factory import fit_tokenizer, tokenizer_from_state
from charrnn.tokenizers.subword import _SENTENCE_CHARS, SPACE, SentencePieceTokenizer, _training_sentences

KINDS = ["bpe", "unigram"]
# A few KB with tabs, several spaces and non-ASCII, so that the learned pieces cover them.
SMALL_TEXT = TINY_TEXT + "\tIndented line,  two spaces; caf\u00e9 na\u00efve \u00e6on.\n" * 20


@functools.lru_cache(maxsize=None)
def fitted(kind: str, vocab_size: int = 400) -> SentencePieceTokenizer:
    return SentencePieceTokenizer.fit(SMALL_TEXT, kind=kind, vocab_size=vocab_size)


# Arbitrary Unicode (any code point but lone surrogates, which are not characters), with the
# characters SentencePiece treats specially drawn often.
texts = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=["Cs"]), st.sampled_from([" ", "\n", "\t", "\r", SPACE, "\u3000", "e"])
    ),
    max_size=60,
)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts)
def test_decode_of_encode_is_the_text(kind, text):
    tok = fitted(kind)
    ids = tok.encode(text)
    assert ids.dtype == np.uint16  # 400 ids do not fit in uint8
    assert ((ids >= 0) & (ids < tok.vocab_size)).all()
    assert tok.decode(ids) == text


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_stream_decode_equals_whole_decode_for_any_ids(kind, data):
    tok = fitted(kind)
    ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=40))
    stream = tok.stream_decoder()
    streamed = "".join(stream.feed(i) for i in ids) + stream.flush()
    assert streamed == tok.decode(ids)  # invalid byte sequences included: both replace the same way


@pytest.mark.parametrize("kind", KINDS)
def test_streaming_keeps_word_initial_spaces(kind):
    tok = fitted(kind)
    text = "All:\nSpeak, speak.  Resolved caf\u00e9\n"
    ids = tok.encode(text)
    assert any(p.startswith(SPACE) and len(p) > 1 for p in tok.pieces(ids))  # a piece holding a word-initial space
    stream = tok.stream_decoder()
    pieces = [stream.feed(int(i)) for i in ids]
    assert "".join(pieces) + stream.flush() == text


@pytest.mark.parametrize("kind", KINDS)
def test_lone_surrogates_are_unknown_not_garbage(kind):
    tok = fitted(kind)
    assert tok.unknown_chars("fine caf\u00e9 \U0001f600") == []
    assert tok.unknown_chars("a\udcff b\ud800") == ["\ud800", "\udcff"]
    with pytest.raises(CorpusError, match="surrogate"):
        tok.encode("a\udcff")


@pytest.mark.parametrize("kind", KINDS)
def test_learns_subwords_and_keeps_newlines_and_tabs_as_pieces(kind):
    tok = fitted(kind)
    pieces = tok.pieces(tok.encode("First Citizen:\n\tSpeak"))
    assert "\n" in pieces and "\t" in pieces
    assert len(pieces) < len("First Citizen:\n\tSpeak")  # merged, not one piece per character


def test_checkpoint_round_trip_gives_identical_ids(tmp_path):
    tok = fitted("bpe")
    state, blob = tok.to_state()
    tensors = {"tokenizer.model": torch.frombuffer(bytearray(blob), dtype=torch.uint8), "w": torch.zeros(2)}
    save_checkpoint(tmp_path / "t.safetensors", tensors, {"tokenizer": state})
    tensors2, meta = load_checkpoint(tmp_path / "t.safetensors")
    again = tokenizer_from_state(meta["tokenizer"], tensors2["tokenizer.model"].numpy().tobytes())
    text = SMALL_TEXT[:500] + "unseen \u4e2d\u6587 \U0001f600"
    assert again.kind == "bpe" and again.vocab_size == tok.vocab_size
    assert np.array_equal(again.encode(text), tok.encode(text))
    assert again.fingerprint() == tok.fingerprint()
    with pytest.raises(ValueError, match="missing"):
        tokenizer_from_state(state, None)


def test_too_large_vocab_degrades_with_a_note_and_too_small_is_a_config_error():
    tok = fit_tokenizer("unigram", TINY_TEXT, 50_000)
    assert 259 < tok.vocab_size < 50_000
    assert tok.notes and "50000" in tok.notes[0] and f"{tok.vocab_size:,}" in tok.notes[0]
    with pytest.raises(ConfigError, match="too small.*at least"):
        fit_tokenizer("bpe", TINY_TEXT, 100)


def test_long_lines_are_not_dropped():
    # One line far longer than SentencePiece's sentence-length limit: it must still be learned from.
    line = " ".join(["quintessential flummox"] * (3 * _SENTENCE_CHARS // 20))
    assert len(line) > 2 * _SENTENCE_CHARS
    sentences = list(_training_sentences(line + "\nshort\n"))
    assert "".join(sentences) == line + "short"  # every character is in some sentence
    assert max(len(s) for s in sentences) <= _SENTENCE_CHARS
    tok = SentencePieceTokenizer.fit(line, kind="bpe", vocab_size=320)
    assert len(tok.encode("quintessential")) <= 3  # learned from the long line


def test_fitted_on_the_training_split_only():
    # A word that occurs only in the validation text must not become a piece.
    train = TINY_TEXT
    val = "Zyzzyva quokka zyzzyva quokka.\n" * 60
    corpus = CorpusBytes("c", "c.txt", (train + val).encode())
    frac = (len(val) + 20) / len(train + val)  # the cut moves forward to the blank line ending `train`
    data = load_tokens(corpus, tokenizer_kind="unigram", vocab_size=2000, val_frac=frac)
    assert data.val_chars == len(val)  # the denominator of bits per character
    assert data.tokenizer.kind == "unigram"
    assert not any("yzz" in p or "okk" in p for p in data.tokenizer.pieces(range(data.tokenizer.vocab_size)))
    assert data.tokenizer.decode(data.train) + data.tokenizer.decode(data.val) == train + val
    again = load_tokens(corpus, tokenizer_kind="unigram", vocab_size=2000, val_frac=frac)
    assert again.cached and np.array_equal(np.asarray(again.val), np.asarray(data.val))


@pytest.mark.parametrize("kind", KINDS)
def test_generate_counts_characters_and_repeats_with_a_seed(kind):
    tok = fitted(kind)
    torch.manual_seed(0)
    model = RNNLanguageModel("lstm", vocab_size=tok.vocab_size, embed_size=8, hidden_size=16, num_layers=1, dropout=0.0)

    def run(seed, prime="", **settings):
        cfg = SampleConfig(temperature=1.0, **settings)
        return "".join(generate(model, tok, cfg, prime=prime, generator=torch.Generator().manual_seed(seed)))

    text = run(1, length=37)
    assert len(text) == 37
    assert run(1, length=37) == text and run(2, length=37) != text
    primed = run(1, length=20, prime="All: caf\u00e9 \u2581")
    assert primed.startswith("All: caf\u00e9 \u2581") and len(primed) == len("All: caf\u00e9 \u2581") + 20
    stop = text[5:7]  # a stop string the unprimed sample is known to contain
    stopped = run(1, length=37, stop=stop)
    assert stopped.endswith(stop) and stop not in stopped[:-1] and len(stopped) <= 37


def test_cli_trains_bpe_and_samples_exactly_n_characters(cli, tiny_corpus):
    result = cli("train", tiny_corpus, "--tokenizer", "bpe", "--vocab-size", "350", *TINY_TRAIN, "--steps", "4")
    assert result.exit_code == 0, result.stderr
    assert "bpe vocabulary of 350" in result.stderr
    loaded = load_model(tiny_corpus.parent / "checkpoints" / "tiny" / "best.safetensors")
    assert loaded.tokenizer.kind == "bpe" and loaded.tokenizer.vocab_size == 350
    for n in (1, 123):
        out = cli("sample", "checkpoints/tiny", "--length", str(n), "--seed", "5")
        assert out.exit_code == 0, out.stderr
        text = out.stdout
        if len(text) == n + 1:  # the CLI ends the output with a newline when the sample does not
            assert text.endswith("\n")
            text = text[:-1]
        assert len(text) == n, repr(out.stdout)
    again = cli("sample", "checkpoints/tiny", "--length", "123", "--seed", "5")
    assert again.stdout == out.stdout


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_a_stop_string_inside_the_prime_does_not_end_the_sample(kind):
    tok = CharTokenizer.fit(SMALL_TEXT) if kind == "char" else fitted(kind)
    torch.manual_seed(0)
    model = RNNLanguageModel("lstm", vocab_size=tok.vocab_size, embed_size=8, hidden_size=16, num_layers=1, dropout=0.0)
    gen = torch.Generator().manual_seed(3)
    text = "".join(
        generate(model, tok, SampleConfig(length=30, stop=":", temperature=1.0), prime="All:", generator=gen)
    )
    assert text.startswith("All:") and len(text) > len("All:")
    assert ":" not in text[4:-1]  # it ends at the first ":" of new text, or after 30 characters
    gen = torch.Generator().manual_seed(3)
    straddling = "".join(
        generate(model, tok, SampleConfig(length=30, stop="l:", temperature=0), prime="Al", generator=gen)
    )
    assert straddling.startswith("Al") and ("l:" not in straddling[:-1])
    gen = torch.Generator().manual_seed(3)
    short_prime = "".join(
        generate(model, tok, SampleConfig(length=30, stop="Al:", temperature=0), prime="A", generator=gen)
    )
    assert short_prime.startswith("A") and ("Al:" not in short_prime[:-1])
