"""bench/neighbour.py and the measured-choices rows of `charrnn bench`: the busy-neighbour run,
the batch x window grid's plan, and how the CLI shows them."""

from __future__ import annotations

import dataclasses

import pytest

from charrnn.bench import BenchPlan, BenchReport, BusyNeighbour, Machine, QualityRow, SamplingFloor
from charrnn.bench import neighbour as neighbour_mod
from charrnn.bench import quality as quality_mod

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = BenchPlan(hidden=16, layers=1, seq_len=8, batch_size=4, neighbour_hidden=16)


def test_the_neighbour_spins_until_killed_and_the_row_counts_both_runs():
    row = neighbour_mod.bench_busy_neighbour(TINY, seconds=2.0, threads=1)
    assert (row.seconds, row.neighbour_threads) == (2.0, 1)
    assert row.quiet_steps > 0 and row.busy_steps > 0
    assert row.kept == pytest.approx(row.busy_steps / row.quiet_steps)


def test_the_neighbour_process_is_running_until_it_is_killed():
    process = neighbour_mod.start_neighbour(1)
    try:
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()
    assert process.returncode is not None


def test_the_grid_varies_batch_and_window_per_seed_with_the_learning_rate_scaled(monkeypatch, tmp_path):
    plan = dataclasses.replace(TINY, grid_batches=(16, 64), grid_windows=(64, 128), grid_seeds=2)
    assert plan.grid_runs() == 8 and BenchPlan().grid_runs() == len(BenchPlan().grid_sizes)
    seen = []
    monkeypatch.setattr(quality_mod, "charrnn_row", lambda corpus, path, cfg, shape, label: seen.append((cfg, label)))
    quality_mod.shape_rows(plan)("c", tmp_path, quality_mod.TrainConfig(time_budget=1.0))
    cells = [(cfg.batch_size, cfg.seq_len, cfg.seed) for cfg, _ in seen]
    assert len(set(cells)) == 8 and {cfg.time_budget for cfg, _ in seen} == {1.0}
    base = quality_mod.TrainConfig().lr
    assert {cfg.batch_size: cfg.lr for cfg, _ in seen} == {
        16: pytest.approx(base * 0.5**0.5),
        64: pytest.approx(base * 2**0.5),
    }
    assert seen[0][1] == "batch 16 x window 64, seed 1" and {cfg.precision for cfg, _ in seen} == {"auto"}
    seen.clear()
    quality_mod.shape_rows(dataclasses.replace(plan, grid_precision="fp32"))("c", tmp_path, quality_mod.TrainConfig())
    assert {cfg.precision for cfg, _ in seen} == {"fp32"} and seen[0][1] == "batch 16 x window 64, fp32, seed 1"


NOTE = "size: 2x256 LSTM (0.88M parameters)"


def test_cli_shows_the_floor_the_neighbour_and_the_grid(cli, monkeypatch):
    import charrnn.bench as bench_pkg

    machine = Machine("2", "3", "cpu x", 2, "cpu (x)", "avx2", "fp32", "measured")
    report = BenchReport(quick=True, machine=machine, config={})
    report.sampling_floor = SamplingFloor(
        "lstm", 512, 2, {"torch, 1 thread": 3000.0, "numpy, 2 threads": 2500.0}, 2500.0, 2500 / 3000, "numpy, 2 threads"
    )
    report.sampling_floor.many_samples, report.sampling_floor.many_chars_per_sec = 32, 10000.0
    report.sampling_floor.many_cores_busy, report.sampling_floor.many_choice = 1.96, "torch, 2 threads"
    report.busy_neighbour = BusyNeighbour(60.0, 2, 1200, 700, 700 / 1200)
    report.quality_rows = [
        QualityRow("ts", "reference loop", budget_seconds=60.0, val_bpc=2.5, ratio=1.0),
        *(
            QualityRow(
                "ts", f"batch 32 x window 64, seed {s}", "lstm", 256, 2, 60.0, 100, val_bpc=v, ratio=v / 2.5, note=NOTE
            )
            for s, v in ((1, 2.0), (2, 2.2))
        ),
    ]
    monkeypatch.setattr(bench_pkg, "run_bench", lambda plan, **kw: report)
    result = cli("bench", "--quick", "--only", "neighbour")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "0.83 (target >= 0.8)" in out and "0.58 (target >= 0.5)" in out
    assert "32 x 64" in out and "2.100" in out and "0.200" in out  # mean and spread of the seeds
    assert "flags: avx2" in out
    assert "32 at once (torch, 2 threads)" in out and "4.0x; 2.0 cores busy" in out
    assert out.count("size: 2x256") == 1  # the seeds sized their runs alike: one note under the table


@pytest.mark.parametrize("flag", ["--batches", "--windows"])
def test_a_bad_grid_list_is_one_line(cli, flag):
    result = cli("bench", "--only", "grid", flag, "16,x")
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    assert f"error: {flag}: cannot read '16,x'" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_grid_precision_is_checked_before_anything_runs(cli):
    result = cli("bench", "--only", "grid", "--grid-precision", "fp8")
    assert result.exit_code == 2 and "must be auto, fp32 or bf16" in result.stderr
