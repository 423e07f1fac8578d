"""charrnn eval, info, plot, --sample-every and --tensorboard on tiny runs."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
from conftest import TINY_TEXT, TINY_TRAIN
from typer.testing import CliRunner

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def subword_available() -> bool:
    try:
        import charrnn.subword  # noqa: F401
    except ImportError:
        return False
    return True


def _train(root: Path, tokenizer: str = "char", extra: tuple[str, ...] = ()) -> Path:
    """A tiny run in root/run (20 steps, evaluated at 10 and 20, a sample at each evaluation)."""
    from charrnn.cli import app

    corpus = root / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    args = ["train", str(corpus), *TINY_TRAIN, "--steps", "20", "--eval-every", "10", "--sample-every", "1"]
    args += ["--tokenizer", tokenizer, "--out", str(root / "run"), *extra]
    if tokenizer != "char":
        args += ["--vocab-size", "320"]
    result = CliRunner().invoke(app, args, env={"CHARRNN_CACHE": str(root / "cache")})
    assert result.exit_code == 0, result.output
    (root / "train-stderr.txt").write_text(result.stderr, encoding="utf-8")
    return root / "run"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("inspect"))


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", ["last", "best"])
def test_eval_val_matches_training_validation(cli, run, name):
    result = cli("eval", run / f"{name}.safetensors", run.parent / "tiny.txt", "--val", "--json")
    assert result.exit_code == 0, result.stderr
    score = json.loads(result.stdout)["total"]
    rows = metrics(run)
    expected = rows[-1]["val_bpc"] if name == "last" else min(r["val_bpc"] for r in rows)
    assert score["bits_per_char"] == pytest.approx(expected, rel=1e-9, abs=1e-9)
    if name == "last":
        assert score["bits_per_token"] == pytest.approx(rows[-1]["val_loss"] / math.log(2), rel=1e-9)


def test_eval_files_table_and_totals(cli, run, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("First Citizen:\nSpeak, speak.\n", encoding="utf-8")
    b.write_text("All:\r\nResolved. resolved.\r\n", encoding="utf-8")  # CRLF: normalised like training
    result = cli("eval", run, a, b, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    files, total = out["files"], out["total"]
    assert [f["chars"] for f in files] == [len(a.read_text()), len("All:\nResolved. resolved.\n")]
    assert total["chars"] == sum(f["chars"] for f in files) and total["tokens"] == sum(f["tokens"] for f in files)
    assert total["nats"] == pytest.approx(sum(f["nats"] for f in files))
    assert 0 < total["bits_per_char"] < 8
    table = cli("eval", run, a, b)
    assert table.exit_code == 0 and "bits/char" in table.stdout and "total" in table.stdout


def test_eval_unknown_characters_is_one_line_error(cli, run, tmp_path):
    odd = tmp_path / "odd.txt"
    odd.write_text("Speak \u00e9\u00e9 speak\n", encoding="utf-8")
    result = cli("eval", run, odd)
    assert result.exit_code != 0
    assert result.stderr.startswith("error:") and "never saw" in result.stderr and "\\u00e9" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_info_describes_the_checkpoint(cli, run):
    from charrnn.checkpoint import load_model

    result = cli("info", run / "last.safetensors", "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    model = load_model(run / "last.safetensors").model
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["architecture"] == {"cell": "lstm", "layers": 1, "hidden": 32, "embed": 16, "dropout": 0.2}
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
    result = cli("info", bad)
    assert result.exit_code != 0 and "pickle" in result.stderr and len(result.stderr.strip().splitlines()) == 1


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
    result = cli("plot", tmp_path)
    assert result.exit_code != 0 and "metrics.jsonl" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


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


@pytest.mark.skipif(not subword_available(), reason="charrnn.subword (bpe/unigram) is not in this checkout")
def test_eval_val_matches_training_validation_bpe(tmp_path, cli):
    run = _train(tmp_path, tokenizer="bpe")
    result = cli("eval", run / "last.safetensors", tmp_path / "tiny.txt", "--val", "--json")
    assert result.exit_code == 0, result.stderr
    score = json.loads(result.stdout)["total"]
    assert score["bits_per_char"] == pytest.approx(metrics(run)[-1]["val_bpc"], rel=1e-9)
    assert score["tokens"] < score["chars"]  # subword: fewer tokens than characters
    info = json.loads(cli("info", run, "--json").stdout)
    assert info["tokenizer"] == "bpe" and info["vocab_size"] == 320
