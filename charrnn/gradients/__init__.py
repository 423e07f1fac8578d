"""Gradient flow through time (`charrnn gradients`): how far back a trained model's loss reaches.

For the loss at one step t and each layer's hidden state h_{t-k}, the norm of dloss_t/dh_{t-k}
is measured by autograd through the model itself, for k = 0 ... K. In a plain (tanh) RNN that
gradient is a product of k Jacobians and shrinks geometrically: the lesson of the lectures
charrnn grew from, and the reason for gates (LSTM, GRU) and identity-initialised ReLU RNNs.

How: each window of held-out text is read for a few warm-up steps without a graph (so the
state is a realistic one, not zeros), then K+1 steps one token at a time through the model's
own recurrent module with every step's state kept; one backward pass from the loss at the
last step gives the gradient with respect to all of them. Windows run a batch at a time, so
memory grows with the batch, K and the model, not with the text. Everything is fp32.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..checkpoint import LoadedModel
from ..errors import ConfigError, CorpusError
from ..tokenizers.char import show_chars

DEFAULT_MAX_K = 200
DEFAULT_WINDOWS = 64
DEFAULT_WARMUP = 100  # steps read before a window's first measured state
WINDOW_BATCH = 32  # windows measured together: bounds memory
# Each step is a few small matrix products: on 2 cores shared with other work, one thread
# measured 10x faster than two (a 2x512 LSTM, K = 200: 7 s against 71 s).
MEASURE_THREADS = 1

# step(x_t, state) -> (output_t, new state); tracked(state) -> the tensors measured, one a layer (B, H).
StepFn = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


@dataclass
class LayerFlow:
    """One layer's curve: mean |dloss_t/dh_{t-k}| for k = 0 ... K, and that over its value at k = 0."""

    layer: int
    k: list[int]
    grad_norm: list[float]
    relative: list[float | None]  # None where the k = 0 norm is 0


@dataclass
class RunFlow:
    """The curves of one run, one per layer."""

    run: str
    cell: str
    layers: list[LayerFlow]
    text: str  # what was read: the validation split of a corpus, or a file
    windows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_max_k(max_k: int) -> None:
    if max_k < 1:
        raise ConfigError(f"--max-k must be at least 1 (got {max_k})")


def state_gradient_norms(
    step: StepFn,
    state: Any,
    inputs: Sequence[torch.Tensor],
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    tracked: Callable[[Any], Sequence[torch.Tensor]] = lambda s: [s],
) -> torch.Tensor:
    """Run `step` over `inputs` from `state`; the per-stream norm of d loss_fn(last output) /
    d tracked(state after each step): a (len(inputs), layers, B) tensor, row k for the state k
    steps before the last. Any step function will do (a model, or a linear recurrence in a test).
    `loss_fn` sums over streams: streams do not interact, so each stream's gradient is its own."""
    states: list[torch.Tensor] = []
    out = None
    for x in inputs:
        out, state = step(x, state)
        states.extend(tracked(state))
    if out is None:
        raise ValueError("no inputs")
    grads = torch.autograd.grad(loss_fn(out), states, allow_unused=True)
    # The norm in fp64: squaring a component of 1e-24 in fp32 would give 0, cutting the curve short.
    zero = lambda s: torch.zeros(s.shape[:-1], dtype=torch.float64)  # noqa: E731
    norms = [zero(s) if g is None else g.double().norm(dim=-1) for s, g in zip(states, grads)]
    return torch.stack(norms).reshape(len(inputs), -1, *norms[0].shape).flip(0)


# torch's own single-step cells: the functions nn.LSTMCell, nn.GRUCell and nn.RNNCell call.
CELL_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "lstm": torch.lstm_cell,
    "gru": torch.gru_cell,
    "rnn": torch.rnn_tanh_cell,
    "rnn-relu": torch.rnn_relu_cell,
}


