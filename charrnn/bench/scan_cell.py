"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"), tried against the LSTM at
equal wall time: `charrnn bench --only scan`.

Their gates read only the current input, never the previous state, so a window's recurrence
h_t = a_t * h_{t-1} + b_t is a linear scan: every gate of every position comes out of one
large matrix product, and the scan itself is elementwise. The scan runs in log space
(Heinsen 2023) for numerical safety: log h_t = A_t + logcumsumexp(log b - A)_t with
A_t = cumsum(log a)_t, every term a sum of logs, no product of many small numbers. The state
h_0 carried in from the previous window is added as exp(A_t) * h_0 (it may be any value).

They stay out of charrnn's models: measured, they did not beat the LSTM at equal wall time on
both corpora (README, "A parallel-scan cell"). This module keeps the trial reproducible.
Each layer is a pre-norm residual block, x + cell(LayerNorm(x)), as in the paper's models.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import TrainConfig
from ..data.streams import StreamBatcher
from ..data.tokens import load_tokens, read_corpus_bytes
from ..training.optimization import build_optimizer, lr_at, set_lr
from .quality import validation_bpc
from .results import BenchPlan, QualityRow

SCAN_CELLS = ("mingru", "minlstm")
SCAN_CHUNK = 64  # positions per log-space scan (charrnn's default --seq-len: one chunk per window)


