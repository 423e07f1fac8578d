"""charrnn gradients: gradient flow through time, measured by autograd."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from conftest import TINY_TEXT, one_error_line

from charrnn.checkpoint import LoadedModel
from charrnn.gradients import gradient_flow, layer_states, layer_step, state_gradient_norms, window_starts
from charrnn.model import RNNLanguageModel


def _loaded(model: RNNLanguageModel) -> LoadedModel:
    return LoadedModel(Path("model"), model, None, {})  # type: ignore[arg-type]  # no tokenizer needed


@pytest.mark.parametrize("rho", [0.5, 0.9, 1.05])
def test_linear_recurrence_decays_as_its_spectral_radius_to_the_k(rho):
    """h' = W h + U x with W = rho * orthogonal: d(v.h_t)/dh_(t-k) = (W^T)^k v, whose norm is rho^k |v|."""
    gen = torch.Generator().manual_seed(0)
    n, b, steps = 8, 3, 30
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    w, u = rho * q, torch.randn(n, 2, generator=gen, dtype=torch.float64)
    v = torch.randn(n, generator=gen, dtype=torch.float64)
    inputs = [torch.randn(b, 2, generator=gen, dtype=torch.float64) for _ in range(steps)]

    def step(x, h):
        h = h @ w.T + x @ u.T
        return h, h

    h0 = torch.zeros(b, n, dtype=torch.float64, requires_grad=True)
    norms = state_gradient_norms(step, h0, inputs, lambda out: (out @ v).sum())
    assert norms.shape == (steps, 1, b)
    expected = torch.tensor([rho**k for k in range(steps)], dtype=torch.float64) * v.norm()
    torch.testing.assert_close(norms[:, 0, :], expected[:, None].expand(steps, b), rtol=1e-9, atol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "rnn-relu"])
def test_layer_by_layer_stepping_is_the_models_own_computation(cell):
    torch.manual_seed(0)
    model = RNNLanguageModel(cell, 11, 6, 9, 2, 0.0).eval()
    tokens = torch.randint(0, 11, (3, 7))
    with torch.no_grad():
        logits, _ = model(tokens)
        step, state = layer_step(model), layer_states(model, 3)
        for t in range(7):
            top, state = step(tokens[:, t], state)
            torch.testing.assert_close(model.head(top), logits[:, t], rtol=1e-5, atol=1e-6)


def _small_tanh_rnn() -> RNNLanguageModel:
    model = RNNLanguageModel("rnn", 20, 8, 32, 1, 0.0)
    with torch.no_grad():
        for p in model.rnn.parameters():
            p.mul_(0.5)  # small recurrent weights: the Jacobian's norm well under 1
    return model


def _lstm_forget_bias_one() -> RNNLanguageModel:
    model = RNNLanguageModel("lstm", 20, 8, 32, 1, 0.0)
    with torch.no_grad():
        h = model.hidden_size
        model.rnn.bias_ih_l0[h : 2 * h] = 1.0  # gates are ordered i, f, g, o
        model.rnn.bias_hh_l0[h : 2 * h] = 0.0
    return model


def test_a_small_tanh_rnn_forgets_faster_than_an_lstm_with_forget_bias_one():
    torch.manual_seed(0)
    ids = torch.randint(0, 20, (400,))
    rnn, lstm = _small_tanh_rnn(), _lstm_forget_bias_one()
    flows = [gradient_flow(_loaded(m), ids, run=m.cell, text="t", max_k=30, windows=4, warmup=10) for m in (rnn, lstm)]
    r, g = flows[0].layers[0].relative, flows[1].layers[0].relative
    assert r[0] == g[0] == 1.0
    assert all(x is not None and x > 0 for x in g[1:])  # the LSTM's gradient is still there at k = 30
    for k in (5, 10, 20):
        assert (r[k] or 0.0) < 0.1 * g[k], (k, r[k], g[k])


def test_each_layer_has_its_curve_and_relative_is_norm_over_norm_at_zero():
    torch.manual_seed(1)
    model = RNNLanguageModel("gru", 15, 6, 12, 3, 0.0)
    flow = gradient_flow(_loaded(model), torch.randint(0, 15, (300,)), run="r", text="t", max_k=8, windows=5)
    assert [layer.layer for layer in flow.layers] == [0, 1, 2]
    assert flow.windows == 5 and flow.cell == "gru"
    for layer in flow.layers:
        assert layer.k == list(range(9))
        assert all(n > 0 for n in layer.grad_norm)
        assert layer.relative == pytest.approx([n / layer.grad_norm[0] for n in layer.grad_norm])


def test_windows_are_spread_over_the_text_and_the_warmup_shrinks_to_fit():
    starts, warmup = window_starts(1000, 10, 4, 100)
    assert warmup == 100 and starts[0] == 0 and starts[-1] == 1000 - (100 + 12) and len(starts) == 4
    assert window_starts(20, 10, 4, 100) == ([0], 8)
    assert window_starts(11, 10, 4, 100) == ([], 0)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gradients") / "held-out.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


