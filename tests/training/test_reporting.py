"""What a run reports besides its own files: TensorBoard events."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import TINY_TRAIN


def test_tensorboard_events_hold_the_runs_scalars(cli, tiny_corpus, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'charrnn[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = tmp_path / "tb"
    args = ["--steps", "4", "--eval-every", "2", "--out", "run", "--tensorboard", logs]
    result = cli("train", tiny_corpus, *TINY_TRAIN, *args)
    assert result.exit_code == 0, result.stderr
    events = EventAccumulator(str(logs))
    events.Reload()  # tensorboard's own reader: the files are what TensorBoard will show
    val = events.Scalars("val/bpc")
    rows = [json.loads(line) for line in Path("run/metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in val] == [r["step"] for r in rows] == [2, 4]
    assert [e.value for e in val] == pytest.approx([r["val_bpc"] for r in rows], rel=1e-6)  # stored as float32
    assert [e.step for e in events.Scalars("train/loss_nats_per_token")] == [1, 2, 3, 4]


def test_tensorboard_missing_is_one_line_error(cli, tiny_corpus, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as where it is not installed
    result = cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "4", "--tensorboard", tmp_path / "tb")
    assert result.exit_code != 0 and result.stderr.strip().splitlines() == [
        "error: --tensorboard needs the tensorboard package: pip install 'charrnn[tensorboard]'"
    ]
    assert not (tmp_path / "tb").exists()


def test_metrics_are_strict_json_and_the_plot_reads_them(tmp_path):
    from charrnn.plot import read_metrics
    from charrnn.training.reporting import EvalReport, append_metrics

    figures = dict(step=2, epoch=0.5, train_loss=1.0, val_loss=2.0, val_bpc=2.9, val_nats_per_char=2.0)
    figures.update(best_val_bpc=2.9, is_best=True, elapsed=1.0, eval_seconds=0.1, chars_per_sec=10.0, lr=0.01)
    append_metrics(tmp_path, EvalReport(**figures), "char")
    figures.update(step=4, train_loss=math.nan, val_loss=math.inf, val_bpc=math.nan, chars_per_sec=math.inf)
    append_metrics(tmp_path, EvalReport(**figures), "char")

    def refuse(constant: str):
        raise AssertionError(f"bare {constant} in metrics.jsonl")

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line, parse_constant=refuse) for line in lines]
    assert rows[1]["val_bpc"] is None and rows[1]["train_loss"] is None and rows[1]["chars_per_sec"] is None
    assert rows[1]["train_bpc"] is None  # NaN by default: no step since the last evaluation
    assert [row["step"] for row in read_metrics(tmp_path)] == [2, 4]
