"""The network: shapes per cell type, TBPTT state handling."""

from __future__ import annotations

import pytest
import torch

from charrnn.model import RNNLanguageModel, detach_state

pytestmark = pytest.mark.usefixtures("one_thread")

CELLS = ["lstm", "gru", "rnn", "rnn-relu"]


@pytest.mark.parametrize("cell", CELLS)
def test_forward_shapes(cell):
    model = RNNLanguageModel(cell, vocab_size=11, embed_size=5, hidden_size=7, num_layers=3, dropout=0.0)
    logits, hidden = model(torch.randint(0, 11, (4, 9)))
    assert logits.shape == (4, 9, 11)
    parts = hidden if isinstance(hidden, tuple) else (hidden,)
    assert len(parts) == (2 if cell == "lstm" else 1)
    assert all(h.shape == (3, 4, 7) for h in parts)


def test_rnn_relu_starts_from_identity_recurrence():
    model = RNNLanguageModel("rnn-relu", vocab_size=5, embed_size=3, hidden_size=6, num_layers=2, dropout=0.0)
    for layer in range(2):
        assert torch.equal(getattr(model.rnn, f"weight_hh_l{layer}"), torch.eye(6))
        assert torch.count_nonzero(getattr(model.rnn, f"bias_hh_l{layer}")) == 0
    assert model.rnn.nonlinearity == "relu"


@pytest.mark.parametrize("cell", CELLS)
def test_carried_state_equals_one_long_window(cell):
    """Two consecutive windows with the state carried compute what one window of both does."""
    torch.manual_seed(0)
    model = RNNLanguageModel(cell, vocab_size=13, embed_size=4, hidden_size=8, num_layers=2, dropout=0.0).eval()
    tokens = torch.randint(0, 13, (3, 10))
    whole, _ = model(tokens)
    first, hidden = model(tokens[:, :6])
    second, _ = model(tokens[:, 6:], detach_state(hidden))
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)


def test_detach_cuts_the_graph_but_keeps_values():
    model = RNNLanguageModel("lstm", vocab_size=5, embed_size=3, hidden_size=4, num_layers=1, dropout=0.0)
    _, hidden = model(torch.randint(0, 5, (2, 3)))
    assert all(h.requires_grad for h in hidden)
    cut = detach_state(hidden)
    assert not any(h.requires_grad for h in cut)
    assert all(torch.equal(a, b) for a, b in zip(cut, hidden))
