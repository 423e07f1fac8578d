"""training/split.py: a step split by rows over worker threads gives the whole step's loss,
gradients and state, repeats bitwise, follows the optimiser's updates, and is only offered
where it is sound (no dropout, no fp16 scaling, one process on a CPU, rows enough); a split
run's validation, split the same way, scores as the whole model does."""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch

from charrnn import bench as bench_mod
from charrnn.config import ModelConfig, TrainConfig
from charrnn.evaluation import evaluate_ids
from charrnn.model import RNNLanguageModel, state_tensors
from charrnn.probes.cache import ProbeCache
from charrnn.probes.threads import Split, ThreadTuner
from charrnn.runtime import Placement, autocast_for
from charrnn.training import split as split_mod
from charrnn.training.loop import Trainer
from charrnn.training.meters import SlowRunWatch, StepPace
from charrnn.training.split import SplitForward, SplitStep, StepLayout, forward_backward, split_workers

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def _model(cell: str, tie: bool = False) -> RNNLanguageModel:
    torch.manual_seed(0)
    return RNNLanguageModel(cell, 30, 16 if tie else 8, 16, 2, dropout=0.0, tie_weights=tie)


def _window(batch: int = 6, steps: int = 7):
    torch.manual_seed(1)
    ids = torch.randint(0, 30, (batch, steps + 1))
    return ids[:, :-1], ids[:, 1:]


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("cell, tie, workers", [("lstm", False, 2), ("gru", False, 3), ("lstm", True, 2)])
def test_a_split_step_gives_the_whole_steps_loss_gradients_and_state(cell, tie, workers):
    model = _model(cell, tie)
    x, y = _window()
    state = model.init_state(6, CPU)
    model.zero_grad()
    loss, whole_state = forward_backward(model, x, y, state, contextlib.nullcontext)
    whole = _grads(model)
    step = SplitStep(model, workers)
    try:
        model.zero_grad(set_to_none=True)
        split_loss, split_state = step(x, y, state, contextlib.nullcontext)
    finally:
        step.close()
    assert float(split_loss) == pytest.approx(float(loss), rel=1e-6)
    for a, b in zip(whole, _grads(model)):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    for a, b in zip(state_tensors(whole_state), state_tensors(split_state)):
        torch.testing.assert_close(b, a)  # each row's state is its own: the same, exactly or nearly


def test_a_split_step_repeats_bitwise_and_sees_the_optimisers_update():
    model = _model("lstm")
    x, y = _window()
    state = model.init_state(6, CPU)
    step = SplitStep(model, 2)
    try:
        runs = []
        for _ in range(2):
            model.zero_grad(set_to_none=True)
            step(x, y, state, contextlib.nullcontext)
            runs.append(_grads(model))
        assert all(torch.equal(a, b) for a, b in zip(*runs))  # the gradients summed in a fixed order
        with torch.no_grad():  # an optimiser updates the model's weights in place...
            for p in model.parameters():
                p.sub_(0.1 * p.grad)
        model.zero_grad()
        loss, _ = forward_backward(model, x, y, state, contextlib.nullcontext)
        model.zero_grad(set_to_none=True)
        split_loss, _ = step(x, y, state, contextlib.nullcontext)
        assert float(split_loss) == pytest.approx(float(loss), rel=1e-6)  # ...and every worker's copy sees it
    finally:
        step.close()


def test_the_split_is_offered_only_where_it_is_sound(monkeypatch):
    monkeypatch.setattr(split_mod, "thread_counts", lambda: (1, 2))
    cfg = ModelConfig(vocab_size=30, hidden_size=16, num_layers=2, dropout=0.0)
    cpu = Placement(CPU, "fp32", "")
    assert split_workers(cfg, 32, cpu, processes=1) == 2
    assert split_workers(ModelConfig(vocab_size=30, dropout=0.2), 32, cpu, 1) == 0  # dropout: draws in no fixed order
    assert split_workers(cfg, 32, Placement(CPU, "fp16", ""), 1) == 0  # fp16's loss scaling
    assert split_workers(cfg, 32, cpu, processes=2) == 0  # torchrun's ranks split already
    assert split_workers(cfg, 3, cpu, 1) == 0  # fewer than two rows a worker
    assert split_workers(cfg, 32, Placement(torch.device("meta"), "fp32", ""), 1) == 0  # not a CPU
    monkeypatch.setattr(split_mod, "thread_counts", lambda: (1,))
    assert split_workers(cfg, 32, cpu, 1) == 0  # one core