def test_json_has_a_curve_per_run_and_layer(cli, tiny_run, held_out):
    result = cli("gradients", tiny_run, tiny_run / "last.safetensors", "--text", held_out, "--max-k", "5", "--json")
    assert result.exit_code == 0, result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert [r["cell"] for r in runs] == ["gru", "gru"]
    assert runs[0]["run"] == tiny_run.name
    layer = runs[0]["layers"][0]
    assert set(layer) == {"layer", "k", "grad_norm", "relative"} and layer["layer"] == 0
    assert layer["k"] == list(range(6)) and len(layer["grad_norm"]) == len(layer["relative"]) == 6
    assert layer["relative"][0] == 1.0
    assert layer["relative"][3] == pytest.approx(layer["grad_norm"][3] / layer["grad_norm"][0])
    assert not Path("gradients.png").exists()  # --json alone draws nothing


def test_the_cli_draws_a_png_from_the_runs_validation_split(cli, tiny_run, tmp_path):
    out = tmp_path / "g.png"
    corpus = tiny_run.parent / "tiny.txt"  # the run's corpus is not a ready corpus: named with --corpus
    result = cli("gradients", tiny_run, "--corpus", corpus, "--max-k", "4", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "validation split of" in result.stderr and "another sha256" not in result.stderr
    assert "k=1" in result.stdout  # the table of relative gradients
    other = tmp_path / "other.txt"
    other.write_text(TINY_TEXT[::-1], encoding="utf-8")  # the same characters, another text
    result = cli("gradients", tiny_run, "--corpus", other, "--max-k", "4", "--json")
    assert result.exit_code == 0, result.stderr
    assert "is not the text" in result.stderr and "another sha256" in result.stderr


def _newer_format(checkpoint: Path, dest: Path) -> Path:
    data = checkpoint.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"]["format_version"] = "99"
    raw = json.dumps(header).encode()
    dest.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + size :])
    return dest


def test_user_errors_are_one_line(cli, tiny_run, held_out, tmp_path):
    strange = tmp_path / "strange.txt"
    strange.write_text("Speak, speak: \u00e9\u00e9\u00e9 \u263a\n" * 20, encoding="utf-8")
    newer = _newer_format(tiny_run / "best.safetensors", tmp_path / "newer.safetensors")
    moved = tmp_path / "moved"
    shutil.copytree(tiny_run, moved)
    cases = [
        (("gradients", newer, "--text", held_out), "newer than this charrnn reads"),
        (("gradients", tiny_run, "--text", strange), "the model never saw"),
        (("gradients", tiny_run, "--text", held_out, "--max-k", "0"), "--max-k must be at least 1"),
        (("gradients", tiny_run, "--text", tmp_path / "missing.txt"), "not found"),
        (("gradients", tmp_path / "no-run", "--text", held_out), "not found"),
        (("gradients", moved), "cannot find the corpus it was trained on"),
        (("gradients", tiny_run, "--text", held_out, "--max-k", "100000"), "too few for --max-k 100000"),
        (("gradients",), "name at least one run"),
        (("gradients", tiny_run, "--compare", "tinyshakespeare"), "either RUN"),
    ]
    for args, message in cases:
        line = one_error_line(cli(*args))
        assert message in line, (args, line)


def test_compare_trains_the_four_cells_alike_and_draws_them(cli, tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    out = tmp_path / "compare.png"
    args = ["--compare", corpus, "--time-budget", "1s", "--hidden", "8", "--max-k", "3", "--windows", "2"]
    result = cli("gradients", *args, "--out-dir", tmp_path / "runs", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert [r["run"] for r in runs] == [r["cell"] for r in runs] == ["rnn", "rnn-relu", "gru", "lstm"]
    assert all(len(r["layers"]) == 1 and r["layers"][0]["k"] == [0, 1, 2, 3] for r in runs)
    for cell in ("rnn", "rnn-relu", "gru", "lstm"):
        assert (tmp_path / "runs" / cell / "best.safetensors").exists()
    assert out.read_bytes()[:4] == b"\x89PNG"
    again = cli("gradients", *args, "--out-dir", tmp_path / "runs", "--json")  # the runs are not overwritten
    assert "--force" in one_error_line(again)


def test_without_matplotlib_a_picture_is_refused_before_any_work_and_json_still_works(
    cli, tiny_run, held_out, monkeypatch
):
    monkeypatch.setattr("charrnn.plot.have_matplotlib", lambda: False)
    assert "charrnn[plot]" in one_error_line(cli("gradients", tiny_run, "--text", held_out, "--max-k", "3"))
    result = cli("gradients", tiny_run, "--text", held_out, "--max-k", "3", "--json")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["runs"]) == 1
