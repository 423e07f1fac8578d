"""What a model of given sizes weighs, from the sizes alone: nothing is allocated.

`parameter_shapes` names the weights `RNNLanguageModel` will have (checked against the model in
the tests), so a checkpoint's tensors can be compared with its metadata before a network is
built; `check_fits` refuses sizes whose training (or sampling) would not fit in the memory this
machine has free, naming what they would need, instead of allocating until the machine stalls.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterator

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

    from .config import ModelConfig, TrainConfig

GATES = {"lstm": 4, "gru": 3}  # gate blocks per recurrent weight; plain RNNs (tanh, relu) have 1
FLOAT_BYTES = 4  # parameters, gradients and optimiser state are fp32 whatever the precision
# Training holds weights, gradients and up to two optimiser moments (AdamW): 4 copies.
TRAINING_COPIES = 4


def parameter_count(cell: str, vocab: int, embed: int, hidden: int, layers: int, tied: bool = False) -> int:
    """Weights of `RNNLanguageModel`, in closed form (any size, no loop over layers). Tied, the
    output layer reuses the embedding and adds a projection hidden -> embed where they differ."""
    gates = GATES.get(cell, 1)
    first = gates * hidden * (embed + hidden + 2)
    rest = (layers - 1) * gates * hidden * (2 * hidden + 2)
    output = (0 if embed == hidden else hidden * embed) if tied else hidden * vocab
    return vocab * embed + first + rest + output + vocab


def training_flops_per_token(cell: str, embed: int, hidden: int, layers: int, vocab: int) -> float:
    """Matmul FLOPs of one training token: forward 2*in*out per weight, backward twice that."""
    gates = GATES.get(cell, 1)
    forward = sum(2 * ((embed if layer == 0 else hidden) + hidden) * gates * hidden for layer in range(layers))
    return 3.0 * (forward + 2 * hidden * vocab)


def parameter_shapes(
    cell: str, vocab: int, embed: int, hidden: int, layers: int, tied: bool = False
) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every weight, in the model's state_dict naming (tied: no "head.weight",
    the embedding's alias). Check the count first: this walks the layers."""
    gates = GATES.get(cell, 1) * hidden
    yield "embedding.weight", (vocab, embed)
    for layer in range(layers):
        yield f"rnn.weight_ih_l{layer}", (gates, embed if layer == 0 else hidden)
        yield f"rnn.weight_hh_l{layer}", (gates, hidden)
        yield f"rnn.bias_ih_l{layer}", (gates,)
        yield f"rnn.bias_hh_l{layer}", (gates,)
    if not tied:
        yield "head.weight", (vocab, hidden)
    elif embed != hidden:
        yield "proj.weight", (embed, hidden)
    yield "head.bias", (vocab,)


def weights_mismatch(sizes: tuple[Any, ...], weights: dict[str, torch.Tensor]) -> str | None:
    """What is wrong with `weights` (name -> tensor) for a model of `sizes` (cell, vocab, embed,
    hidden, layers[, tied]), or None. The count first: absurd sizes in crafted metadata cost nothing."""
    have, want = sum(t.numel() for t in weights.values()), parameter_count(*sizes)
    if have != want:
        return f"its metadata describes a network of {want:,} weights, its tensors hold {have:,}"
    expected = dict(parameter_shapes(*sizes))
    for name, tensor in weights.items():
        if expected.get(name) != tuple(tensor.shape):
            known = f" (expected {expected[name]})" if name in expected else ""
            return (
                f"weight {name} of shape {tuple(tensor.shape)} is not part of the network its metadata describes{known}"
            )
    return None


def training_bytes(cell: str, vocab: int, embed: int, hidden: int, layers: int, batch: int, seq_len: int) -> int:
    """Parameters with gradients and optimiser state, plus one window's activations: the
    embedding, each layer's gates and states, and the logits with their gradient."""
    params = parameter_count(cell, vocab, embed, hidden, layers)
    per_token = embed + layers * hidden * (GATES.get(cell, 1) + 2) + 3 * vocab
    return FLOAT_BYTES * (TRAINING_COPIES * params + batch * seq_len * per_token)


def check_training_fits(model: ModelConfig, cfg: TrainConfig, device: torch.device) -> None:
    """ConfigError when training `model` at cfg's batch and window would not fit on `device`."""
    sizes = (model.cell, model.vocab_size, model.embed_size, model.hidden_size, model.num_layers)
    need = training_bytes(*sizes, cfg.batch_size, cfg.seq_len)
    what = f"training a {model.num_layers:,} x {model.hidden_size:,} {model.cell} (embed {model.embed_size:,})"
    check_fits(need, what, "choose a smaller --hidden, --layers or --embed", device.type, device.index)


def available_bytes(device_type: str = "cpu", index: int | None = None) -> int | None:
    """Memory free for a new allocation: the GPU's free memory, else the system's available
    memory (MemAvailable on Linux); None when it cannot be told."""
    if device_type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(index)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(need: int, what: str, hint: str = "", device_type: str = "cpu", index: int | None = None) -> None:
    """ConfigError when `need` bytes are more than the device has free: "`what` needs about ...;
    this machine has ... free; `hint`"."""
    free = available_bytes(device_type, index)
    if free is not None and need > free:
        where = "this GPU has" if device_type == "cuda" else "this machine has"
        message = f"{what} needs about {human_bytes(need)} of memory; {where} {human_bytes(free)} free"
        raise ConfigError(message + (f"; {hint}" if hint else ""))


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
