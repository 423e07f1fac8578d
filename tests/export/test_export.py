"""`charrnn export --format onnx`: the single-step graph against the sampler, tokenizer.json, bad inputs."""

from __future__ import annotations

import base64
import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TEXT, train_tiny_run

from charrnn.export import export_run
from charrnn.export.onnx import onnx_bytes, tokenizer_json_text
from charrnn.model import RNNLanguageModel
from charrnn.stepper import FastStepper
from charrnn.tokenizers.char import CharTokenizer

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'charrnn[export]'")

from charrnn.export.runtime import OnnxSampler  # noqa: E402


def trained_run(root: Path, cell: str = "lstm", tokenizer: str = "char", steps: int = 2) -> Path:
    vocab = ["--vocab-size", "320"] if tokenizer != "char" else []
    options = ["--model", cell, "--layers", "2", "--tokenizer", tokenizer, *vocab]
    return train_tiny_run(root, *options, "--steps", str(steps), "--eval-every", str(steps))


def louder(run: Path, factor: float = 3.0) -> Path:
    """The run's checkpoint with every weight scaled: a barely trained model writes one character
    greedily, a louder one varied text (its state moves far from 0), which makes greedy parity telling."""
    from charrnn.checkpoint import BEST, load_checkpoint, save_checkpoint

    tensors, meta = load_checkpoint(run / BEST)
    tensors = {k: v * factor if k.startswith("model.") else v for k, v in tensors.items()}
    save_checkpoint(run / BEST, tensors, meta)
    return run


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory) -> Path:
    return louder(trained_run(tmp_path_factory.mktemp("lstm"), steps=2))


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory) -> Path:
    return louder(trained_run(tmp_path_factory.mktemp("bpe"), cell="gru", tokenizer="bpe"))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "rnn-relu"])
def test_graph_logits_match_the_fast_sampler_over_500_steps(cell, tmp_path):
    torch.manual_seed(0)
    tokenizer = CharTokenizer.fit(TINY_TEXT)
    model = RNNLanguageModel(cell, tokenizer.vocab_size, embed_size=8, hidden_size=24, num_layers=2, dropout=0.0).eval()
    with torch.no_grad():  # larger weights than the initialisation: logits and states far from 0
        for name, p in model.named_parameters():
            # rnn-relu starts from an identity recurrence: doubled, its state would grow without bound
            p.mul_(0.9 if cell == "rnn-relu" and "weight_hh" in name else 2.0)
    (tmp_path / "model.onnx").write_bytes(onnx_bytes(model))
    (tmp_path / "tokenizer.json").write_text(tokenizer_json_text(tokenizer), encoding="utf-8")
    sampler = OnnxSampler(tmp_path)
    stepper = FastStepper(model)
    # Three streams at once (the batch axis is dynamic; export traced two), fed the tiny text.
    ids = tokenizer.encode(TINY_TEXT).astype(np.int64)
    streams = np.stack([ids[:500], ids[700:1200], ids[1500:2000]], axis=1)  # (500, 3)
    hidden, state = stepper.init_state(3), sampler.zero_state(3)
    worst, spread = 0.0, 0.0
    with torch.inference_mode():
        for tokens in streams:
            logits, hidden = stepper.step(torch.from_numpy(tokens), hidden)  # (3, V)
            onnx_logits, state = sampler.step(tokens, state)
            worst = max(worst, float(np.abs(onnx_logits - logits.numpy()).max()))
            spread = max(spread, float(logits.std()))
    ref_h = hidden[0] if cell == "lstm" else hidden
    assert np.abs(state[0] - ref_h.numpy()).max() < 1e-4
    assert spread > 0.1, "the logits barely vary: the comparison would prove little"
    assert worst < 1e-4, f"{cell}: largest logit difference {worst:.2e} over 500 steps"


