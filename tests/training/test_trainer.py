"""The Trainer's public surface: step, validate, state; its CUDA path."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_TEXT

from charrnn import bench as bench_mod
from charrnn.config import ModelConfig, TrainConfig
from charrnn.data.tokens import CorpusBytes, load_tokens
from charrnn.errors import TrainingDiverged
from charrnn.training.loop import Trainer


def _tiny_trainer(tmp_path, device: str = "cpu", eval_every: int = 200, steps: int | None = None) -> Trainer:
    data = bench_mod._synthetic_tokens(5000)
    model_cfg = ModelConfig(vocab_size=bench_mod.VOCAB, embed_size=8, hidden_size=16, num_layers=1)
    train_cfg = TrainConfig(
        seq_len=8, batch_size=4, device=device, precision="fp32", eval_every=eval_every, steps=steps
    )
    return Trainer(data, model_cfg, train_cfg, tmp_path / "run")


def test_steps_learn_and_count_and_carry_the_state(tmp_path):
    data = load_tokens(CorpusBytes("tiny", "tiny", TINY_TEXT.encode()))
    train_cfg = TrainConfig(seq_len=8, batch_size=4, precision="fp32", steps=40, warmup_steps=5)
    model_cfg = ModelConfig(vocab_size=data.tokenizer.vocab_size, embed_size=8, hidden_size=16, num_layers=1)
    trainer = Trainer(data, model_cfg, train_cfg, tmp_path / "run")
    before, _ = trainer.validate()
    losses = [trainer.step() for _ in range(40)]
    after, bpc = trainer.validate()
    assert trainer.state.step == 40 and trainer.state.train_loss_count == 40
    assert trainer.hidden_state is not None and not trainer.hidden_state[0].requires_grad
    assert after < before and math.isfinite(bpc)
    assert sum(losses[-5:]) < sum(losses[:5])


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_cuda_windows_are_pinned_and_the_first_loss_matches_cpu(tmp_path):
    first = {}
    for device in ("cpu", "cuda"):
        trainer = _tiny_trainer(tmp_path / device, device=device)
        assert trainer.batcher.pin_memory == (device == "cuda")
        x, y = trainer.batcher.window(0)
        assert x.is_pinned() == y.is_pinned() == (device == "cuda")
        first[device] = trainer.step()
        for _ in range(1, 5):
            trainer.step()
        assert math.isfinite(trainer.losses.shown if device == "cuda" else first[device])
    assert first["cuda"] == pytest.approx(first["cpu"], rel=1e-4)


@needs_cuda
def test_cuda_training_stops_on_a_nan_loss(tmp_path):
    trainer = _tiny_trainer(tmp_path, device="cuda", eval_every=4)
    with torch.no_grad():
        trainer.model.head.bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="at step 1:"):
        trainer.step()


@pytest.mark.parametrize("poison", ["weight", "optimiser moment", "hidden state", "train loss"])
def test_nothing_non_finite_is_ever_saved(tmp_path, poison):
    trainer = _tiny_trainer(tmp_path)
    trainer.run_dir.mkdir()
    for _ in range(2):
        trainer.step()
    saved = trainer.save("last").read_bytes()
    if poison == "weight":
        trainer.model.head.bias.data[0] = math.inf
    elif poison == "optimiser moment":
        next(iter(trainer.optimizer.state.values()))["exp_avg"][0] = math.nan
    elif poison == "hidden state":
        trainer.hidden_state[0][0, 0, 0] = math.nan  # h of the LSTM
    else:
        trainer.state.train_loss_sum = math.nan
    with pytest.raises(TrainingDiverged, match="became non-finite by step 2: not saved"):
        trainer.save("last")
    assert (trainer.run_dir / "last.safetensors").read_bytes() == saved
