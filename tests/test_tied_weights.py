"""`charrnn train --tie-weights`: one tensor for the embedding and the output layer (with a
projection where the widths differ), through save, load, resume, fine-tune and export."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_TEXT, one_error_line, train_tiny_run

from charrnn.checkpoint import BEST, LAST, RunCheckpoint, load_checkpoint, load_model, save_checkpoint
from charrnn.config import ModelConfig
from charrnn.footprint import parameter_count, parameter_shapes
from charrnn.model import RNNLanguageModel
from charrnn.stepper import FastStepper

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = [(8, 8), (6, 16)]  # embed == hidden: the embedding is the head; else a projection first


@pytest.mark.parametrize("embed,hidden", SIZES)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_tied_model_has_one_tensor_for_embedding_and_head_and_counts_it_once(cell, embed, hidden):
    model = RNNLanguageModel(cell, 11, embed, hidden, 2, 0.0, tie_weights=True)
    assert model.head.weight.data_ptr() == model.embedding.weight.data_ptr()
    assert (model.proj is not None) == (embed != hidden)
    params = sum(p.numel() for p in model.parameters())  # parameters() lists a shared one once
    assert parameter_count(cell, 11, embed, hidden, 2, tied=True) == params
    untied = parameter_count(cell, 11, embed, hidden, 2)
    assert untied - params == 11 * hidden - (0 if embed == hidden else embed * hidden)
    state = model.state_dict()
    assert "head.weight" not in state
    assert {k: tuple(v.shape) for k, v in state.items()} == dict(parameter_shapes(cell, 11, embed, hidden, 2, True))


@pytest.mark.parametrize("embed,hidden", SIZES)
def test_a_gradient_step_moves_embedding_and_head_together(embed, hidden):
    torch.manual_seed(0)
    model = RNNLanguageModel("lstm", 11, embed, hidden, 1, 0.0, tie_weights=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    logits, _ = model(torch.randint(0, 11, (2, 5)))
    logits.sum().backward()
    opt.step()
    assert torch.equal(model.head.weight, model.embedding.weight)


@pytest.mark.parametrize("embed,hidden", SIZES)
def test_fast_stepper_folds_the_tie_and_projection_and_matches_the_module(embed, hidden):
    torch.manual_seed(1)
    model = RNNLanguageModel("gru", 11, embed, hidden, 2, 0.0, tie_weights=True).eval()
    tokens = torch.randint(0, 11, (3, 12))
    with torch.no_grad():
        full, _ = model(tokens)
        stepper = FastStepper(model)
        state, steps = stepper.init_state(3), []
        for t in range(tokens.shape[1]):
            logits, state = stepper.step(tokens[:, t], state)
            steps.append(logits)
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-5)


@pytest.fixture(scope="module")
def tied_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("tied"), "--tie-weights", "--steps", "4", "--eval-every", "2")


def test_save_and_load_round_trip_keeps_the_tie(tied_run):
    tensors, meta = load_checkpoint(tied_run / BEST)
    assert meta["model"]["tie_weights"] is True
    assert "model.head.weight" not in tensors and "model.proj.weight" in tensors  # embed 16, hidden 32
    loaded = load_model(tied_run / BEST)
    model = loaded.model
    assert model.tie_weights and model.head.weight.data_ptr() == model.embedding.weight.data_ptr()
    assert torch.equal(model.embedding.weight, tensors["model.embedding.weight"])


def test_an_untied_checkpoint_of_before_the_option_loads_unchanged(tiny_run, tmp_path):
    tensors, meta = load_checkpoint(tiny_run / BEST)
    old = dict(meta, model={k: v for k, v in meta["model"].items() if k != "tie_weights"})
    save_checkpoint(tmp_path / "old.safetensors", tensors, old)
    assert ModelConfig.from_dict(old["model"]).tie_weights is False
    loaded = load_model(tmp_path / "old.safetensors")
    assert not loaded.model.tie_weights and torch.equal(loaded.model.head.weight, tensors["model.head.weight"])


def test_a_tied_checkpoint_whose_metadata_says_untied_is_refused(tied_run, tmp_path, cli):
    tensors, meta = load_checkpoint(tied_run / BEST)
    save_checkpoint(tmp_path / "bad.safetensors", tensors, dict(meta, model={**meta["model"], "tie_weights": False}))
    line = one_error_line(cli("sample", tmp_path / "bad.safetensors", "--length", "5"))
    assert "weights" in line


def test_resume_continues_a_tied_run(tied_run, cli, corpus, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tied_run, run)
    result = cli("train", corpus, "--out", run, "--resume", "--steps", "6")
    assert result.exit_code == 0, result.output
    checkpoint = RunCheckpoint(run / LAST)
    assert checkpoint.state().step == 6 and checkpoint.model_config().tie_weights


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


def test_fine_tune_of_a_tied_run_stays_tied_and_grows_its_vocabulary(tied_run, cli, corpus, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(TINY_TEXT + "Zebra #@!\n", encoding="utf-8")
    result = cli("train", other, "--init-from", tied_run, "--out", tmp_path / "ft", "--steps", "2", "--eval-every", "2")
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "ft" / BEST).model
    old = load_model(tied_run / BEST).model
    assert model.tie_weights and model.head.weight.data_ptr() == model.embedding.weight.data_ptr()
    assert model.vocab_size > old.vocab_size


def test_tie_weights_on_an_untied_run_is_a_one_line_error(tiny_run, cli, corpus, tmp_path):
    line = one_error_line(cli("train", corpus, "--init-from", tiny_run, "--tie-weights", "--out", tmp_path / "x"))
    assert "--tie-weights" in line and "fine-tune" in line
    import shutil

    shutil.copytree(tiny_run, tmp_path / "run")
    resumed = cli("train", corpus, "--out", tmp_path / "run", "--resume", "--tie-weights", "--steps", "9")
    line = one_error_line(resumed)
    assert "--tie-weights" in line and "--resume" in line


def test_a_tied_model_exports_to_onnx_and_matches_the_sampler(tied_run, cli, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'charrnn[export]'")
    out = tmp_path / "onnx"
    result = cli("export", tied_run, "--format", "onnx", "--out", out)
    assert result.exit_code == 0, result.output
    assert "0 different choices" in result.stderr
    from charrnn.export.runtime import OnnxSampler

    expected = cli("sample", tied_run, "--temp", "0", "--length", "100", "--prime", "All").stdout
    assert "".join(OnnxSampler(out).generate("All", length=100, temperature=0)) + "\n" == expected
    assert json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["kind"] == "char"


def test_info_says_the_model_is_tied_and_counts_its_weights_once(tied_run, cli):
    result = cli("info", tied_run, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["architecture"]["tied"] is True
    assert info["parameters"] == parameter_count("lstm", info["vocab_size"], 16, 32, 1, tied=True)
    assert "tied to the output layer" in cli("info", tied_run).stdout
