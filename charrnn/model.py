"""The recurrent language model: embedding -> stacked LSTM/GRU/RNN -> linear over the vocabulary.

This file depends on nothing else in the package. Training runs the fused multi-layer torch
module over a whole window (no Python loop over time); sampling runs `stepper.FastStepper`,
which does the same math one step at a time through plain matrix products, because the fused
module called for a single step is an order of magnitude slower on CPU.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence, Union

import torch
import torch.nn as nn

# The recurrent state: (h, c) for an LSTM, h for a GRU or RNN. Each tensor is (num_layers, B, hidden_size).
HiddenState = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]


def state_tensors(state: HiddenState) -> tuple[torch.Tensor, ...]:
    """(h, c) or (h,): the state's tensors, whatever the cell."""
    return state if isinstance(state, tuple) else (state,)


def state_from_tensors(parts: Sequence[torch.Tensor], cell: str) -> HiddenState:
    """The inverse of `state_tensors` for a model of `cell`."""
    return (parts[0], parts[1]) if cell == "lstm" else parts[0]


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: HiddenState) -> HiddenState:
    """`fn` applied to each of the state's tensors; the result has the state's shape."""
    if isinstance(state, tuple):
        return tuple(fn(t) for t in state)  # type: ignore[return-value]
    return fn(state)


class RNNLanguageModel(nn.Module):
    """Many-to-many next-token model; a loss at every position of every window."""

    def __init__(
        self,
        cell: str,
        vocab_size: int,
        embed_size: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        tie_weights: bool = False,
    ):
        # No defaults here: config.ModelConfig holds them (this file imports no sibling);
        # tie_weights defaults to False only so that the benches' untied models need not say so.
        super().__init__()
        self.tie_weights = tie_weights
        self.cell = cell
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.embedding = nn.Embedding(vocab_size, embed_size)
        # nn.LSTM's own dropout sits between layers only; self.dropout adds it before the output.
        between = dropout if num_layers > 1 else 0.0
        if cell == "lstm":
            self.rnn: nn.RNNBase = nn.LSTM(embed_size, hidden_size, num_layers, batch_first=True, dropout=between)
        elif cell == "gru":
            self.rnn = nn.GRU(embed_size, hidden_size, num_layers, batch_first=True, dropout=between)
        elif cell in ("rnn", "rnn-relu"):
            nonlinearity = "relu" if cell == "rnn-relu" else "tanh"
            self.rnn = nn.RNN(
                embed_size, hidden_size, num_layers, nonlinearity=nonlinearity, batch_first=True, dropout=between
            )
        else:
            raise ValueError(f"unknown cell type {cell!r}")
        self.dropout = nn.Dropout(dropout)
        # Tied (Press & Wolf 2017, Inan et al. 2017): the output layer's weight IS the embedding
        # (one Parameter under two names). Where the widths differ a learned projection
        # hidden -> embed comes first. The state dict leaves the alias "head.weight" out (a
        # safetensors file holds each tensor once) and loading restores it from the embedding.
        self.proj: nn.Linear | None = None
        if tie_weights and embed_size != hidden_size:
            self.proj = nn.Linear(hidden_size, embed_size, bias=False)
        self.head = nn.Linear(embed_size if self.proj is not None else hidden_size, vocab_size)
        if tie_weights:
            self.head.weight = self.embedding.weight
            self.register_state_dict_post_hook(_drop_tied_alias)  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            self.register_load_state_dict_pre_hook(_restore_tied_alias)  # type: ignore[no-untyped-call]  # as above
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Embedding, LSTM and GRU keep torch's own initialisation: on tinyshakespeare a smaller
        # embedding scale or a forget-gate bias of 1 both learned measurably slower (README, Performance).
        if self.tie_weights:
            # Tied, the embedding is also the output layer: torch's N(0, 1) embedding would start
            # with logits of std ~sqrt(width); the output layer's own scale, 1/sqrt(width), instead.
            nn.init.normal_(self.embedding.weight, std=self.embedding.embedding_dim**-0.5)
        if self.cell == "rnn-relu":
            # Le, Jaitly & Hinton 2015 (IRNN): identity recurrence, zero bias, small input weights,
            # so a ReLU RNN starts by remembering its state instead of exploding or vanishing.
            for layer in range(self.num_layers):
                nn.init.eye_(getattr(self.rnn, f"weight_hh_l{layer}"))
                nn.init.normal_(getattr(self.rnn, f"weight_ih_l{layer}"), std=0.001)
                nn.init.zeros_(getattr(self.rnn, f"bias_hh_l{layer}"))
                nn.init.zeros_(getattr(self.rnn, f"bias_ih_l{layer}"))

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> HiddenState:
        """Zero state for `batch_size` streams."""
        device = device if device is not None else self.head.weight.device
        zeros = torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device)
        return (zeros, zeros.clone()) if self.cell == "lstm" else zeros

    def forward(self, tokens: torch.Tensor, state: HiddenState | None = None) -> tuple[torch.Tensor, HiddenState]:
        """tokens (B, T) int64 -> logits (B, T, V), new state."""
        if state is None:
            state = self.init_state(tokens.shape[0], tokens.device)
        x = self.embedding(tokens)  # (B, T, E)
        out, state = self.rnn(x, state)  # (B, T, H)
        return self.output(out), state

    def output(self, out: torch.Tensor) -> torch.Tensor:
        """The top layer's states (..., H) -> logits (..., V): dropout, the projection of a tied
        model whose widths differ, the output layer."""
        out = self.dropout(out)
        logits: torch.Tensor = self.head(self.proj(out) if self.proj is not None else out)
        return logits


def _drop_tied_alias(
    module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str, local_metadata: dict[str, Any]
) -> None:
    state_dict.pop(prefix + "head.weight", None)


def _restore_tied_alias(module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str, *args: object) -> None:
    if prefix + "embedding.weight" in state_dict:
        state_dict.setdefault(prefix + "head.weight", state_dict[prefix + "embedding.weight"])


def detach_state(state: HiddenState) -> HiddenState:
    """Cut the graph at a window boundary: the state's value carries over, its history does not,
    so backpropagation stops at seq_len steps (truncated BPTT) instead of reaching the start."""
    return map_state(torch.Tensor.detach, state)


def select_streams(state: HiddenState, keep: torch.Tensor) -> HiddenState:
    """The state of some streams only (keep: bool or index tensor over the batch dimension)."""
    return map_state(lambda t: t[:, keep], state)


def stream_count(state: HiddenState) -> int:
    return state_tensors(state)[0].shape[1]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """`model` in eval mode within the block (no dropout), back in the mode it was in after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