def layer_step(model: Any) -> StepFn:
    """One token at a time through the model's embedding and each of its recurrent layers in
    turn, with the layer's own weights: the same computation as its fused module in eval mode,
    but each layer's new state is the very tensor the layer above and the next step read, so a
    gradient with respect to it is the whole gradient. State: a list of each layer's state."""
    rnn = model.rnn
    cell = CELL_FUNCTIONS[model.cell]
    weights = [
        tuple(getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        for layer in range(model.num_layers)
    ]

    def step(tokens: torch.Tensor, state: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        x = model.embedding(tokens)
        new = []
        for w, s in zip(weights, state):
            s = cell(x, s, *w)
            x = hidden_part(s)
            new.append(s)
        return x, new

    return step


def hidden_part(state: Any) -> torch.Tensor:
    """h of an LSTM's (h, c); the state itself for a GRU or RNN."""
    hidden: torch.Tensor = state[0] if isinstance(state, tuple) else state
    return hidden


def layer_states(model: Any, batch: int) -> list[Any]:
    """A zero state for each layer, (h, c) for an LSTM."""

    def zero() -> torch.Tensor:
        return torch.zeros(batch, model.hidden_size)

    return [(zero(), zero()) if model.cell == "lstm" else zero() for _ in range(model.num_layers)]


def window_starts(n_ids: int, max_k: int, windows: int, warmup: int) -> tuple[list[int], int]:
    """Evenly spread window starts over `n_ids` tokens, and the warm-up that fits."""
    need = max_k + 2  # K+1 inputs and the target of the last one
    warmup = max(0, min(warmup, n_ids - need))
    span = warmup + need
    if n_ids < span:
        return [], warmup
    count = max(1, min(windows, n_ids - span + 1))
    last = n_ids - span
    starts = sorted({round(i * last / max(count - 1, 1)) for i in range(count)})
    return starts, warmup


def model_gradient_norms(model: Any, ids: torch.Tensor, max_k: int, warmup: int) -> torch.Tensor:
    """(K+1, layers, B) norms for a batch of windows `ids` (B, warmup + K + 2) of token ids."""
    import torch.nn.functional as F

    step = layer_step(model)
    state = layer_states(model, ids.shape[0])
    with torch.no_grad():
        for t in range(warmup):
            _, state = step(ids[:, t], state)
    inputs = [ids[:, t] for t in range(warmup, warmup + max_k + 1)]
    target = ids[:, -1]
    # The first state made a leaf that needs a gradient: the graph is built through the states alone.
    state = [
        tuple(p.clone().requires_grad_(True) for p in s) if isinstance(s, tuple) else s.clone().requires_grad_(True)
        for s in state
    ]
    with torch.enable_grad():
        return state_gradient_norms(
            step,
            state,
            inputs,
            lambda out: F.cross_entropy(model.output(out), target, reduction="sum"),
            lambda layers: [hidden_part(s) for s in layers],
        )


def gradient_flow(
    loaded: LoadedModel,
    ids: Sequence[int] | torch.Tensor,
    *,
    run: str,
    text: str,
    max_k: int = DEFAULT_MAX_K,
    windows: int = DEFAULT_WINDOWS,
    warmup: int = DEFAULT_WARMUP,
    batch: int = WINDOW_BATCH,
    threads: int | None = MEASURE_THREADS,
) -> RunFlow:
    """The mean gradient norm of each layer's state k = 0 ... `max_k` steps back, over up to
    `windows` windows of `ids` spread evenly over them, on the CPU in fp32."""
    check_max_k(max_k)
    if windows < 1:
        raise ConfigError(f"--windows must be at least 1 (got {windows})")
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    starts, warmup = window_starts(len(ids), max_k, windows, warmup)
    if not starts:
        raise CorpusError(
            f"{text}: {len(ids):,} tokens, too few for --max-k {max_k} (a window needs {max_k + 2}); "
            "give a longer text or a smaller --max-k"
        )
    model = loaded.model.to("cpu").float().eval()
    for p in model.parameters():
        p.requires_grad_(False)  # gradients with respect to states only
    span = warmup + max_k + 2
    total = torch.zeros(max_k + 1, model.num_layers, dtype=torch.float64)
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        for i in range(0, len(starts), batch):
            chunk = torch.stack([ids[s : s + span] for s in starts[i : i + batch]])
            total += model_gradient_norms(model, chunk, max_k, warmup).double().sum(dim=2)
    finally:
        torch.set_num_threads(before)
    mean = total / len(starts)
    return RunFlow(
        run=run,
        cell=model.cell,
        layers=[_layer_flow(layer, mean[:, layer].tolist()) for layer in range(model.num_layers)],
        text=text,
        windows=len(starts),
    )


def _layer_flow(layer: int, norms: list[float]) -> LayerFlow:
    first = norms[0]
    relative = [n / first if first > 0 and math.isfinite(n / first) else None for n in norms]
    return LayerFlow(layer=layer, k=list(range(len(norms))), grad_norm=norms, relative=relative)


def held_out_ids(
    loaded: LoadedModel,
    *,
    text: Path | None = None,
    corpus: str | None = None,
    encoding: str = "utf-8",
    log: Callable[[str], None] = lambda _: None,
) -> tuple[list[int], str]:
    """The token ids to measure on, and what they are: the file `text` whole, else the validation
    split of `corpus` (default: the corpus the run was trained on, found by its name)."""
    from ..evaluation import read_text

    if text is not None:
        content, source = read_text(text, encoding, log=log), str(text)
    else:
        content, source = _validation_text(loaded, corpus, encoding, log)
    unknown = loaded.tokenizer.unknown_chars(content)
    if unknown:
        raise CorpusError(
            f"{source}: {len(unknown)} character{'s' if len(unknown) > 1 else ''} the model never saw: "
            f"{show_chars(unknown)}"
        )
    return [int(i) for i in loaded.tokenizer.encode(content)], source


def _validation_text(
    loaded: LoadedModel, corpus: str | None, encoding: str, log: Callable[[str], None]
) -> tuple[str, str]:
    """The validation split of `corpus` (default: the run's own, by the name its checkpoint
    records), cut as the run cut it; a note when it is not the text the run trained on."""
    from ..data.corpora import resolve_corpus
    from ..data.tokens import split_corpus
    from ..evaluation import train_settings

    name = corpus or loaded.meta.get("corpus")
    try:
        if not name:
            raise CorpusError("no corpus named in the checkpoint")
        found = resolve_corpus(str(name), log, encoding=encoding)
    except CorpusError as exc:
        if corpus is not None:
            raise
        raise CorpusError(
            f"{loaded.path}: cannot find the corpus it was trained on ({name or 'unnamed'}: {exc}); "
            "give it with --corpus PATH, or held-out text with --text FILE"
        ) from None
    trained_on = loaded.meta.get("corpus_sha256")
    if trained_on and found.digest != trained_on:
        log(f"note: {found.source} is not the text {loaded.path} was trained on (another sha256); its split is used")
    cfg = train_settings(loaded)
    return split_corpus(found, cfg.val_frac, cfg.val_split, encoding).val, f"validation split of {name}"


def run_gradient_flow(
    checkpoint: Path,
    *,
    run: str | None = None,
    text: Path | None = None,
    corpus: str | None = None,
    encoding: str = "utf-8",
    max_k: int = DEFAULT_MAX_K,
    windows: int = DEFAULT_WINDOWS,
    threads: int | None = MEASURE_THREADS,
    log: Callable[[str], None] = lambda _: None,
) -> RunFlow:
    """`gradient_flow` of a checkpoint file on its held-out text (see `held_out_ids`)."""
    from ..checkpoint import load_model

    check_max_k(max_k)
    loaded = load_model(checkpoint, "cpu")
    ids, source = held_out_ids(loaded, text=text, corpus=corpus, encoding=encoding, log=log)
    label = run or checkpoint.parent.name
    return gradient_flow(loaded, ids, run=label, text=source, max_k=max_k, windows=windows, threads=threads)
