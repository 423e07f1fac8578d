"""The fast paths give exactly what the plain paths give, and `charrnn bench` returns sane figures.

No speed is asserted here: speed is what `charrnn bench` prints.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import needs_native_bf16

from charrnn import bench as bench_mod
from charrnn import tokenizers
from charrnn.bench import BenchPlan
from charrnn.config import SampleConfig
from charrnn.errors import CorpusError
from charrnn.model import FastStepper, RNNLanguageModel
from charrnn.runtime import cpu_has_fast_bf16
from charrnn.sample import choose_next, generate
from charrnn.tokenizers import CharTokenizer

CELLS = ["lstm", "gru", "rnn", "rnn-relu"]
# (temperature, top_k, top_p): plain draws, argmax, top-k, top-p with top-k.
SAMPLING = [(1.0, 0, 1.0), (0.0, 0, 1.0), (0.8, 5, 1.0), (1.2, 10, 0.7)]

TINY_PLAN = BenchPlan(
    hidden=24,
    layers=2,
    seq_len=8,
    batch_size=4,
    train_rounds=2,
    train_steps_per_round=1,
    sample_models=(("lstm", 16), ("gru", 16)),
    sample_streams=(1, 3),
    sample_seconds=0.05,
    data_mb=0.05,
    data_hidden=16,
    quality_seconds=1.0,
    bf16_shapes=((2, 4),),
    precision_steps=2,
)


@pytest.fixture(autouse=True)
def one_thread():
    """These tests check results, not speed. Tiny ops on two OpenMP threads of a busy shared
    machine wait on each other (measured: 25x slower than one thread), so use one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    with pytest.raises(CorpusError, match="ud83e"):  # beyond the largest code point of the vocabulary
        tok.encode("Hello 🤖")


def test_char_encode_full_byte_vocabulary_uses_uint8_ids():
    tok = CharTokenizer([chr(i) for i in range(256)])
    ids = tok.encode("\x00\xff a")
    assert ids.dtype == np.uint8 and ids.tolist() == [0, 255, 32, 97]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stepper_weight_bytes_counts_what_a_step_reads(cell):
    model = RNNLanguageModel(cell, vocab_size=10, embed_size=4, hidden_size=8, num_layers=2, dropout=0.0)
    gates = 4 if cell == "lstm" else 3
    expected = (8 * gates * 8 + 16 * gates * 8 + 8 * 10) * 4  # w_hh0, layer 2 [x, h], head; fp32
    assert bench_mod.stepper_weight_bytes(FastStepper(model)) == expected


def test_training_flops_per_token_counts_matmuls():
    # LSTM 1x2 over embed 3, vocab 5: forward 2*(3+2)*8 + 2*2*5 = 100; training = 3x forward.
    assert bench_mod.training_flops_per_token("lstm", 3, 2, 1, 5) == 300


def test_bench_training_runs_both_loops():
    peak = bench_mod.measure_matmul_peak(torch.device("cpu"), "fp32", size=64, seconds=0.01)
    result = bench_mod.bench_training(TINY_PLAN, "fp32", torch.device("cpu"), peak)
    assert result.precision == "fp32"
    assert result.charrnn_chars_per_sec > 0 and result.reference_chars_per_sec > 0
    assert result.ratio == pytest.approx(result.charrnn_chars_per_sec / result.reference_chars_per_sec)
    assert 0 < result.utilization == pytest.approx(result.flops_per_sec / peak)


@needs_native_bf16
def test_bench_bf16_shape_times_both_precisions():
    result = bench_mod.bench_bf16_shape(TINY_PLAN, 3, 5, torch.device("cpu"))
    assert (result.batch_size, result.seq_len) == (3, 5)
    assert result.speedup == pytest.approx(result.bf16_chars_per_sec / result.fp32_chars_per_sec)


@needs_native_bf16
def test_precision_quality_compares_equal_steps(tiny_corpus):
    result = bench_mod.bench_precision_quality(TINY_PLAN, torch.device("cpu"), corpus=tiny_corpus)
    assert result.skipped is None and result.steps == 2
    assert 3.0 < result.fp32_val_loss < 4.0  # ~ln(36), the vocabulary, after two steps of a tiny model
    assert result.relative_difference == pytest.approx(
        (result.bf16_val_loss - result.fp32_val_loss) / result.fp32_val_loss
    )
    assert abs(result.relative_difference) < 0.05


