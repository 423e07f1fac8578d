"""Checkpoint files: round trip, metadata, resolving which file `sample` uses."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from conftest import TINY_TEXT, TINY_TRAIN

from charrnn.checkpoint import RunCheckpoint, load_checkpoint, load_model, resolve_checkpoint, save_checkpoint
from charrnn.config import ModelConfig, SampleConfig, TrainConfig
from charrnn.data.tokens import CorpusBytes
from charrnn.errors import CheckpointError
from charrnn.model import RNNLanguageModel
from charrnn.sample import generate
from charrnn.tensorfile import LAST
from charrnn.training.run import Limits, RunRequest, train

# Written by charrnn 0.1.0 (checkpoint format 1) before checkpoint.py took over the layout: a run of
# 3 steps of a 2-layer LSTM (embed 2, hidden 4, dropout 0.2) on TINY_TEXT with seq_len 8, batch 2,
# eval_every 2, seed 7, fp32 on a CPU. Kept as JSON (each file's metadata and tensor values, exact in
# float32), not as checkpoint files: the repository tracks no checkpoints. The fixture writes them
# back with safetensors. The tests compare with references computed here, on this CPU: figures
# that another CPU computed differ in the last bits (other kernels, other summation orders).
OLD_RUN = Path(__file__).parent / "fixtures" / "run-v1.json"


@pytest.fixture
def old_tensors() -> dict[str, dict[str, torch.Tensor]]:
    """Each old file's tensors by name, as the old code wrote them."""
    return {
        name: {
            key: torch.tensor(t["values"], dtype=getattr(torch, t["dtype"])).reshape(t["shape"])
            for key, t in saved["tensors"].items()
        }
        for name, saved in json.loads(OLD_RUN.read_text()).items()
    }


@pytest.fixture
def old_run(tmp_path, old_tensors) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    for name, saved in json.loads(OLD_RUN.read_text()).items():
        safetensors.torch.save_file(old_tensors[name], run / f"{name}.safetensors", metadata=saved["metadata"])
    return run


def test_a_checkpoint_written_before_the_layout_moved_still_samples(old_run, old_tensors):
    loaded = load_model(old_run / "best.safetensors")
    assert "".join(loaded.tokenizer.chars) == "\n ,.:?ABCFRSYacdefhiklmnoprstuvwyz"  # as the old file names them
    # The reference: a model built here from the old file's raw tensors (format 1 named them model.*).
    reference = RNNLanguageModel("lstm", vocab_size=34, embed_size=2, hidden_size=4, num_layers=2, dropout=0.2)
    reference.load_state_dict({k.removeprefix("model."): v for k, v in old_tensors["best"].items()})
    reference.eval()
    texts = [
        "".join(generate(model, loaded.tokenizer, SampleConfig(length=40), generator=torch.Generator().manual_seed(3)))
        for model in (loaded.model, reference)
    ]
    assert texts[0] == texts[1] and len(texts[0]) == 40


def test_a_run_written_before_the_layout_moved_resumes_where_it_stopped(old_run, tmp_path):
    corpus = CorpusBytes("tiny", "tiny", TINY_TEXT.encode())
    resumed = train(corpus, ModelConfig(), TrainConfig(), old_run, RunRequest(resume=True, limits=Limits(steps=5)))
    # The reference: the same run, uninterrupted, from step 0 on this CPU, with the old file's settings.
    saved = RunCheckpoint(old_run / LAST)
    straight = train(corpus, saved.model_config(), saved.train_config({"steps": 5}), tmp_path / "straight")
    assert resumed.steps == straight.steps == 5
    # Equal up to float32 rounding: the old 3 steps ran on another CPU, whose last bits differ.
    assert resumed.last_val_bpc == pytest.approx(straight.last_val_bpc, rel=1e-5)
    ends = [load_checkpoint(run / LAST)[0] for run in (old_run, tmp_path / "straight")]
    assert ends[0].keys() == ends[1].keys()
    for key in ends[1]:
        assert torch.allclose(ends[0][key].float(), ends[1][key].float(), rtol=1e-4, atol=1e-6), key


def test_trained_checkpoint_gives_identical_logits(cli, tiny_corpus):
    result = cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "5", "--model", "gru", "--out", "run")
    assert result.exit_code == 0, result.stderr
    loaded = load_model("run/best.safetensors")
    again = load_model("run/best.safetensors")
    tokens = torch.randint(0, loaded.tokenizer.vocab_size, (2, 7))
    with torch.no_grad():
        assert torch.equal(loaded.model(tokens)[0], again.model(tokens)[0])
    meta = loaded.meta
    assert meta["model"]["cell"] == "gru" and meta["corpus"] == "tiny" and meta["step"] == 5
    assert meta["tokenizer"]["kind"] == "char" and meta["val_bpc"] > 0


def test_tensors_and_metadata_round_trip(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64), "c": torch.randn(2).bfloat16()}
    save_checkpoint(tmp_path / "x.safetensors", tensors, {"step": 3, "nested": {"k": [1, 2]}})
    back, meta = load_checkpoint(tmp_path / "x.safetensors")
    assert meta == {"step": 3, "nested": {"k": [1, 2]}}
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary file left


def test_resolve_prefers_best_then_newest_run(tmp_path):
    root = tmp_path / "checkpoints"
    for name in ("old", "new"):
        (root / name).mkdir(parents=True)
        save_checkpoint(root / name / "best.safetensors", {"w": torch.zeros(1)}, {})
        save_checkpoint(root / name / "last.safetensors", {"w": torch.zeros(1)}, {})
    past = time.time() - 100
    for f in (root / "old").iterdir():
        os.utime(f, (past, past))
    assert resolve_checkpoint(None, root) == root / "new" / "best.safetensors"
    assert resolve_checkpoint(root / "old", root) == root / "old" / "best.safetensors"
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        resolve_checkpoint(None, tmp_path / "nothing")
