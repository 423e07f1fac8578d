"""`charrnn bench --only quality|grid|scan`: rows of validation after a budget, with ratios to the
reference loop of the same run. Tiny plans, budgets under a second: the tests check the rows,
never the figures."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import one_error_line

from charrnn.bench import BenchPlan, run_bench
from charrnn.bench.quality import bench_quality_rows, bench_train_config, find_corpus, validation_bpc
from charrnn.config import ModelConfig, TrainConfig

PLAN = BenchPlan(
    hidden=16,
    layers=1,
    quality_budgets=(1.0,),
    quality_corpora=("tiny",),
    grid_sizes=((16, 1), (24, 1)),
    grid_budgets=(1.0,),
    scan_models=(("mingru", 16, 1),),
    scan_budgets=(1.0,),
)


@pytest.fixture(autouse=True)
def setup(tmp_path, tiny_corpus, monkeypatch, cached_speed):
    """One thread (results, not speed), the tiny corpus as a ready corpus, a cached machine speed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    (tmp_path / "corpora").mkdir()
    (tmp_path / "corpora" / "tiny.txt").write_bytes(tiny_corpus.read_bytes())
    monkeypatch.setenv("CHARRNN_CORPORA", str(tmp_path / "corpora"))
    cached_speed(1e9)
    yield
    torch.set_num_threads(before)


def test_quality_rows_put_charrnn_next_to_the_reference_loop():
    rows = bench_quality_rows(PLAN, torch.device("cpu"), sizes=((24, 1),))
    assert [r.label for r in rows] == ["reference loop", "charrnn defaults", "charrnn, fixed size"]
    reference, default, fixed = rows
    assert reference.ratio == 1.0 and (reference.hidden_size, reference.num_layers) == (16, 1)
    # no size flags: sized for the budget (the tiny corpus caps it at the smallest size) and says why
    assert (default.hidden_size, default.num_layers) == (64, 2) and "size: 2x64" in default.note
    assert (fixed.hidden_size, fixed.num_layers) == (24, 1) and fixed.note == ""
    assert len({r.parameters for r in rows}) == 3
    assert reference.steps >= 1 and reference.chars_per_sec > 0
    for row in rows:  # train()'s budget counts its setting up: on a busy machine 1 s may hold no step
        assert 0 < row.val_bpc < 10 and row.budget_seconds == 1.0
        assert row.ratio is not None and row.ratio > 0
    assert fixed.ratio != default.ratio


def test_a_missing_corpus_is_a_skipped_row_saying_why():
    plan = dataclasses.replace(PLAN, quality_corpora=("no-such-corpus",))
    [row] = bench_quality_rows(plan, torch.device("cpu"))
    assert row.skipped and "no-such-corpus" in row.skipped and row.ratio is None


def test_validation_is_what_train_reports(tmp_path):
    from charrnn.checkpoint import load_model
    from charrnn.data.tokens import load_tokens, read_corpus_bytes
    from charrnn.training.run import train

    path = find_corpus("tiny")
    cfg = dataclasses.replace(bench_train_config(path, PLAN, torch.device("cpu"), 0.3), time_budget=None, steps=3)
    model_cfg = ModelConfig(hidden_size=16, num_layers=1, embed_size=8)
    result = train(read_corpus_bytes(path, name="tiny"), model_cfg, cfg, tmp_path / "run")
    data = load_tokens(read_corpus_bytes(path, name="tiny"), val_frac=cfg.val_frac)
    model = load_model(result.last_path).model
    assert validation_bpc(model, data, cfg, torch.device("cpu")) == pytest.approx(result.last_val_bpc, rel=1e-5)


def test_a_big_corpus_validates_on_about_quality_val_chars(tmp_path):
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 1_000_000)
    assert bench_train_config(big, PLAN, torch.device("cpu"), 60).val_frac == pytest.approx(0.05)
    assert bench_train_config(find_corpus("tiny"), PLAN, torch.device("cpu"), 60).val_frac == TrainConfig().val_frac


