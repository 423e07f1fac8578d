"""Generation: seeds, temperature 0, top-k/top-p, prime, stop, length."""

from __future__ import annotations

import pytest
import torch

import charrnn.sample as sampling
from charrnn.config import SampleConfig
from charrnn.errors import ConfigError
from charrnn.model import RNNLanguageModel
from charrnn.sample import check_prime, choose_next, generate, generate_samples
from charrnn.stepper import FastStepper
from charrnn.tokenizers.char import CharTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

TOKENIZER = CharTokenizer(sorted(set("abcdefgh \n")))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return RNNLanguageModel(
        "lstm", vocab_size=TOKENIZER.vocab_size, embed_size=4, hidden_size=16, num_layers=2, dropout=0.0
    ).eval()


def text(model, prime="", generator=None, fast=True, **settings):
    cfg = SampleConfig(**{"length": 60, **settings})
    return "".join(generate(model, TOKENIZER, cfg, prime=prime, generator=generator, fast=fast))


def test_same_seed_same_text_other_seed_other_text(model):
    a = text(model, generator=torch.Generator().manual_seed(5))
    b = text(model, generator=torch.Generator().manual_seed(5))
    c = text(model, generator=torch.Generator().manual_seed(6))
    assert a == b and a != c and len(a) == 60


def test_temperature_zero_is_argmax(model):
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
    assert choose_next(logits, 0.0).tolist() == [1, 0]
    # and generation at temp 0 ignores the seed entirely
    assert text(model, temperature=0, generator=torch.Generator().manual_seed(1)) == text(
        model, temperature=0, generator=torch.Generator().manual_seed(2)
    )


def test_top_k_and_top_p_only_draw_allowed_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    top_k = {int(choose_next(logits, 1.0, top_k=2, generator=gen)) for _ in range(200)}
    top_p = {int(choose_next(logits, 1.0, top_p=0.7, generator=gen)) for _ in range(200)}
    assert top_k == {0, 1} and top_p == {0, 1}  # 0.5 < 0.7 needs the second token, not the third


def test_prime_comes_first_and_length_counts_new_characters(model):
    out = text(model, prime="abc", length=25, generator=torch.Generator().manual_seed(0))
    assert out.startswith("abc") and len(out) == 28


def test_stop_string_ends_the_sample(model):
    gen = torch.Generator().manual_seed(3)
    out = text(model, length=500, stop="a", generator=gen)
    assert out.endswith("a") and out.count("a") == 1


def test_fast_path_equals_module_path(model):
    fast = text(model, length=200, generator=torch.Generator().manual_seed(9))
    slow = text(model, length=200, generator=torch.Generator().manual_seed(9), fast=False)
    assert fast == slow


def test_unknown_prime_characters_are_named_or_dropped():
    with pytest.raises(ConfigError, match='"z"'):
        check_prime(TOKENIZER, "abz", drop_unknown=False)
    assert check_prime(TOKENIZER, "abz", drop_unknown=True) == ("ab", ["z"])


CELLS = ["lstm", "gru", "rnn", "rnn-relu"]
# (temperature, top_k, top_p): plain draws, argmax, top-k, top-p with top-k.
SAMPLING = [(1.0, 0, 1.0), (0.0, 0, 1.0), (0.8, 5, 1.0), (1.2, 10, 0.7)]


def _model(cell: str, vocab: int = 23, layers: int = 2) -> RNNLanguageModel:
    torch.manual_seed(3)
    model = RNNLanguageModel(cell, vocab_size=vocab, embed_size=6, hidden_size=20, num_layers=layers, dropout=0.0)
    with torch.no_grad():  # larger weights than the initialisation: sharper, more varied logits
        for p in model.parameters():  # (not for the ReLU RNN, whose state would blow up)
            p.mul_(1.0 if cell == "rnn-relu" else 3.0)
    return model.eval()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("streams", [1, 5])
@pytest.mark.parametrize("temperature,top_k,top_p", SAMPLING)
@torch.inference_mode()
def test_fast_stepper_draws_the_same_tokens_as_the_module(cell, streams, temperature, top_k, top_p):
    model = _model(cell, layers=3 if streams == 5 else 2)
    stepper = FastStepper(model)
    drawn = {}
    for name in ("fast", "plain"):
        gen = torch.Generator().manual_seed(11)
        token = torch.arange(streams) % model.vocab_size  # (B,)
        hidden = stepper.init_state(streams) if name == "fast" else model.init_state(streams)
        tokens = []
        for _ in range(40):
            if name == "fast":
                logits, hidden = stepper.step(token, hidden)  # (B, V)
            else:
                out, hidden = model(token[:, None], hidden)  # (B, 1, V)
                logits = out[:, -1]
            token = choose_next(logits, temperature, top_k, top_p, gen)
            tokens.append(token)
        drawn[name] = torch.stack(tokens, dim=1)  # (B, steps)
    assert torch.equal(drawn["fast"], drawn["plain"])
    if temperature > 0:  # argmax may settle on one token; draws must not, or the test proves little
        assert len(torch.unique(drawn["fast"])) > 3


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("temperature,top_k,top_p", [(0.8, 0, 1.0), (1.0, 4, 0.8)])
def test_generate_fast_equals_plain_text(cell, temperature, top_k, top_p):
    tok = CharTokenizer.fit("abcdefghij klmnop\nqrstuvw,.")
    torch.manual_seed(0)
    model = _model(cell, vocab=tok.vocab_size)
    texts = [
        "".join(
            generate(
                model,
                tok,
                SampleConfig(length=120, temperature=temperature, top_k=top_k, top_p=top_p),
                prime="abc",
                generator=torch.Generator().manual_seed(5),
                fast=fast,
            )
        )
        for fast in (True, False)
    ]
    assert texts[0] == texts[1]
    assert texts[0].startswith("abc") and len(texts[0]) == 123