def _log_g(x: torch.Tensor) -> torch.Tensor:
    """log of g(x) = x + 0.5 for x >= 0, sigmoid(x) below: positive, continuous, log-safe."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def _g(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


class ScanLayer(nn.Module):
    """One minGRU or minLSTM layer of width `size`: x (B, T, size) -> h (B, T, size)."""

    def __init__(self, cell: str, size: int):
        super().__init__()
        self.cell = cell
        self.gates = nn.Linear(size, (2 if cell == "mingru" else 3) * size)

    def _log_coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log a, log of the input share, candidate pre-activation) for h = a*h_prev + (1-a)*g(cand)."""
        if self.cell == "mingru":
            k, cand = self.gates(x).chunk(2, dim=-1)
            return -F.softplus(k), -F.softplus(-k), cand  # log(1 - z), log z
        f, i, cand = self.gates(x).chunk(3, dim=-1)
        diff = F.softplus(-f) - F.softplus(-i)  # f' = f / (f + i), i' = i / (f + i)
        return -F.softplus(diff), -F.softplus(-diff), cand

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        """x (B, T, H), h0 (B, H) -> every step's state (B, T, H), by the log-space scan in
        chunks of SCAN_CHUNK positions: the error of a float32 log-space sum grows with |A_t|,
        so a long window (evaluation, sampling a prime) restarts the sum at each chunk."""
        log_a, log_in, cand = self._log_coefficients(x)
        log_b = log_in + _log_g(cand)
        states, h = [], h0
        for start in range(0, x.shape[1], SCAN_CHUNK):
            a_star = torch.cumsum(log_a[:, start : start + SCAN_CHUNK], dim=1)  # log of the product of a up to t
            chunk = log_b[:, start : start + SCAN_CHUNK] - a_star
            hs = torch.exp(a_star + torch.logcumsumexp(chunk, dim=1)) + torch.exp(a_star) * h.unsqueeze(1)
            states.append(hs)
            h = hs[:, -1]
        return torch.cat(states, dim=1)

    def step(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One position: x (B, H), h (B, H) -> the next h (B, H), by the plain recurrence."""
        log_a, log_in, cand = self._log_coefficients(x)
        return torch.exp(log_a) * h + torch.exp(log_in) * _g(cand)


class ScanLanguageModel(nn.Module):
    """embedding -> layers of x + cell(LayerNorm(x)) -> LayerNorm -> linear over the vocabulary.

    State: (num_layers, B, H), carried across windows like the LSTM's (see `init_state`)."""

    def __init__(self, cell: str, vocab_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.cell, self.hidden_size, self.num_layers = cell, hidden_size, num_layers
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(num_layers))
        self.layers = nn.ModuleList(ScanLayer(cell, hidden_size) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, vocab_size)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device or self.head.weight.device)

    def forward(self, tokens: torch.Tensor, hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T) -> logits (B, T, V), state (L, B, H) after the last position."""
        hidden = self.init_state(tokens.shape[0], tokens.device) if hidden is None else hidden
        x = self.embedding(tokens)  # (B, T, H)
        last = []
        for layer, norm, h0 in zip(self.layers, self.norms, hidden):
            h = layer(norm(x), h0)
            last.append(h[:, -1])
            x = x + h
        return self.head(self.final_norm(x)), torch.stack(last)

    @torch.no_grad()
    def step(self, token: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """token (B,) -> logits (B, V), state (L, B, H): the sampling path, one position at a time."""
        x = self.embedding(token)  # (B, H)
        states = []
        for layer, norm, h in zip(self.layers, self.norms, hidden):
            h = cast(ScanLayer, layer).step(norm(x), h)  # nn.ModuleList yields them as plain Modules
            states.append(h)
            x = x + h
        return self.head(self.final_norm(x)), torch.stack(states)


def sample_tokens(model: ScanLanguageModel, prime: torch.Tensor, length: int, seed: int) -> list[int]:
    """`length` tokens after `prime` (T,) by the one-step path, temperature 1, seeded."""
    generator = torch.Generator().manual_seed(seed)
    hidden = model.init_state(1)
    for token in prime[:-1].tolist():
        _, hidden = model.step(torch.tensor([token]), hidden)
    token, out = int(prime[-1]), []
    for _ in range(length):
        logits, hidden = model.step(torch.tensor([token]), hidden)
        token = int(torch.multinomial(torch.softmax(logits[0], -1), 1, generator=generator))
        out.append(token)
    return out


def scan_row(corpus: str, path: Path, cfg: TrainConfig, cell: str, hidden: int, layers: int) -> QualityRow:
    """Train a scan model like charrnn trains (AdamW, warm-up, cosine over the run, clip, state
    carried) for cfg.time_budget seconds, or cfg.steps steps; validate as `train()` does."""
    device, budget = torch.device(cfg.device), cfg.time_budget or 0.0
    data = load_tokens(read_corpus_bytes(path, name=corpus), val_frac=cfg.val_frac, val_split=cfg.val_split)
    torch.manual_seed(cfg.seed)
    model = ScanLanguageModel(cell, data.tokenizer.vocab_size, hidden, layers).to(device)
    optimizer = build_optimizer(model, cfg)
    batcher = StreamBatcher(data.train, cfg.batch_size, cfg.seq_len, chunk_windows=cfg.chunk_windows, seed=cfg.seed)
    state, steps, began = None, 0, time.perf_counter()
    while (progress := _progress(cfg, steps, elapsed := time.perf_counter() - began)) < 1.0:
        x, y, fresh = batcher.window_at(steps)  # (B, T) each; fresh: the streams jumped
        state = None if fresh else state
        set_lr(optimizer, lr_at(cfg, steps, progress))
        x, y = x.to(device), y.to(device)
        logits, state = model(x, state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        state, steps = state.detach(), steps + 1
        if not math.isfinite(loss.item()):
            break
    return QualityRow(
        corpus=corpus,
        label="scan-cell trial",
        cell=cell,
        hidden_size=hidden,
        num_layers=layers,
        budget_seconds=budget,
        steps=steps,
        chars_per_sec=steps * cfg.batch_size * cfg.seq_len / max(elapsed, 1e-9),
        parameters=sum(p.numel() for p in model.parameters()),
        val_bpc=validation_bpc(model, data, cfg, device),
    )


def _progress(cfg: TrainConfig, steps: int, elapsed: float) -> float:
    return steps / cfg.steps if cfg.steps else elapsed / (cfg.time_budget or 1.0)


def scan_rows(plan: BenchPlan, progress: Callable[[str], None]) -> Callable[[str, Path, TrainConfig], list[QualityRow]]:
    """The rows `bench_quality_rows` adds per corpus and budget: each of plan.scan_models."""

    def rows(corpus: str, path: Path, cfg: TrainConfig) -> list[QualityRow]:
        out = []
        for cell, hidden, layers in plan.scan_models:
            progress(f"quality: {corpus}, {cfg.time_budget:g}s, {cell} {layers}x{hidden}")
            out.append(scan_row(corpus, path, cfg, cell, hidden, layers))
        return out

    return rows
