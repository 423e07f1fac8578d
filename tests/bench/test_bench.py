"""`charrnn bench` returns sane figures (the fast sampling paths are checked in test_sample.py).

No speed is asserted here: speed is what `charrnn bench` prints.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import needs_native_bf16

from charrnn import bench as bench_mod
from charrnn.bench import BenchPlan
from charrnn.model import RNNLanguageModel
from charrnn.probes.threads import thread_counts
from charrnn.runtime import cpu_can_run_bf16
from charrnn.stepper import FastStepper, blas_threads_settable

pytestmark = pytest.mark.usefixtures("one_thread")

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
    floor_model=("lstm", 16, 2),
    data_mb=0.05,
    data_hidden=16,
    data_source="generated",
    data_budget_seconds=0.0,
    quality_budgets=(0.3,),
    quality_corpora=("tinyshakespeare",),
    bf16_shapes=((2, 4),),
    precision_steps=2,
)


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
    assert result.ratio > 0 and 0 < result.utilization and result.flops_per_sec > 0


@needs_native_bf16
def test_bench_bf16_shape_times_both_precisions():
    result = bench_mod.bench_bf16_shape(TINY_PLAN, 3, 5, torch.device("cpu"))
    assert (result.batch_size, result.seq_len) == (3, 5)
    assert result.speedup > 0 and result.bf16_chars_per_sec > 0 and result.fp32_chars_per_sec > 0


@needs_native_bf16
def test_precision_quality_compares_equal_steps(tiny_corpus):
    result = bench_mod.bench_precision_quality(TINY_PLAN, torch.device("cpu"), corpus=tiny_corpus)
    assert result.skipped is None and result.steps == 2
    assert 3.0 < result.fp32_val_loss < 4.0  # ~ln(36), the vocabulary, after two steps of a tiny model
    assert abs(result.relative_difference) < 0.05


def test_bench_sampling_runs_on_the_threads_asked_or_measured_and_restores_them(monkeypatch):
    import charrnn.probes.threads as threads_mod

    torch.set_num_threads(2)
    result = bench_mod.bench_sampling("gru", 8, 1, streams=6, seconds=0.01, bandwidth=1e9, threads=1)
    assert result.threads == 1 and torch.get_num_threads() == 2
    for fastest in thread_counts():  # what the probe measures (faked: the rule itself is test_threads')
        fake = lambda work, counts, fastest=fastest, **kw: [  # noqa: E731
            threads_mod.ThreadTiming(n, 1e-3 if n == fastest else 2e-3) for n in counts
        ]
        monkeypatch.setattr(threads_mod, "time_thread_counts", fake)
        result = bench_mod.bench_sampling("gru", 8, 1, streams=6, seconds=0.01, bandwidth=1e9, threads=None)
        assert result.threads == fastest and torch.get_num_threads() == 2


def test_the_floor_row_times_generate_against_the_steps_matmuls_on_each_thread_count():
    floor = bench_mod.bench_floor("lstm", 16, 2, seconds=0.05, rounds=2, many=3)
    backends = ("torch", "numpy") if blas_threads_settable() else ("torch",)
    assert set(floor.floor_steps_per_sec) == {bench_mod.floor_label(b, n) for b in backends for n in thread_counts()}
    assert floor.sampler_choice in {bench_mod.floor_label(b, n) for b in backends for n in thread_counts()}
    assert floor.sampler_chars_per_sec > 0
    assert floor.ratio == pytest.approx(floor.sampler_chars_per_sec / max(floor.floor_steps_per_sec.values()))
    assert floor.many_samples == 3 and floor.many_chars_per_sec > 0 and floor.many_cores_busy > 0
    assert floor.many_choice in {bench_mod.floor_label(b, n) for b in backends for n in thread_counts()}


def test_bench_sampling_reports_the_bandwidth_limit():
    result = bench_mod.bench_sampling("lstm", 16, 2, streams=3, seconds=0.02, bandwidth=1e9, peak=4e9)
    assert result.chars_per_sec > 0 and result.threads == torch.get_num_threads()
    # 3 streams each read every weight once per character at 1 GB/s
    assert result.limit_chars_per_sec == pytest.approx(3 * 1e9 / result.weight_bytes)
    assert result.compute_limit_chars_per_sec > 0


def test_generated_corpus_is_utf8_of_the_asked_size(tmp_path):
    path = tmp_path / "g.txt"
    bench_mod.generate_corpus(path, 0.2)
    data = path.read_bytes()
    text = data.decode("utf-8")  # never cut inside a character
    assert 199_000 <= len(data) <= 200_000
    assert "\n\n" in text and "’" in text


def test_quality_is_skipped_with_a_reason_without_the_corpus(monkeypatch):
    monkeypatch.setenv("CHARRNN_MIRROR", "")
    [row] = bench_mod.bench_quality_rows(TINY_PLAN, torch.device("cpu"))
    assert row.steps == 0 and "tinyshakespeare" in row.skipped


def test_cli_bench_json_has_every_section(cli, monkeypatch):
    monkeypatch.setenv("CHARRNN_MIRROR", "")
    plan = dataclasses.replace(TINY_PLAN, sample_models=(("lstm", 16), ("gru", 16)), train_rounds=1)
    monkeypatch.setattr(BenchPlan, "quick", classmethod(lambda cls: plan))
    result = cli("bench", "--quick", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["quick"] is True
    assert report["machine"]["auto_precision"] in ("fp32", "bf16")
    bf16 = cpu_can_run_bf16()
    assert [t["precision"] for t in report["training"]] == (["fp32", "bf16"] if bf16 else ["fp32"])
    assert {(s["cell"], s["streams"]) for s in report["sampling"]} == {("lstm", 1), ("lstm", 3), ("gru", 1), ("gru", 3)}
    rows = [(s["cell"], s["streams"], s["threads"]) for s in report["sampling"]]
    assert len(rows) == len(set(rows)) == 4 * len(thread_counts())  # each on one thread and on all
    assert report["sampling_floor"]["ratio"] > 0
    data = report["data"]
    assert data["cached"] is True and data["ids_dtype"] == "uint8"
    assert data["peak_rss_mb"] >= data["baseline_rss_mb"] > 0
    assert (
        0 < data["second_run_load_seconds"] <= data["second_run_ready_seconds"] <= data["second_run_first_step_seconds"]
    )
    assert [row["corpus"] for row in report["quality_rows"] if row["skipped"]] == ["tinyshakespeare"]
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


def test_the_bench_says_how_long_it_takes_before_it_starts(cli, monkeypatch):
    plan = dataclasses.replace(TINY_PLAN, precisions=("fp32",), sample_models=(("lstm", 16),), sample_streams=(1,))
    monkeypatch.setattr(BenchPlan, "quick", classmethod(lambda cls: plan))
    result = cli("bench", "--quick", "--only", "sampling", "--json")
    assert result.exit_code == 0, result.stderr
    seconds = f"{plan.sample_seconds:.0f} s"
    expected = f"bench: at least {seconds} (sampling {seconds} of fixed budgets; evaluations and set-up add to it)"
    assert result.stderr.splitlines()[0] == expected
    # The full plan: two corpora x (60 s + 5 min) x (reference + defaults), the data run's budget, sampling.
    full = BenchPlan.full().fixed_seconds(("training", "sampling", "data", "quality"), threads=2)
    assert full["quality"] == 2 * 360 * 2 and full["data"] == BenchPlan.full().data_budget_seconds
    # 4 models x (1 and 32 streams) x (one thread and two), and the floor row's two budgets
    assert full["sampling"] == (4 * 2 * 2 + 2) * BenchPlan.full().sample_seconds
    grid_alone = BenchPlan.full().fixed_seconds(("grid",), threads=1)["grid"]
    assert grid_alone == 2 * 60 * (len(BenchPlan.full().grid_sizes) + 2)  # its own reference and no-flags rows
