"""bench/threads.py: charrnn's training step on each thread layout its probe weighs, and the table."""

from __future__ import annotations

import math

import pytest
import torch

from charrnn.bench import BenchPlan, BenchReport, Machine, TrainingThreads, bench_training_threads
from charrnn.probes.cache import usable_cores
from charrnn.probes.threads import Split, choice_label, thread_counts

TINY = BenchPlan(hidden=16, layers=1, seq_len=8, batch_size=4, neighbour_hidden=16, train_rounds=2)


@pytest.fixture
def every_core():
    """Up to two torch threads (one per core), so that the split and the two-thread layout exist
    where the machine has them; the count is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, usable_cores()))
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("every_core")
def test_each_layout_a_run_may_take_is_timed_and_the_threads_are_restored():
    counts = thread_counts()
    row = bench_training_threads(TINY, "fp32", torch.device("cpu"))
    expected = [choice_label(n) for n in counts] + ([choice_label(Split(max(counts)))] if max(counts) > 1 else [])
    assert list(row.steps_per_sec) == expected
    assert all(math.isfinite(rate) and rate > 0 for rate in row.steps_per_sec.values())
    assert (row.precision, row.hidden, row.layers, row.batch_size, row.seq_len) == ("fp32", 16, 1, 4, 8)
    assert torch.get_num_threads() == max(counts)  # the split's one thread, or one layout's count, not left behind


def test_choice_labels_name_layouts_as_the_runs_notes_do():
    assert [choice_label(1), choice_label(2), choice_label(Split(2))] == [
        "1 thread",
        "2 threads",
        "2 workers of one thread",
    ]


def test_cli_shows_each_layout_against_one_thread(cli, monkeypatch):
    import charrnn.bench as bench_pkg

    machine = Machine("2", "3", "cpu x", 2, "cpu (x)", "avx2", "fp32", "measured")
    report = BenchReport(quick=True, machine=machine, config={})
    rates = {"1 thread": 10.0, "2 threads": 12.5, "2 workers of one thread": 16.0}
    report.training_threads = [TrainingThreads("bf16", 256, 2, 32, 64, rates)]
    monkeypatch.setattr(bench_pkg, "run_bench", lambda plan, **kw: report)
    result = cli("bench", "--quick", "--only", "training")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "Training threads" in out and "LSTM 2x256, batch 32 x 64" in out
    assert "2 workers of one thread (fastest)" in out and "1.60x" in out and "1.25x" in out and "1.00x" in out
