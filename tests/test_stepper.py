"""The sampler's single step: the same logits as the fused module on either backend, the
thread count it is given, one BLAS thread each for samples stepping at once."""

from __future__ import annotations

import pytest
import torch

from charrnn import stepper as stepper_mod
from charrnn.model import RNNLanguageModel
from charrnn.stepper import FastStepper

pytestmark = pytest.mark.usefixtures("one_thread")

CELLS = ["lstm", "gru", "rnn", "rnn-relu"]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_fast_stepper_matches_fused_module(cell, layers, backend):
    torch.manual_seed(1)
    model = RNNLanguageModel(cell, vocab_size=17, embed_size=6, hidden_size=12, num_layers=layers, dropout=0.0).eval()
    with torch.no_grad():  # non-trivial biases so every bias path is exercised
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tokens = torch.randint(0, 17, (5, 12))
    with torch.no_grad():
        reference, _ = model(tokens)
        stepper = FastStepper(model)
        stepper.backend = backend
        hidden = stepper.init_state(5)
        steps = []
        for t in range(tokens.shape[1]):
            logits, hidden = stepper.step(tokens[:, t], hidden)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, dim=1), reference, atol=1e-5, rtol=1e-5)


def test_a_step_runs_on_the_measured_thread_count_and_restores_torchs(monkeypatch):
    torch.set_num_threads(2)
    seen = []
    stepper = FastStepper(RNNLanguageModel("lstm", 23, 6, 20, 2, dropout=0.0).eval())
    inner = stepper.compute
    monkeypatch.setattr(stepper, "compute", lambda t, h: seen.append(torch.get_num_threads()) or inner(t, h))
    for threads in (None, 1, 2, 3):
        stepper.threads = threads
        stepper.step(torch.zeros(2, dtype=torch.long), stepper.init_state(2))
    assert seen == [2, 1, 2, 3] and torch.get_num_threads() == 2


def test_a_numpy_step_runs_on_the_measured_blas_thread_count(monkeypatch):
    seen = []
    monkeypatch.setattr(stepper_mod, "set_blas_threads", seen.append)
    stepper = FastStepper(RNNLanguageModel("gru", 23, 6, 20, 2, dropout=0.0).eval())
    stepper.backend, stepper.threads = "numpy", 1
    logits, state = stepper.step(torch.zeros(2, dtype=torch.long), stepper.init_state(2))
    assert seen == [1] and logits.shape == (2, 23) and state.shape == (2, 2, 20)


def test_a_numpy_step_beside_another_takes_one_blas_thread_for_a_while(monkeypatch):
    seen = []
    monkeypatch.setattr(stepper_mod, "set_blas_threads", seen.append)
    monkeypatch.setattr(stepper_mod, "_steps_now", stepper_mod._Running(hold_seconds=60.0))
    stepper = FastStepper(RNNLanguageModel("lstm", 23, 6, 20, 2, dropout=0.0).eval())
    stepper.backend, stepper.threads = "numpy", 2
    step = lambda: stepper.step(torch.zeros(1, dtype=torch.long), stepper.init_state(1))  # noqa: E731
    step()
    with stepper_mod._steps_now.entered():  # another sample's step is running
        step()
    step()  # alone again, but within the hold: still one thread (no resizing at every step)
    stepper_mod._steps_now.hold_seconds = 0.0
    step()
    assert seen == [2, 1, 1, 2]
