"""Beam search (charrnn.beam, `charrnn sample --beam K`): exact where the beam covers every
continuation, greedy at K = 1, the stop string and the length as sample applies them."""

from __future__ import annotations

import itertools
import re

import pytest
import torch
from conftest import TINY_TEXT, one_error_line, train_tiny_run

from charrnn.beam import MAX_BEAM, beam_search, length_penalized
from charrnn.checkpoint import load_model
from charrnn.config import SampleConfig
from charrnn.errors import ConfigError
from charrnn.model import RNNLanguageModel
from charrnn.sample import _context_ids, generate
from charrnn.tokenizers.char import CharTokenizer
from charrnn.tokenizers.subword import SentencePieceTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = CharTokenizer("ab\n")  # V = 3: every continuation of 4 tokens is 81 texts


def spread_model(vocab: int, seed: int = 0, cell: str = "lstm") -> RNNLanguageModel:
    """A random model whose next-token distributions differ from step to step (larger weights
    than torch's init, so the best continuation is not simply the greedy one)."""
    torch.manual_seed(seed)
    model = RNNLanguageModel(cell, vocab, 4, 8, 2, 0.0).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model


def sequence_logprob(model, tokenizer, prime: str, ids) -> float:
    """Sum of the model's log-probabilities of `ids` after the prime's context, in one forward pass."""
    context = _context_ids(tokenizer, prime)
    with torch.no_grad():
        logits, _ = model(torch.tensor([context + list(ids)]))
    logp = torch.log_softmax(logits[0].double(), dim=-1)
    return sum(logp[len(context) - 1 + i, t].item() for i, t in enumerate(ids))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_covering_every_continuation_finds_the_most_likely_one(seed):
    model = spread_model(SMALL.vocab_size, seed)
    every = itertools.product(range(SMALL.vocab_size), repeat=4)
    scored = sorted(((sequence_logprob(model, SMALL, "a", ids), ids) for ids in every), reverse=True)
    found = beam_search(model, SMALL, SMALL.vocab_size**3, 4, prime="a")
    assert found[0].token_ids == scored[0][1]
    assert found[0].logprob == pytest.approx(scored[0][0], abs=1e-6)
    assert found[0].text == SMALL.decode(scored[0][1])
    # the K ended hypotheses are the K best of all 81, in order
    assert [h.token_ids for h in found] == [ids for _, ids in scored[: len(found)]]


def test_a_wide_beam_beats_or_equals_greedy_and_some_seed_shows_it_beating():
    gains = []
    for seed in range(6):
        model = spread_model(SMALL.vocab_size, seed)
        greedy = beam_search(model, SMALL, 1, 12, prime="a")[0]
        wide = beam_search(model, SMALL, 8, 12, prime="a")[0]
        assert wide.logprob >= greedy.logprob - 1e-5  # float32 steps of 1 vs 8 streams round apart
        gains.append(wide.logprob - greedy.logprob)
    assert max(gains) > 1e-3  # otherwise the beam would only ever be greedy


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_beam_one_is_temperature_zero(cell):
    tokenizer = CharTokenizer(sorted(set("abcdefgh \n")))
    model = spread_model(tokenizer.vocab_size, 3, cell)
    for prime, stop in (("", None), ("ab", None), ("a", "e"), ("ab", "ba")):
        cfg = SampleConfig(temperature=0, length=40, stop=stop)
        greedy = "".join(generate(model, tokenizer, cfg, prime=prime))
        best = beam_search(model, tokenizer, 1, 40, prime=prime, stop=stop)[0]
        assert prime + best.text == greedy


def test_stop_ends_every_hypothesis_at_its_first_stop():
    model = spread_model(SMALL.vocab_size, 4)
    for stop in ("b", "ab", "\n\n"):
        found = beam_search(model, SMALL, 5, 30, prime="a", stop=stop)
        for hyp in found:
            window = "a"[-(len(stop) - 1) :] if len(stop) > 1 else ""
            full = window + hyp.text
            if hyp.stopped:
                assert full.endswith(stop) and full.find(stop) == len(full) - len(stop)
            else:
                assert stop not in full and len(hyp.text) == 30
            assert hyp.logprob == pytest.approx(sequence_logprob(model, SMALL, "a", hyp.token_ids), abs=1e-6)


