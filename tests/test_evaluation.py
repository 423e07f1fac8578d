"""charrnn eval: held-out text scored as training validated it, tables, totals, user errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import metrics_of, one_error_line, train_tiny_run

metrics = metrics_of


@pytest.fixture
def run(sampled_run: Path) -> Path:
    return sampled_run


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
    line = one_error_line(result, alone=True)
    assert "never saw" in line and '"\u00e9" (U+00E9)' in line and result.stdout == ""


def test_eval_val_matches_training_validation_bpe(tmp_path, cli):
    run = train_tiny_run(tmp_path, "--tokenizer", "bpe", "--vocab-size", "320")
    result = cli("eval", run / "last.safetensors", tmp_path / "tiny.txt", "--val", "--json")
    assert result.exit_code == 0, result.stderr
    score = json.loads(result.stdout)["total"]
    assert score["bits_per_char"] == pytest.approx(metrics(run)[-1]["val_bpc"], rel=1e-9)
    assert score["tokens"] < score["chars"]  # subword: fewer tokens than characters
    info = json.loads(cli("info", run, "--json").stdout)
    assert info["tokenizer"] == "bpe" and info["vocab_size"] == 320
