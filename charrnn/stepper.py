"""The sampler's single step: the weights of an `RNNLanguageModel` arranged for one token at a
time, on torch or on numpy's BLAS, whichever is measured faster (`probes.threads.tune_stepper`).

The fused torch module called for a single step is an order of magnitude slower on CPU; this
does the same math through plain matrix products. It knows nothing of tokenizers, drawing or
files: `sample`, `beam`, `visualize` and the exporter drive it.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .model import HiddenState, RNNLanguageModel, state_tensors


class FastStepper:
    """One-token-at-a-time inference with the weights of an `RNNLanguageModel`.

    The same math as the fused module in eval mode, arranged for a single step:
    - the first layer's input projection is a lookup: embedding @ W_ih^T + biases is
      precomputed for every token (V, G*H), so step 1 needs no input matmul at all;
    - each later layer does one matmul over [x, h] with the input and recurrent weights
      stacked, instead of two;
    - weights are transposed and contiguous once, here, not at every step.
    - the LSTM's gate blocks are reordered (i, f, o, g): one sigmoid and one tanh per layer;
    Per step that is one small matmul per layer plus the head: memory-bandwidth bound.

    Where the step's arithmetic runs is measured too: `backend` "torch", or "numpy", the same
    math on numpy views of the same weights, its matmuls on numpy's BLAS (OpenBLAS in numpy's
    wheels). Torch's matrix-vector product is MKL's, which on some CPUs (AMD's) reads the weights
    at a third of OpenBLAS's speed, and numpy's element-wise ops on a few thousand floats cost a
    microsecond where torch's cost several. How many threads a step runs on (`threads`, for the
    backend's own pool) is measured as well: `probes.threads.tune_stepper` sets both for the number
    of streams the caller runs; without a measurement, torch on torch's count.
    """

    def __init__(self, model: RNNLanguageModel):
        self.cell = model.cell
        self.num_layers = model.num_layers
        self.hidden_size = model.hidden_size
        self.threads: int | None = None  # intra-op threads for a step (measured); None: the backend's count
        self.backend = "torch"  # or "numpy" (measured: `probes.threads.tune_stepper`)
        self.lstm_split = [3 * self.hidden_size, self.hidden_size]  # (i, f, o) through a sigmoid, g a tanh
        rnn: Any = model.rnn  # nn.LSTM/GRU/RNN: their weight_ih_l0... attributes are made at run time

        def weight(name: str) -> torch.Tensor:  # LSTM gates (i, f, g, o) -> (i, f, o, g): rows are gates
            w: torch.Tensor = getattr(rnn, name).float()
            if self.cell != "lstm":
                return w
            i, f, g, o = w.chunk(4, dim=0)
            return torch.cat([i, f, o, g], dim=0)

        with torch.no_grad():
            w_ih0 = weight("weight_ih_l0")
            b_ih0, b_hh0 = weight("bias_ih_l0"), weight("bias_hh_l0")
            table = model.embedding.weight.float() @ w_ih0.t() + b_ih0  # (V, G*H)
            if self.cell != "gru":  # GRU keeps b_hh apart: its n-gate multiplies it by r
                table = table + b_hh0
            self.input_table = table.contiguous()
            self.w_hh0 = weight("weight_hh_l0").t().contiguous()  # (H, G*H)
            self.b_hh0 = b_hh0.contiguous()
            # Later layers: [x, h] @ W (2H, G*H); GRU needs the h part separately for its n gate.
            self.w_cat: list[torch.Tensor] = []
            self.w_ih: list[torch.Tensor] = []
            self.w_hh: list[torch.Tensor] = []
            self.b_ih: list[torch.Tensor] = []
            self.b_hh: list[torch.Tensor] = []
            self.b_sum: list[torch.Tensor] = []
            for layer in range(1, self.num_layers):
                w_ih, w_hh = weight(f"weight_ih_l{layer}"), weight(f"weight_hh_l{layer}")
                b_ih, b_hh = weight(f"bias_ih_l{layer}"), weight(f"bias_hh_l{layer}")
                self.w_cat.append(torch.cat([w_ih, w_hh], dim=1).t().contiguous())
                self.w_ih.append(w_ih.t().contiguous())
                self.w_hh.append(w_hh.t().contiguous())
                self.b_ih.append(b_ih)
                self.b_hh.append(b_hh)
                self.b_sum.append(b_ih + b_hh)
            w_out = model.head.weight.float()  # (V, H), or (V, E) after a projection (E, H)
            if model.proj is not None:  # folded in: logits = h @ (W_out @ P)^T
                w_out = w_out @ model.proj.weight.float()
            self.w_head = w_out.t().contiguous()  # (H, V)
            self.b_head = model.head.bias.float().contiguous()
        self.relu = self.cell == "rnn-relu"

    def init_state(self, batch_size: int) -> HiddenState:
        zeros = torch.zeros(self.num_layers, batch_size, self.hidden_size)
        return (zeros, zeros.clone()) if self.cell == "lstm" else zeros

    def step(self, tokens: torch.Tensor, state: HiddenState) -> tuple[torch.Tensor, HiddenState]:
        """tokens (B,) int64 -> logits (B, V), new state (fresh tensors), on `threads` threads."""
        if self.backend == "numpy":
            with _steps_now.entered() as alone:
                # Several samples stepping at once (charrnn serve's workers) would share one
                # pool of BLAS threads: each takes one thread of its own instead (and keeps it a
                # while: resizing the pool at every step made four samples crawl, a fifth of
                # their pace on one thread each, measured on a 2x512 LSTM).
                set_blas_threads(self.threads if alone else 1)
                return self.compute_numpy(tokens, state)
        threads, wanted = torch.get_num_threads(), self.threads
        if wanted is None or wanted == threads:
            return self.compute(tokens, state)
        torch.set_num_threads(wanted)  # costs well under a microsecond each way
        try:
            return self.compute(tokens, state)
        finally:
            torch.set_num_threads(threads)

    def weights_device(self) -> torch.device:
        return self.w_hh0.device

    def compute(self, tokens: torch.Tensor, state: HiddenState) -> tuple[torch.Tensor, HiddenState]:
        """`step` on the threads torch has now."""
        if self.cell == "lstm":
            h_layers, c_layers = (t.unbind(0) for t in state)  # per layer: (B, H)
            hs: list[torch.Tensor] = []
            cs: list[torch.Tensor] = []
            first = torch.index_select(self.input_table, 0, tokens)  # (B, 4H): i, f, o, g
            gates = torch.addmm(first, h_layers[0], self.w_hh0)
            for layer in range(self.num_layers):
                if layer > 0:
                    x = torch.cat((hs[-1], h_layers[layer]), 1)  # (B, 2H)
                    gates = torch.addmm(self.b_sum[layer - 1], x, self.w_cat[layer - 1])
                sigmoid_part, g = gates.split(self.lstm_split, 1)
                i, f, o = sigmoid_part.sigmoid().chunk(3, 1)
                c = torch.addcmul(f * c_layers[layer], i, g.tanh())
                hs.append(o * c.tanh())
                cs.append(c)
            top = hs[-1]
            new_state: HiddenState = (torch.stack(hs), torch.stack(cs))
        elif self.cell == "gru":
            h_all = state
            hs = []
            for layer in range(self.num_layers):
                h_prev = h_all[layer]
                if layer == 0:
                    gi = self.input_table[tokens]
                    gh = torch.addmm(self.b_hh0, h_prev, self.w_hh0)
                else:
                    gi = torch.addmm(self.b_ih[layer - 1], hs[-1], self.w_ih[layer - 1])
                    gh = torch.addmm(self.b_hh[layer - 1], h_prev, self.w_hh[layer - 1])
                i_r, i_z, i_n = gi.chunk(3, dim=1)
                h_r, h_z, h_n = gh.chunk(3, dim=1)
                r = torch.sigmoid(i_r + h_r)
                z = torch.sigmoid(i_z + h_z)
                n = torch.tanh(i_n + r * h_n)
                hs.append(n + z * (h_prev - n))  # == (1 - z) * n + z * h_prev
            top = hs[-1]
            new_state = torch.stack(hs)
        else:
            h_all = state
            hs = []
            pre = torch.addmm(self.input_table[tokens], h_all[0], self.w_hh0)
            for layer in range(self.num_layers):
                if layer > 0:
                    x = torch.cat([hs[-1], h_all[layer]], dim=1)
                    pre = torch.addmm(self.b_sum[layer - 1], x, self.w_cat[layer - 1])
                hs.append(F.relu(pre) if self.relu else torch.tanh(pre))
            top = hs[-1]
            new_state = torch.stack(hs)
        logits = torch.addmm(self.b_head, top, self.w_head)  # (B, V)
        return logits, new_state

    # ----------------------------------------------------------------- the same step in numpy

    @functools.cached_property
    def arrays(self) -> dict[str, Any]:
        """numpy views of the step's weights (no copies): the names of the torch attributes."""
        names = ("input_table", "w_hh0", "b_hh0", "w_head", "b_head")
        views: dict[str, Any] = {n: getattr(self, n).detach().numpy() for n in names}
        for n in ("w_cat", "w_ih", "w_hh", "b_ih", "b_hh", "b_sum"):
            views[n] = [t.detach().numpy() for t in getattr(self, n)]
        return views

    def compute_numpy(self, tokens: torch.Tensor, state: HiddenState) -> tuple[torch.Tensor, HiddenState]:
        """`compute` on numpy arrays, on the threads numpy's BLAS has now; the results come back
        as tensors sharing the arrays' memory."""
        a, tok = self.arrays, tokens.numpy()
        parts = [t.detach().numpy() for t in state_tensors(state)]  # each (L, B, H)
        hs = np.empty_like(parts[0])  # the new state, layer by layer
        if self.cell == "lstm":
            c_prev, cs, H = parts[1], np.empty_like(parts[1]), self.hidden_size
            gates = a["input_table"][tok] + parts[0][0] @ a["w_hh0"]  # (B, 4H): i, f, o, g
            for layer in range(self.num_layers):
                if layer > 0:
                    gates = np.concatenate((hs[layer - 1], parts[0][layer]), 1) @ a["w_cat"][layer - 1]
                    gates += a["b_sum"][layer - 1]
                sigmoid_part, g = gates[:, : 3 * H], np.tanh(gates[:, 3 * H :])
                _sigmoid(sigmoid_part)
                np.multiply(gates[:, H : 2 * H], c_prev[layer], out=cs[layer])  # f * c
                g *= gates[:, :H]
                cs[layer] += g  # + i * g
                np.tanh(cs[layer], out=hs[layer])
                hs[layer] *= gates[:, 2 * H : 3 * H]  # o * tanh(c)
            new_state: HiddenState = (torch.from_numpy(hs), torch.from_numpy(cs))
        elif self.cell == "gru":
            for layer in range(self.num_layers):
                h_prev = parts[0][layer]
                if layer == 0:
                    gi, gh = a["input_table"][tok], h_prev @ a["w_hh0"] + a["b_hh0"]
                else:
                    gi = hs[layer - 1] @ a["w_ih"][layer - 1] + a["b_ih"][layer - 1]
                    gh = h_prev @ a["w_hh"][layer - 1] + a["b_hh"][layer - 1]
                i_r, i_z, i_n = np.split(gi, 3, axis=1)
                h_r, h_z, h_n = np.split(gh, 3, axis=1)
                r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
                n = np.tanh(i_n + r * h_n)
                hs[layer] = n + z * (h_prev - n)
            new_state = torch.from_numpy(hs)
        else:
            pre = a["input_table"][tok] + parts[0][0] @ a["w_hh0"]
            for layer in range(self.num_layers):
                if layer > 0:
                    pre = np.concatenate((hs[layer - 1], parts[0][layer]), 1) @ a["w_cat"][layer - 1]
                    pre += a["b_sum"][layer - 1]
                if self.relu:
                    np.maximum(pre, 0, out=hs[layer])
                else:
                    np.tanh(pre, out=hs[layer])
            new_state = torch.from_numpy(hs)
        logits = hs[-1] @ a["w_head"]  # (B, V)
        logits += a["b_head"]
        return torch.from_numpy(logits), new_state


@contextlib.contextmanager
def torch_ops_beside(stepper: FastStepper | None) -> Iterator[None]:
    """For the torch ops a caller runs between a stepper's steps (the draw, a beam's scores): one
    thread while the steps run on numpy's BLAS. An op over many rows (a softmax over 32 samples)
    wakes torch's OpenMP threads, which then spin against OpenBLAS's for the same cores
    (measured, 32 rows of a 2x512 LSTM: the softmax 50 times slower, the step twice)."""
    before = torch.get_num_threads()
    if stepper is None or stepper.backend != "numpy" or before == 1:
        yield
        return
    torch.set_num_threads(1)  # well under a microsecond each way
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sigmoid(x: Any) -> Any:
    """In place: sigmoid(x) = (1 + tanh(x / 2)) / 2, which no input overflows (1 / (1 + exp(-x)) does)."""
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5
    return x


@functools.cache
def _blas_pools() -> tuple[Any, ...]:
    """The thread pools of numpy's BLAS that can be sized (none under some BLAS, e.g. Apple's)."""
    from threadpoolctl import ThreadpoolController  # a few ms the first time: it lists the loaded libraries

    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


_blas_threads_now: list[int | None] = [None]  # what set_blas_threads last set (None: never)


class _Running:
    """How many numpy steps run now, across the process's threads, and when several last did."""

    def __init__(self, hold_seconds: float = 1.0) -> None:
        self.count = 0
        self.crowded_at = -float("inf")
        self.hold_seconds = hold_seconds  # a step is alone this long after the last crowded one
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def entered(self) -> Iterator[bool]:
        """Within the block, this step counts; it is told whether it runs alone."""
        now = time.monotonic()
        with self.lock:
            self.count += 1
            if self.count > 1:
                self.crowded_at = now
            alone = now - self.crowded_at > self.hold_seconds
        try:
            yield alone
        finally:
            with self.lock:
                self.count -= 1


_steps_now = _Running()


def set_blas_threads(count: int | None) -> None:
    """numpy's BLAS on `count` threads from now on (None: leave it). Nothing else in charrnn
    multiplies matrices in numpy, so the count stays set; a call that changes nothing is free."""
    if count is None or count == _blas_threads_now[0]:
        return
    for pool in _blas_pools():
        pool.set_num_threads(count)
    _blas_threads_now[0] = count


def blas_threads_settable() -> bool:
    return bool(_blas_pools())
