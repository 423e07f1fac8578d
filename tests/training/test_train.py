"""The training loop through its library API: learning, metrics, limits, run directories."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import TINY_TRAIN

from charrnn.checkpoint import RunCheckpoint
from charrnn.config import ModelConfig, TrainConfig, parse_duration
from charrnn.data.tokens import read_corpus_bytes
from charrnn.errors import ConfigError
from charrnn.training import run as run_module
from charrnn.training import sizing
from charrnn.training.budget import Budget
from charrnn.training.reporting import Reporter
from charrnn.training.run import RunHooks, RunRequest, train

MODEL = ModelConfig(embed_size=8, hidden_size=32, num_layers=1)
FAST = dict(seq_len=16, batch_size=4, precision="fp32", eval_every=10, patience=None, warmup_steps=5)


class Collect(Reporter):
    def __init__(self):
        self.losses, self.evals, self.info = [], [], None

    def on_start(self, info):
        self.info = info

    def on_step(self, report):
        self.losses.append(report.loss)

    def on_eval(self, report):
        self.evals.append(report)


def test_loss_decreases_and_metrics_are_written(tiny_corpus, tmp_path):
    seen = Collect()
    result = train(
        read_corpus_bytes(tiny_corpus),
        MODEL,
        TrainConfig(steps=60, lr=3e-2, **FAST),
        tmp_path / "run",
        hooks=RunHooks(seen),
    )
    assert result.steps == 60 and result.stopped_because == "reached --steps 60"
    assert sum(seen.losses[-10:]) / 10 < sum(seen.losses[:10]) / 10 - 0.7
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60]
    assert rows[-1]["val_bpc"] == pytest.approx(rows[-1]["val_loss"] / math.log(2))  # char: 1 token = 1 char
    assert result.best_val_bpc == min(r["val_bpc"] for r in rows)
    assert (tmp_path / "run" / "best.safetensors").exists() and (tmp_path / "run" / "last.safetensors").exists()


def test_patience_stops_a_run_that_no_longer_improves(tiny_corpus, tmp_path):
    cfg = TrainConfig(**{**FAST, "patience": 1, "lr": 0.5, "optimizer": "sgd", "eval_every": 2})
    result = train(read_corpus_bytes(tiny_corpus), MODEL, cfg, tmp_path / "run")
    assert "--patience" in result.stopped_because


def test_default_limit_is_ten_epochs(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("the quick brown fox jumps over the lazy dog\n" * 16)
    seen = Collect()
    cfg = TrainConfig(**{**FAST, "eval_every": 1000})
    result = train(read_corpus_bytes(small), MODEL, cfg, tmp_path / "run", hooks=RunHooks(seen))
    assert seen.info.total_steps == 10 * seen.info.windows_per_epoch == result.steps
    assert "10 epochs" in result.stopped_because


def test_existing_run_is_not_overwritten(tiny_corpus, tmp_path):
    cfg = TrainConfig(steps=2, **FAST)
    train(read_corpus_bytes(tiny_corpus), MODEL, cfg, tmp_path / "run")
    before = (tmp_path / "run" / "best.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="--resume"):
        train(read_corpus_bytes(tiny_corpus), MODEL, cfg, tmp_path / "run")
    assert (tmp_path / "run" / "best.safetensors").read_bytes() == before
    train(read_corpus_bytes(tiny_corpus), MODEL, cfg, tmp_path / "run", RunRequest(force=True))


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("10m", 600), ("1.5h", 5400), ("45", 45), ("2 min", 120)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "ten minutes", "-5s", "0"])
def test_bad_durations(bad):
    with pytest.raises(ConfigError):
        parse_duration(bad)


def test_a_run_without_a_step_or_far_below_its_speed_ends_with_a_warning(cli, tiny_corpus, cached_speed, monkeypatch):
    none = cli("train", tiny_corpus, "--time-budget", "0.001s", "--hidden", "16", "--layers", "1", "--out", "none")
    assert none.exit_code == 0, none.output
    lines = none.stderr.splitlines()
    done = [i for i, line in enumerate(lines) if line.startswith("done (")][0]
    assert lines[done].startswith("done (reached --time-budget 0.001s; see the warning below) after 0 steps")
    assert lines[done + 1].startswith("warning: no training step ran in")
    # A machine whose speed cache promises far more than the run does: a busy one, as seen from inside.
    from charrnn.training.meters import SlowRunWatch

    monkeypatch.setattr(SlowRunWatch, "SLOW_STRETCH_SECONDS", 0.0)
    monkeypatch.setattr(SlowRunWatch, "MIN_STEP_FLOPS", 0.0)
    cached_speed(1e18)
    args = [
        "--steps",
        "3",
        "--hidden",
        "16",
        "--layers",
        "1",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--out",
        "slow",
    ]
    slow = cli("train", tiny_corpus, *args)
    assert slow.exit_code == 0, slow.output
    assert slow.stderr.count("warning: training runs at") == 2  # as it happened, and again under the summary
    assert "see the warning below" in slow.stderr and "--threads 1" in slow.stderr


def test_threads_are_honoured_and_checked(cli, tiny_corpus):
    import torch

    before = torch.get_num_threads()
    try:
        result = cli("train", tiny_corpus, "--steps", "1", "--hidden", "16", "--layers", "1", "--threads", "1")
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    absurd = cli("train", tiny_corpus, "--threads", "100000")
    assert absurd.exit_code == 2 and "--threads must be between 1 and" in absurd.stderr  # a usage error
    assert absurd.stderr.count("\n") == 1


def test_device_and_precision_are_decided_once_before_the_data_and_the_size(
    tiny_corpus, tmp_path, cached_speed, monkeypatch
):
    from charrnn import runtime

    order, real = [], runtime.resolve_precision
    monkeypatch.setattr(runtime, "resolve_precision", lambda *a: order.append("precision") or real(*a))
    monkeypatch.setattr(run_module, "load_tokens", _recording(run_module.load_tokens, order, "data"))
    monkeypatch.setattr(sizing, "choose_size", _recording(sizing.choose_size, order, "size"))
    cached_speed(1e9)
    cfg = TrainConfig(time_budget=0.5, precision="fp32", device="cpu", seq_len=16, batch_size=4)
    request = RunRequest(size_for_budget=True)
    train(read_corpus_bytes(tiny_corpus), ModelConfig(embed_size=8), cfg, tmp_path / "run", request)
    assert order == ["precision", "data", "size"]  # once each, in that order; the Trainer decides nothing again


def _recording(function, order, name):
    def recorded(*args, **kwargs):
        order.append(name)
        return function(*args, **kwargs)

    return recorded


@pytest.mark.parametrize("given", [None, 10])
def test_eval_every_not_given_stays_so_in_the_run_and_its_checkpoint(cli, tiny_corpus, given):
    """Not given, --eval-every is saved as such: a resumed timed run spaces its validations too;
    given, the run and its resumption keep it."""
    flags = [] if given is None else ["--eval-every", str(given)]
    result = cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "12", *flags, "--out", "run")
    assert result.exit_code == 0, result.stderr
    saved = RunCheckpoint(Path("run") / "last.safetensors").train_config()
    assert saved.eval_every == given and saved.validation_interval == (given or 200)
    resumed = RunCheckpoint(Path("run") / "last.safetensors").train_config({"time_budget": 60.0})
    assert Budget(resumed, 7, 1000, 1000).spaced is (given is None)