def test_export_writes_the_graph_and_its_tokenizer(lstm_run, cli, tmp_path):
    out = tmp_path / "onnx"
    result = cli("export", lstm_run, "--format", "onnx", "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "tokenizer.json"]
    assert "0 different choices" in result.stderr
    spec = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    assert spec["kind"] == "char" and spec["chars"] == sorted(set(TINY_TEXT))
    import onnx

    graph = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in graph.graph.input] == ["tokens", "h", "c"]
    assert [o.name for o in graph.graph.output] == ["logits", "h_out", "c_out"]
    assert graph.graph.input[1].type.tensor_type.shape.dim[1].dim_param == "batch"
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["cell"] == "lstm" and meta["num_layers"] == "2" and meta["hidden_size"] == "32"
    with pytest.raises(ValueError, match="never saw"):
        OnnxSampler(out).tokenizer.encode("All\u20ac")


@pytest.mark.parametrize("prime", ["", "All:\nSp"])
def test_greedy_text_through_onnxruntime_equals_charrnn_sample(lstm_run, cli, tmp_path, prime):
    out = tmp_path / "onnx"
    assert cli("export", lstm_run, "--out", out).exit_code == 0
    # The bytes: click's .stdout turns "\r\n" into "\n", and a sample may end in "\r" before the CLI's newline.
    expected = cli("sample", lstm_run, "--temp", "0", "--length", "300", "--prime", prime).stdout_bytes.decode()
    text = "".join(OnnxSampler(out).generate(prime, length=300, temperature=0))
    assert len(set(text[len(prime) :])) > 3, "greedy text of one repeated character proves little"
    assert text + "\n" == expected


def test_sentencepiece_models_export_with_what_a_runtime_needs(bpe_run, cli, tmp_path):
    out = tmp_path / "onnx"
    assert cli("export", bpe_run, "--out", out).exit_code == 0
    spec = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    assert spec["kind"] == "bpe" and len(spec["pieces"]) == spec["vocab_size"] == len(spec["piece_bytes_hex"])
    assert spec["pieces"][spec["pieces"].index("<0x41>")] and bytes.fromhex(spec["piece_bytes_hex"][0]) == b""
    assert base64.b64decode(spec["sentencepiece_model"])[:1]
    # A prime with U+2581 and a character never seen (byte fallback) goes through the exported tokenizer.
    prime = "All:\n\u2581 Sp\u00e9"
    expected = cli("sample", bpe_run, "--temp", "0", "--length", "120", "--prime", prime).stdout_bytes.decode()
    assert "".join(OnnxSampler(out).generate(prime, length=120, temperature=0)) + "\n" == expected


def test_web_refuses_sentencepiece_models_in_one_line(bpe_run, cli, tmp_path):
    result = cli("export", bpe_run, "--format", "web", "--out", tmp_path / "web")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "--format onnx" in result.stderr and "SentencePiece" in result.stderr
    assert not (tmp_path / "web").exists()


def test_bad_inputs_are_one_line_errors(tiny_run, cli, tmp_path):
    missing = cli("export", tmp_path / "nowhere", "--out", tmp_path / "a")
    assert missing.exit_code == 1 and "checkpoint not found" in missing.stderr
    assert not (tmp_path / "a").exists()
    unknown = cli("export", tiny_run, "--format", "tflite", "--out", tmp_path / "b")
    assert unknown.exit_code == 2 and "tflite" in unknown.stderr and unknown.stderr.count("\n") == 1
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    busy = cli("export", tiny_run, "--out", full)
    assert busy.exit_code == 1 and "--force" in busy.stderr and busy.stderr.count("\n") == 1
    assert [p.name for p in full.iterdir()] == ["notes.txt"]
    assert cli("export", tiny_run, "--out", full, "--force").exit_code == 0
    assert (full / "notes.txt").read_text() == "mine" and (full / "model.onnx").exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    as_file = cli("export", tiny_run, "--out", a_file)
    assert as_file.exit_code == 1 and "is a file" in as_file.stderr and a_file.read_text() == "x"
    not_a_model = tmp_path / "junk.safetensors"
    not_a_model.write_bytes(b"\x00" * 64)
    junk = cli("export", not_a_model, "--out", tmp_path / "c")
    assert junk.exit_code == 1 and junk.stderr.startswith("error:") and junk.stderr.count("\n") == 1