def test_choose_next_respects_top_k_and_top_p():
    logits = torch.tensor([[5.0, 4.0, 3.0, 0.0, -1.0]]).repeat(400, 1)
    gen = torch.Generator().manual_seed(0)
    assert set(choose_next(logits, 1.0, top_k=2, generator=gen).tolist()) == {0, 1}
    # softmax: 0.66, 0.24, ...: top_p 0.5 keeps only the first token, 0.8 the first two.
    assert set(choose_next(logits, 1.0, top_p=0.5, generator=gen).tolist()) == {0}
    assert set(choose_next(logits, 1.0, top_p=0.8, generator=gen).tolist()) == {0, 1}
    assert choose_next(logits, 0.0).unique().tolist() == [0]


def test_a_top_p_too_small_for_float32_still_keeps_the_most_likely_token():
    logits = torch.tensor([[0.5, 3.0, 1.0], [2.0, 0.0, -1.0]])
    for top_p in (6.5e-238, 1e-50, 1e-9):
        chosen = choose_next(logits, 1.0, top_p=top_p, generator=torch.Generator().manual_seed(0))
        assert chosen.tolist() == [1, 0]  # nothing but the top token is left to draw


def test_the_draw_follows_the_tempered_softmax_and_never_draws_a_dropped_token():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])  # the last: log 0 = -inf, never to be drawn
    rows = torch.log(probs).repeat(20000, 1)
    for temperature in (1.0, 0.5):
        drawn = choose_next(rows, temperature, generator=torch.Generator().manual_seed(0))
        freq = torch.bincount(drawn, minlength=5).double() / len(drawn)
        expected = probs.double() ** (1 / temperature)
        # 20,000 draws: a standard error under 0.0036 per token; 0.015 is four of them
        torch.testing.assert_close(freq, expected / expected.sum(), atol=0.015, rtol=0)
        assert freq[4] == 0


# ------------------------------------------------------------------ many samples at once


def samples(model, count, prime="", seed=0, fast=True, **settings):
    """generate_samples' texts by sample, and the order in which their pieces came."""
    cfg = SampleConfig(**{"length": 60, **settings, "num_samples": count})
    generator = torch.Generator().manual_seed(seed)
    texts, order = [""] * count, []
    for index, piece in generate_samples(model, TOKENIZER, cfg, prime=prime, generator=generator, fast=fast):
        texts[index] += piece
        order.append(index)
    return texts, order


def test_one_sample_of_many_is_the_text_generate_gives_for_the_seed(model):
    texts, _ = samples(model, 1, prime="ab", seed=5)
    assert texts == [text(model, prime="ab", generator=torch.Generator().manual_seed(5))]


def test_many_samples_come_whole_in_order_each_with_the_prime_and_length(model):
    texts, order = samples(model, 5, prime="ab", seed=1, length=40)
    assert order == sorted(order) and set(order) == set(range(5))  # sample by sample, never interleaved
    assert all(t.startswith("ab") and len(t) == 42 for t in texts)
    assert len(set(texts)) == 5  # each row draws its own text
    again, _ = samples(model, 5, prime="ab", seed=1, length=40)
    assert again == texts


def test_greedy_samples_at_once_are_each_the_greedy_text(model):
    texts, _ = samples(model, 3, prime="ab", temperature=0)
    assert texts == [text(model, prime="ab", temperature=0)] * 3


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_rows_that_stop_early_leave_the_batch_without_mixing_the_others_states(cell, monkeypatch):
    """Samples stop at different steps (--stop): at every step, each row's logits must still be
    what the fused module gives for its own sample's text so far."""
    torch.manual_seed(1)
    model = RNNLanguageModel(cell, TOKENIZER.vocab_size, 4, 16, 2, dropout=0.0).eval()
    seen = []  # each draw's logits (rows, V)
    monkeypatch.setattr(
        sampling, "choose_next", lambda logits, *a: seen.append(logits.clone()) or choose_next(logits, *a)
    )
    texts, _ = samples(model, 8, prime="ab", seed=2, length=30, stop="b", temperature=2.0)
    new = [t[2:] for t in texts]
    assert len({len(t) for t in new}) > 2  # they did stop at different steps
    for step, logits in enumerate(seen):
        going = [i for i, t in enumerate(new) if len(t) > step]  # the rows still in the batch, in order
        assert logits.shape[0] == len(going)
        for row, i in enumerate(going):
            ids = torch.tensor([[int(c) for c in TOKENIZER.encode(texts[i][: 2 + step])]])
            with torch.no_grad():
                expected = model(ids)[0][0, -1]  # (V,)
            torch.testing.assert_close(logits[row], expected, rtol=1e-4, atol=1e-4)


def test_an_empty_sample_still_counts_as_one(model):
    texts, order = samples(model, 3, length=0)
    assert texts == ["", "", ""] and order == [0, 1, 2]


def test_samples_beyond_one_batch_run_in_batches(model, monkeypatch):
    monkeypatch.setattr(sampling, "MAX_STREAMS", 2)
    texts, order = samples(model, 5, prime="a", seed=3, length=20)
    assert order == sorted(order) and set(order) == set(range(5)) and all(len(t) == 21 for t in texts)
