"""A training step's forward and backward, whole or split by rows over worker threads.

On a CPU with a few cores, torch's own threads split every op of a small model's step, and
wait for each other at the end of each one: thousands of meeting points a step. Split by rows
instead, each worker runs its share of the batch start to finish on one thread, and the workers
meet once a step. That can be faster when the machine is quiet (a 2x256 LSTM on two cores:
1.2x), and it keeps working beside a busy program, where a thread that is not running stalls
every op of the others (`probes.threads.ThreadTuner` measures which is faster, for the run's
own step, and switches as the machine changes).

Each worker has its own copy of the model whose weights share the model's storage (the
optimiser's in-place update reaches every copy) but whose gradients are its own; they are
added up in a fixed order, so a run repeats bitwise. Not for models with dropout: the workers'
random draws would interleave in no fixed order.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..model import HiddenState, RNNLanguageModel, select_streams, state_from_tensors, state_tensors
from ..probes.threads import Choice, Split, thread_counts
from ..runtime import Placement

if TYPE_CHECKING:
    from ..evaluation import StatefulModel

Autocast = Callable[[], AbstractContextManager[None]]


def forward_backward(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    state: HiddenState,
    autocast: Autocast,
    weight: float = 1.0,
    scale: Callable[[torch.Tensor], torch.Tensor] = lambda loss: loss,
) -> tuple[torch.Tensor, HiddenState]:
    """Forward from `state`, the loss (mean nats per token, times `weight`) and its gradients
    added into the parameters' .grad (of the loss times fp16's `scale`). x, y: (B, T). The loss
    comes back detached."""
    with autocast():
        logits, state = model(x, state)  # (B, T, V)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1)) * weight
    scale(loss).backward()
    return loss.detach(), state


def split_workers(model_cfg: ModelConfig, batch_size: int, placement: Placement, processes: int) -> int:
    """How many workers a step may be split over here (0: it may not): on a CPU, in one process,
    with no dropout (the workers' random draws would interleave in no fixed order), without
    fp16's loss scaling, and with at least two rows of the batch per worker."""
    workers = max(thread_counts())
    allowed = placement.device.type == "cpu" and processes == 1 and model_cfg.dropout == 0
    allowed = allowed and placement.precision != "fp16" and batch_size >= 2 * workers
    return workers if allowed and workers > 1 else 0


class StepLayout:
    """Where a step's forward and backward run: the model on torch's threads, or split by rows
    (`SplitStep`). The training tuner sets it (`probes.threads.ThreadTuner`'s set_threads)."""

    def __init__(self, model: RNNLanguageModel, workers: int = 0):
        self.model = model
        self.workers = workers  # what a step may be split over (`split_workers`; 0: never)
        self.split: SplitStep | None = None  # in use; None: the whole batch at once, on torch's threads
        # Kept across the probe's switches, its threads started when made: a probe step of the
        # split then times the step, not copying the model and starting a thread.
        self.ready: SplitStep | None = None

    def __call__(self, choice: Choice) -> None:
        if isinstance(choice, Split):
            # Between steps too (the optimiser's update, validation) one thread: torch's threads
            # would spin against a busy neighbour's, the very case the split is for.
            torch.set_num_threads(1)
            if self.ready is None or self.ready.workers != choice.workers:
                self.close()
                self.ready = SplitStep(self.model, choice.workers)
            self.split = self.ready
        else:
            torch.set_num_threads(choice)
            self.split = None

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        state: HiddenState,
        autocast: Autocast,
        scale: Callable[[torch.Tensor], torch.Tensor],
    ) -> tuple[torch.Tensor, HiddenState]:
        """`forward_backward` on `model` (the model, or its DDP wrapper), or split by rows."""
        if self.split is None:
            return forward_backward(model, x, y, state, autocast, scale=scale)
        return self.split(x, y, state, autocast)  # never with fp16's scaling (split_workers)

    def for_validation(self, autocast: Autocast) -> StatefulModel:
        """What validation runs: the model, or while the step is split, the model with each batch's
        rows split over the same workers (on the one thread a split run leaves torch, validating
        the whole batch took twice as long on two cores)."""
        return self.model if self.split is None else SplitForward(self.split, autocast)

    def close(self) -> None:
        if self.ready is not None:
            self.ready.close()
        self.split = self.ready = None