def test_bench_sampling_runs_on_the_threads_asked_and_restores_them():
    torch.set_num_threads(2)
    result = bench_mod.bench_sampling("gru", 8, 1, streams=6, seconds=0.01, bandwidth=1e9, threads=1)
    assert result.threads == 1 and torch.get_num_threads() == 2
    result = bench_mod.bench_sampling("gru", 8, 1, streams=6, seconds=0.01, bandwidth=1e9)
    assert result.threads == 2


def test_few_streams_step_on_one_thread_and_restore_the_count(monkeypatch):
    torch.set_num_threads(2)
    seen = []
    stepper = FastStepper(_model("lstm"))
    inner = stepper._step
    monkeypatch.setattr(stepper, "_step", lambda t, h: seen.append(torch.get_num_threads()) or inner(t, h))
    for streams in (1, 4, 5):
        stepper.step(torch.zeros(streams, dtype=torch.long), stepper.init_state(streams))
    assert seen == [1, 1, 2] and torch.get_num_threads() == 2


def test_bench_sampling_reports_the_bandwidth_limit():
    result = bench_mod.bench_sampling("lstm", 16, 2, streams=3, seconds=0.02, bandwidth=1e9, peak=4e9)
    assert result.chars_per_sec > 0 and result.threads == torch.get_num_threads()
    assert result.limit_chars_per_sec == pytest.approx(3 * 1e9 / result.weight_bytes)
    assert result.compute_limit_chars_per_sec == pytest.approx(4e9 / (2 * result.weight_bytes / 4))


def test_generated_corpus_is_utf8_of_the_asked_size(tmp_path):
    path = tmp_path / "g.txt"
    bench_mod.generate_corpus(path, 0.2)
    data = path.read_bytes()
    text = data.decode("utf-8")  # never cut inside a character
    assert 199_000 <= len(data) <= 200_000
    assert "\n\n" in text and "’" in text


def test_quality_is_skipped_with_a_reason_without_the_corpus(monkeypatch):
    monkeypatch.setenv("CHARRNN_MIRROR", "")
    result = bench_mod.bench_quality(1.0, torch.device("cpu"))
    assert result.val_bpc is None and "tinyshakespeare" in result.skipped


def test_cli_bench_json_has_every_section(cli, monkeypatch):
    monkeypatch.setenv("CHARRNN_MIRROR", "")
    plan = dataclasses.replace(TINY_PLAN, sample_models=(("lstm", 16), ("gru", 16)), train_rounds=1)
    monkeypatch.setattr(BenchPlan, "quick", classmethod(lambda cls: plan))
    result = cli("bench", "--quick", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["quick"] is True
    assert report["machine"]["auto_precision"] in ("fp32", "bf16")
    bf16 = cpu_has_fast_bf16()
    assert [t["precision"] for t in report["training"]] == (["fp32", "bf16"] if bf16 else ["fp32"])
    assert {(s["cell"], s["streams"]) for s in report["sampling"]} == {("lstm", 1), ("lstm", 3), ("gru", 1), ("gru", 3)}
    assert {s["threads"] for s in report["sampling"]} == {1}  # the tests run on one thread
    data = report["data"]
    assert data["cached"] is True and data["ids_dtype"] == "uint8"
    assert data["peak_rss_mb"] >= data["baseline_rss_mb"] > 0
    assert (
        0 < data["second_run_load_seconds"] <= data["second_run_ready_seconds"] <= data["second_run_first_step_seconds"]
    )
    assert report["quality"]["skipped"]
    assert report["precision_quality"]["skipped"]
    assert [(b["batch_size"], b["seq_len"]) for b in report["bf16_shapes"]] == ([(2, 4)] if bf16 else [])


def test_cli_bench_prints_tables(cli, monkeypatch):
    plan = dataclasses.replace(TINY_PLAN, precisions=("fp32",), sample_models=(("lstm", 16),), sample_streams=(1,))
    monkeypatch.setattr(BenchPlan, "quick", classmethod(lambda cls: plan))
    result = cli("bench", "--quick", "--only", "training", "--only", "sampling")
    assert result.exit_code == 0, result.stderr
    assert "--precision auto picks" in result.stdout
    assert "reference" in result.stdout and "limit" in result.stdout
    assert "Data path" not in result.stdout and "Quality" not in result.stdout