def test_an_unknown_format_from_python_and_a_missing_extra_are_user_errors(tiny_run, tmp_path, monkeypatch):
    from charrnn.errors import CharRNNError

    with pytest.raises(CharRNNError, match="--format must be one of onnx, web"):
        export_run(tiny_run, "tflite", tmp_path / "x")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(CharRNNError, match=r"charrnn\[export\]"):
        export_run(tiny_run, "onnx", tmp_path / "y")


def _diverging_graph(monkeypatch):
    """Export a graph whose head weights were nudged: what a wrong exporter would write."""
    import charrnn.export.onnx as onnx_module

    original = onnx_module.onnx_bytes

    def nudged(model, meta=None):
        model = copy.deepcopy(model)
        with torch.no_grad():
            model.head.weight.add_(torch.randn(model.head.weight.shape, generator=torch.Generator().manual_seed(0)))
        return original(model, meta)

    monkeypatch.setattr(onnx_module, "onnx_bytes", nudged)


def test_a_graph_that_differs_from_the_sampler_fails_and_writes_nothing(lstm_run, cli, tmp_path, monkeypatch):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "model.onnx").write_bytes(b"an earlier export")
    _diverging_graph(monkeypatch)
    failed = cli("export", lstm_run, "--out", out, "--force")
    assert failed.exit_code == 1 and failed.stderr.count("\n") == 1, failed.output
    assert "does not match charrnn's sampler" in failed.stderr and "--no-check" in failed.stderr
    assert "tolerance" in failed.stderr and "different choices" in failed.stderr
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.onnx").read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging folder left behind
    unchecked = cli("export", lstm_run, "--out", out, "--force", "--no-check")
    assert unchecked.exit_code == 0, unchecked.output
    assert "not checked against charrnn's sampler (--no-check)" in unchecked.stderr
    assert (out / "model.onnx").read_bytes() != b"an earlier export" and (out / "notes.txt").read_text() == "mine"


def test_the_check_passes_a_faithful_graph_within_its_stated_tolerance(lstm_run, cli, tmp_path):
    result = cli("export", lstm_run, "--out", tmp_path / "ok")
    assert result.exit_code == 0, result.output
    line = [row for row in result.stderr.splitlines() if row.startswith("checked:")][0]
    assert "0 different choices" in line and "tolerance" in line


def test_parity_fails_on_logits_beyond_the_tolerance_or_a_clear_different_choice():
    from charrnn.export.parity import SamplerParity

    assert SamplerParity(200, 1e-6, 1e-3, 0).ok
    assert not SamplerParity(200, 2e-3, 1e-3, 0).ok
    assert not SamplerParity(200, 1e-6, 1e-3, 1).ok


def test_the_runtime_module_is_a_sampler_of_its_own(lstm_run, cli, tmp_path):
    import subprocess

    out = tmp_path / "onnx"
    assert cli("export", lstm_run, "--out", out).exit_code == 0
    expected = cli("sample", lstm_run, "--temp", "0", "--length", "80", "--prime", "All").stdout
    command = [sys.executable, "-m", "charrnn.export.runtime", str(out), "--temp", "0", "--length", "80"]
    done = subprocess.run([*command, "--prime", "All"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected
    (out / "model.onnx").write_bytes(b"not a graph")
    broken = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1 and broken.stderr.startswith("error:") and broken.stderr.count("\n") == 1
    missing = subprocess.run([*command[:3], str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "not an exported folder: no tokenizer.json" in missing.stderr