def test_grid_and_scan_sections_add_their_rows():
    report = run_bench(PLAN, device="cpu", sections=("grid", "scan"))
    labels = [r.label for r in report.quality_rows]
    assert labels == [
        "reference loop",
        "charrnn defaults",  # what the grid judges
        "charrnn, fixed size",
        "charrnn, fixed size",
        "reference loop",
        "charrnn defaults",
        "scan-cell trial",
    ]
    assert report.quality_rows[-1].cell == "mingru" and report.quality_rows[-1].ratio is not None


def test_cli_prints_the_quality_table(cli, monkeypatch):
    monkeypatch.setattr(BenchPlan, "full", classmethod(lambda cls: dataclasses.replace(PLAN, precision_steps=0)))
    result = cli("bench", "--only", "quality")
    assert result.exit_code == 0, result.output
    for text in ("Quality", "reference", "defaults", "2x64", "tiny", "size: 2x64"):  # table cells wrap at 80 columns
        assert text in result.stdout, text


def test_budget_corpus_and_size_choose_the_rows(cli, monkeypatch):
    monkeypatch.setattr(BenchPlan, "full", classmethod(lambda cls: dataclasses.replace(PLAN, precision_steps=0)))
    result = cli("bench", "--only", "grid", "--json", "--budget", "0.4s", "--corpus", "tiny", "--size", "1x8")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["quality_rows"]
    assert [(r["label"], r["budget_seconds"], r["corpus"]) for r in rows] == [
        ("reference loop", 0.4, "tiny"),
        ("charrnn defaults", 0.4, "tiny"),
        ("charrnn, fixed size", 0.4, "tiny"),
    ]
    assert (rows[2]["num_layers"], rows[2]["hidden_size"]) == (1, 8)


@pytest.mark.parametrize(
    "option",
    [
        ("--budget", "0s"),
        ("--budget", "soon"),
        ("--budget", "2d"),
        ("--size", "256"),
        ("--size", "0x8"),
        ("--size", "2x"),
    ],
)
def test_a_bad_budget_or_size_is_one_line(cli, option):
    result = cli("bench", "--only", "grid", *option)
    assert option[0] in one_error_line(result)


def test_a_grid_size_the_defaults_picked_is_trained_once_and_judged_with_the_grid():
    rows = bench_quality_rows(PLAN, torch.device("cpu"), sizes=((64, 2), (24, 1)))
    assert [r.label for r in rows] == ["reference loop", "charrnn defaults", "charrnn, fixed size"]
    reference, default, fixed = rows
    assert (default.hidden_size, default.num_layers) == (64, 2) and default.grid_size and not fixed.grid_size
    best = min(default.val_bpc, fixed.val_bpc)
    assert default.grid_ratio == pytest.approx(default.val_bpc / best)
    assert fixed.grid_ratio == pytest.approx(fixed.val_bpc / best)
    assert reference.grid_ratio == pytest.approx(reference.val_bpc / best)
    assert min(default.grid_ratio, fixed.grid_ratio) == 1.0


def test_without_a_grid_there_is_no_grid_ratio():
    rows = bench_quality_rows(PLAN, torch.device("cpu"))
    assert [r.grid_ratio for r in rows] == [None, None]


def test_cli_grid_table_says_which_row_is_also_a_grid_size_and_the_ratio_to_the_best(cli, monkeypatch):
    monkeypatch.setattr(BenchPlan, "full", classmethod(lambda cls: dataclasses.replace(PLAN, precision_steps=0)))
    from charrnn.cli import application

    monkeypatch.setattr(application.stdout, "width", 200)  # the console may exist already, at 80 columns
    result = cli("bench", "--only", "grid", "--budget", "0.4s", "--corpus", "tiny", "--size", "2x64", "--size", "1x8")
    assert result.exit_code == 0, result.output
    assert "vs grid best" in result.stdout and "(= that fixed size)" in result.stdout
    assert result.stdout.count("1x8") == 1 and result.stdout.count("2x64") >= 1