class SplitStep:
    """`forward_backward` with the batch's rows split over `workers` threads, each on one torch
    thread and its own copy of `model` (the first worker is the calling thread, on `model`)."""

    def __init__(self, model: RNNLanguageModel, workers: int):
        self.model, self.workers = model, workers
        self.copies = [_sharing_copy(model) for _ in range(workers - 1)]
        self.pool = ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="charrnn-split")
        for started in [self.pool.submit(torch.set_num_threads, 1) for _ in range(workers - 1)]:
            started.result()  # the threads exist now, each on one torch thread

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, state: HiddenState, autocast: Autocast
    ) -> tuple[torch.Tensor, HiddenState]:
        """The whole batch's loss and state, the gradients summed into `model`'s .grad."""
        self._share_weights()
        rows = torch.arange(x.shape[0]).tensor_split(self.workers)  # contiguous row groups

        def work(model: nn.Module, r: torch.Tensor) -> tuple[torch.Tensor, HiddenState]:
            torch.set_num_threads(1)  # per thread: OpenMP's thread count is each thread's own
            model.zero_grad(set_to_none=True)
            # Each group's mean loss weighted by its share of the rows: together, the batch's mean.
            return forward_backward(model, x[r], y[r], select_streams(state, r), autocast, len(r) / x.shape[0])

        others = [self.pool.submit(work, twin, r) for twin, r in zip(self.copies, rows[1:])]
        results = [work(self.model, rows[0])] + [future.result() for future in others]
        with torch.no_grad():  # in worker order: the same sum every run
            for twin in self.copies:
                for mine, theirs in zip(self.model.parameters(), twin.parameters()):
                    if theirs.grad is not None:
                        mine.grad = theirs.grad.clone() if mine.grad is None else mine.grad.add_(theirs.grad)
        return torch.stack([loss for loss, _ in results]).sum(), self._merged([s for _, s in results])

    def forward(self, x: torch.Tensor, state: HiddenState, autocast: Autocast) -> tuple[torch.Tensor, HiddenState]:
        """The model's logits (B, T, V) and state for x (B, T), no gradients, rows split as a step's."""
        if x.shape[0] < self.workers:  # a validation's last, single stream
            with torch.no_grad(), autocast():
                whole: tuple[torch.Tensor, HiddenState] = self.model(x, state)
                return whole
        self._share_weights()
        rows = torch.arange(x.shape[0]).tensor_split(self.workers)

        def work(model: nn.Module, r: torch.Tensor) -> tuple[torch.Tensor, HiddenState]:
            torch.set_num_threads(1)
            with torch.no_grad(), autocast():  # both are the calling thread's own: set in each worker
                logits: torch.Tensor
                logits, part = model(x[r], select_streams(state, r))
                return logits, part

        others = [self.pool.submit(work, twin, r) for twin, r in zip(self.copies, rows[1:])]
        results = [work(self.model, rows[0])] + [future.result() for future in others]
        return torch.cat([logits for logits, _ in results]), self._merged([s for _, s in results])

    def _merged(self, states: list[HiddenState]) -> HiddenState:
        """The row groups' states as one, in row order."""
        parts = zip(*(state_tensors(s) for s in states))  # per state tensor: each group's (L, b, H)
        return state_from_tensors([torch.cat(p, dim=1) for p in parts], self.model.cell)

    def _share_weights(self) -> None:
        """Each copy's parameters view the model's current storage (a resume or a move may have
        given the model new tensors since)."""
        for twin in self.copies:
            if any(a.data_ptr() != b.data_ptr() for a, b in zip(self.model.parameters(), twin.parameters())):
                _share(twin, self.model)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class SplitForward:
    """A model for `evaluation.evaluate_ids` whose forward runs on a `SplitStep`'s workers."""

    def __init__(self, split: SplitStep, autocast: Autocast):
        self.split, self.autocast = split, autocast

    @property
    def training(self) -> bool:
        return self.split.model.training

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> HiddenState:
        return self.split.model.init_state(batch_size, device)

    def __call__(self, tokens: torch.Tensor, state: HiddenState | None = None) -> tuple[torch.Tensor, HiddenState]:
        if state is None:
            state = self.init_state(tokens.shape[0], tokens.device)
        return self.split.forward(tokens, state, self.autocast)

    def eval(self) -> SplitForward:
        return self.train(False)

    def train(self, mode: bool = True) -> SplitForward:
        for model in (self.split.model, *self.split.copies):
            model.train(mode)
        return self


def _sharing_copy(model: RNNLanguageModel) -> RNNLanguageModel:
    """A copy of `model` whose parameters are new leaves on the same storage."""
    twin = copy.deepcopy(model)
    _share(twin, model)
    return twin


def _share(twin: nn.Module, model: nn.Module) -> None:
    """twin's parameters made new leaves on model's storage, one per model parameter (a tied
    weight stays one parameter in both). nn.LSTM's setattr keeps its flat weight list in step."""
    leaves: dict[int, nn.Parameter] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        leaf = leaves.setdefault(id(param), nn.Parameter(param.detach(), requires_grad=param.requires_grad))
        owner_name, _, attr = name.rpartition(".")
        setattr(twin.get_submodule(owner_name) if owner_name else twin, attr, leaf)