def test_length_penalty_is_gnmt_and_changes_the_ranking_toward_longer_texts():
    assert length_penalized(-6.0, 7, 0.0) == -6.0
    assert length_penalized(-6.0, 7, 1.0) == pytest.approx(-6.0 / 2.0)
    model = spread_model(SMALL.vocab_size, 4)
    plain = beam_search(model, SMALL, 6, 30, prime="a", stop="b")
    long = beam_search(model, SMALL, 6, 30, prime="a", stop="b", length_penalty=2.0)
    assert [h.score for h in long] == sorted((h.score for h in long), reverse=True)
    assert len(long[0].text) >= len(plain[0].text)


def test_subword_tokens_are_cut_to_length_in_characters():
    tokenizer = SentencePieceTokenizer.fit(TINY_TEXT * 3, kind="bpe", vocab_size=300)
    model = spread_model(tokenizer.vocab_size, 5)
    for length in (1, 7, 25):
        found = beam_search(model, tokenizer, 3, length, prime="First")
        greedy = "".join(generate(model, tokenizer, SampleConfig(temperature=0, length=length), prime="First"))
        assert all(len(h.text) == length for h in found if not h.stopped)
        assert "First" + beam_search(model, tokenizer, 1, length, prime="First")[0].text == greedy


def test_bad_widths_and_penalties_are_errors():
    model = spread_model(SMALL.vocab_size)
    for width, alpha in ((0, 0.0), (-2, 0.0), (MAX_BEAM + 1, 0.0), (2, -1.0), (2, float("nan"))):
        with pytest.raises(ConfigError):
            beam_search(model, SMALL, width, 5, length_penalty=alpha)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("beam"), "--steps", "10", "--eval-every", "10")


def test_cli_beam_one_equals_temp_zero_and_prints_the_logprob_it_computed(cli, run):
    greedy = cli("sample", run, "--temp", "0", "--length", "80", "--prime", "First")
    beam1 = cli("sample", run, "--beam", "1", "--length", "80", "--prime", "First")
    assert greedy.exit_code == 0 and beam1.exit_code == 0, beam1.output
    assert beam1.stdout == greedy.stdout
    beam4 = cli("sample", run, "--beam", "4", "--length", "80", "--prime", "First")
    loaded = load_model(run / "best.safetensors")
    for result in (beam1, beam4):
        printed = float(re.search(r"log-probability (-?[\d.]+) nats", result.stderr).group(1))
        continuation = result.stdout[len("First") : len("First") + 80]  # a newline may follow
        ids = [int(i) for i in loaded.tokenizer.encode(continuation)]
        assert len(ids) == 80
        assert printed == pytest.approx(sequence_logprob(loaded.model, loaded.tokenizer, "First", ids), abs=1e-3)
    assert float(re.search(r"(-?[\d.]+) nats", beam4.stderr).group(1)) >= float(
        re.search(r"(-?[\d.]+) nats", beam1.stderr).group(1)
    )


def test_cli_beam_honours_stop(cli, run):
    result = cli("sample", run, "--beam", "3", "--length", "300", "--prime", "First", "--stop", "e")
    assert result.exit_code == 0, result.output
    continuation = result.stdout.rstrip("\n")[len("First") :]
    assert continuation.endswith("e") and continuation.count("e") == 1 and "ended at --stop" in result.stderr


@pytest.mark.parametrize(
    "args,says",
    [
        (["--beam", "0"], "--beam must be between 1"),
        (["--beam", "100000"], "--beam must be between 1"),
        (["--beam", "2", "--temp", "1.2"], "--temp"),
        (["--beam", "2", "--top-k", "5"], "--top-k"),
        (["--beam", "2", "--top-p", "0.9"], "--top-p"),
        (["--beam", "2", "--num-samples", "3"], "--num-samples"),
        (["--beam", "2", "--docs", "2"], "--docs"),
        (["--beam", "2", "--length-penalty", "-1"], "--length-penalty must be"),
        (["--length-penalty", "0.6"], "give it with --beam"),
        (["--beam", "2", "--tunes", "3"], "--beam >= 3"),
    ],
)
def test_cli_conflicting_options_are_one_line_errors(cli, run, args, says):
    result = cli("sample", run, "--length", "20", *args)
    assert says in one_error_line(result)