def test_the_layout_sets_torchs_threads_or_the_split():
    layout = StepLayout(_model("lstm"), workers=2)
    try:
        layout(Split(2))
        split = layout.split
        assert split is not None and split.workers == 2 and torch.get_num_threads() == 1
        layout(2)
        assert layout.split is None and torch.get_num_threads() == 2
        layout(Split(2))
        assert layout.split is split  # kept across the probe's switches: no new copies, no new threads
    finally:
        layout.close()
    assert layout.split is None and layout.ready is None


def test_a_trainer_split_by_rows_trains_as_the_whole_step_does(tmp_path):
    data = bench_mod._synthetic_tokens(5000)
    model_cfg = ModelConfig(vocab_size=bench_mod.VOCAB, embed_size=8, hidden_size=16, num_layers=2, dropout=0.0)
    train_cfg = TrainConfig(seq_len=8, batch_size=8, precision="fp32", eval_every=200)
    losses = {}
    for name in ("whole", "split"):
        trainer = Trainer(data, model_cfg, train_cfg, tmp_path / name)
        if name == "split":
            trainer.layout.workers = 2
            trainer.layout(Split(2))
        try:
            losses[name] = [trainer.step() for _ in range(5)]
        finally:
            trainer.layout.close()
    assert losses["split"] == pytest.approx(losses["whole"], rel=1e-5)
    assert losses["split"][-1] < losses["split"][0]


def test_a_run_whose_probe_picks_the_split_steps_split_and_ends_with_its_threads_back(tmp_path):
    """The tuner sets the trainer's layout (StepPace wiring): the split is probed, chosen when its
    steps are fastest, and the run's end shuts its workers down and restores torch's count."""
    layout = StepLayout(_model("lstm"), workers=2)
    tuner = ThreadTuner(ProbeCache("threads", (), tmp_path / "t.json"), "k", counts=(1, 2), set_threads=layout, split=2)
    notes: list[str] = []
    pace = StepPace(SlowRunWatch(None, 1e9, notes.append), tuner, notes.append, layout=layout)
    used = []
    torch.set_num_threads(2)
    with pace.running():
        for _ in range(1 + 12):
            pace.before_step()
            used.append("split" if layout.split is not None else torch.get_num_threads())
            pace.observe({"split": 0.05, 1: 0.1, 2: 0.08}[used[-1]], tokens=100)
        assert layout.split is not None and tuner.current == Split(2)
    assert set(used) == {1, 2, "split"} and "2 workers of one thread" in notes[-1]
    assert layout.split is None and layout.ready is None and torch.get_num_threads() == 2


@pytest.mark.parametrize("cell, precision", [("lstm", "fp32"), ("gru", "fp32"), ("lstm", "bf16")])
def test_a_validation_split_by_rows_scores_as_the_whole_model(cell, precision):
    model = _model(cell)
    ids = torch.randint(0, 30, (1001,), generator=torch.Generator().manual_seed(2)).numpy()
    # 5 streams of 8-token windows over 1,001 ids: the leftover ids continue the last stream alone (one row).
    score = dict(context_token=3, seq_len=8, num_streams=5, device=CPU, precision=precision)
    whole = evaluate_ids(model, ids, **score)
    step = SplitStep(model, 2)
    model.train()
    try:
        seen = []
        split_model = SplitForward(step, lambda: _seeing(seen, precision))
        split = evaluate_ids(split_model, ids, **score)
    finally:
        step.close()
    assert split[1] == whole[1] == 1001
    assert split[0] == pytest.approx(whole[0], rel=1e-6)
    assert len(seen) > 0 and {"charrnn-split" in name for name in seen} == {True, False}  # both threads ran rows
    assert model.training and all(copy.training for copy in step.copies)  # the modes as they were


def _seeing(seen: list, precision: str):
    """The autocast a worker enters, noting which thread entered it."""
    seen.append(threading.current_thread().name)
    return autocast_for(CPU, precision)


def test_validation_runs_the_model_itself_unless_the_step_is_split():
    layout = StepLayout(_model("lstm"), workers=2)
    try:
        assert layout.for_validation(contextlib.nullcontext) is layout.model
        layout(Split(2))
        assert isinstance(layout.for_validation(contextlib.nullcontext), SplitForward)
    finally:
        layout.close()
