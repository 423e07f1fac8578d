"""minGRU/minLSTM of the scan-cell trial: the parallel scan and the one-step path agree, state
carries across windows, the log-space scan stays finite on long windows, and a row trains."""

from __future__ import annotations

import pytest
import torch

from charrnn.bench.scan_cell import SCAN_CELLS, ScanLanguageModel, sample_tokens, scan_row
from charrnn.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(cell: str, vocab: int = 13, hidden: int = 16, layers: int = 2) -> ScanLanguageModel:
    torch.manual_seed(0)
    return ScanLanguageModel(cell, vocab, hidden, layers).eval()


def _sample_by_windows(model: ScanLanguageModel, prime: torch.Tensor, length: int, seed: int) -> list[int]:
    """The same draw through the training path: the whole text so far through the scan, each time."""
    generator = torch.Generator().manual_seed(seed)
    tokens = prime.tolist()
    with torch.no_grad():
        for _ in range(length):
            logits, _ = model(torch.tensor([tokens]))  # (1, T, V)
            tokens.append(int(torch.multinomial(torch.softmax(logits[0, -1], -1), 1, generator=generator)))
    return tokens[len(prime) :]


@pytest.mark.parametrize("cell", SCAN_CELLS)
def test_the_one_step_path_draws_the_same_tokens_as_the_scan(cell):
    model = _model(cell)
    prime = torch.tensor([1, 5, 2, 7])
    stepped = sample_tokens(model, prime, 40, seed=3)
    assert stepped == _sample_by_windows(model, prime, 40, seed=3)
    assert len(set(stepped)) > 3  # a real draw, not one token repeated


@pytest.mark.parametrize("cell", SCAN_CELLS)
def test_state_carried_across_windows_equals_one_long_window(cell):
    model = _model(cell)
    x = torch.randint(0, 13, (3, 30), generator=torch.Generator().manual_seed(1))
    whole, state = model(x)
    first, carried = model(x[:, :12])
    second, carried = model(x[:, 12:], carried)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(carried, state, atol=1e-5, rtol=1e-4)
    fresh, _ = model(x[:, 12:])  # without the carried state the second window differs
    assert not torch.allclose(fresh, second, atol=1e-3)


@pytest.mark.parametrize("cell", SCAN_CELLS)
def test_the_log_space_scan_is_finite_on_a_long_window_with_extreme_gates(cell):
    model = _model(cell, hidden=8, layers=1).train()
    x = torch.randint(0, 13, (2, 2000), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model.layers[0].gates.weight.mul_(20.0)  # saturated gates: products of a_t underflow in linear space
    logits, state = model(x)
    logits.sum().backward()
    assert torch.isfinite(logits).all() and torch.isfinite(state).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with torch.no_grad():  # and it agrees with the plain recurrence after 2000 steps
        h = model.init_state(2)
        for t in range(2000):
            _, h = model.step(x[:, t], h)
    torch.testing.assert_close(h, state, atol=1e-4, rtol=1e-4)


def test_a_scan_row_trains_and_validates_like_charrnn(tiny_corpus):
    cfg = TrainConfig(time_budget=0.5, device="cpu", seq_len=16, batch_size=4, warmup_steps=2)
    row = scan_row("tiny", tiny_corpus, cfg, "mingru", 16, 2)
    assert (
        row.steps >= 1
        and row.label == "scan-cell trial"
        and (row.num_layers, row.hidden_size) == (2, 16)
        and row.parameters > 0
    )
    assert 0 < row.val_bpc < 8
