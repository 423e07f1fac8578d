"""charrnn info and plot, and what --sample-every leaves in a run."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
from conftest import TINY_TEXT, metrics_of, one_error_line

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


metrics = metrics_of


@pytest.fixture
def run(sampled_run: Path) -> Path:
    return sampled_run


def test_info_describes_the_checkpoint(cli, run):
    from charrnn.checkpoint import load_model

    result = cli("info", run / "last.safetensors", "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    model = load_model(run / "last.safetensors").model
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["architecture"] == {
        "cell": "lstm",
        "layers": 1,
        "hidden": 32,
        "embed": 16,
        "dropout": 0.2,
        "tied": False,
    }
    assert info["tokenizer"] == "char" and info["vocab_size"] == len(set(TINY_TEXT))
    assert info["corpus"] == "tiny" and info["step"] == 20 and info["resumable"] is True
    assert info["best_val_bpc"] == pytest.approx(min(r["val_bpc"] for r in metrics(run)))
    assert info["format_version"] == 1 and info["charrnn_version"]
    assert info["training_seconds"] > 0
    text = cli("info", run)
    assert text.exit_code == 0 and "parameters:" in text.stdout and f"{info['parameters']:,}" in text.stdout


def test_info_on_a_non_checkpoint_is_one_line_error(cli, tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x80\x04junk")
    assert "pickle" in one_error_line(cli("info", bad), alone=True)


def test_metrics_have_train_bpc(run):
    for row in metrics(run):
        # char tokenizer: one token per character, so bits/char = nats/token / ln 2
        assert row["train_bpc"] == pytest.approx(row["train_loss"] / math.log(2))


def test_sample_every_shows_and_saves_samples(run):
    saved = (run / "samples.txt").read_text(encoding="utf-8")
    assert saved.count("--- step ") == 2 and "--- step 10 " in saved and "--- step 20 " in saved
    shown = (run.parent / "train-stderr.txt").read_text(encoding="utf-8")
    assert "sample at step 10" in shown and "sample at step 20" in shown


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_writes_a_valid_png(cli, run, tmp_path):
    image = pytest.importorskip("matplotlib.image", reason="plotting needs matplotlib (pip install 'charrnn[plot]')")
    out = tmp_path / "curve.png"
    result = cli("plot", run, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert _png_size(out) == (1000, 400)
    pixels = image.imread(out)
    assert pixels.shape[:2] == (400, 1000) and pixels[..., :3].std() > 0.05  # not a blank canvas
    assert _png_size(run / "bpc.png") == (1000, 400)  # training wrote one at the end


def test_plot_without_metrics_is_one_line_error(cli, tmp_path):
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib (pip install 'charrnn[plot]')")
    assert "metrics.jsonl" in one_error_line(cli("plot", tmp_path), alone=True)


def test_info_on_a_run_says_it_resumes_from_its_last_file(cli, run):
    from charrnn.checkpoint import load_checkpoint

    last_step = load_checkpoint(run / "last.safetensors")[1]["step"]
    result = cli("info", run)  # describes best.safetensors, which is weights only
    assert result.exit_code == 0, result.stderr
    line = [row for row in result.stdout.splitlines() if row.startswith("resumable:")][0]
    assert line.endswith(
        f"yes: --resume continues from {run / 'last.safetensors'} at step {last_step} (this file is weights only)"
    )
    info = json.loads(cli("info", run / "best.safetensors", "--json").stdout)
    assert info["resumable"] is False and info["resumes_from"] == {
        "path": str(run / "last.safetensors"),
        "step": last_step,
    }
