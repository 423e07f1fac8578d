"""Settings as frozen dataclasses, validated when they are made.

They are the one source of each option's default, help text and flag: a field made with
`option(...)` carries them, and the CLI declares its options from them (cli/options.py).
Values are checked in `__post_init__` so that a bad value fails before any work starts, with a
`ConfigError` whose message names the option as the user typed it.
"""

from __future__ import annotations

import math
import re
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any

from .errors import ConfigError

CELLS = ("lstm", "gru", "rnn", "rnn-relu")
OPTIMIZERS = ("adamw", "rmsprop", "adagrad", "sgd")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TOKENIZERS = ("char", "bpe", "unigram")
EVAL_PRECISIONS = ("fp32", "bf16", "fp16")
SPLITS = ("auto", "tail", "documents")  # --val-split: see data/split.py
# Validation during training is capped at this many tokens. Measured on a 2-core CPU with the
# default model: a validation token costs 0.12-0.21 of a training token, so 120,000 tokens cost
# about 3.5-6% of the 200 steps (409,600 training tokens) between validations (README, Training);
# tinyshakespeare's split (111,537) stays whole, so earlier figures on it stay comparable.
DEFAULT_VAL_TOKENS = 120_000

# Each stream reads this many windows (1,024 tokens at --seq-len 64) of one place in the text, then
# jumps to another (data/streams.StreamBatcher). Measured (docs/performance.md, "Against nanoGPT"),
# one seed each: python-stdlib (9.9 MB of Python) at 97 s, 2.19 bits/char reading each stream straight
# through, 1.80-1.82 with chunks of 4, 8, 16 or 32 windows; tinyshakespeare at 131 s, 2.17 straight
# through, 2.14 with 8, 2.12 with 16.
DEFAULT_CHUNK_WINDOWS = 16
# Steps between validations when --eval-every is not given; a --time-budget run spaces them further
# once it has measured what one costs (training/budget.py).
DEFAULT_EVAL_EVERY = 200

# With no --steps, --epochs or --time-budget a run ends after this many passes over the
# training text (or earlier, by --patience): about 10 minutes for a 1 MB corpus on a laptop.
DEFAULT_MAX_EPOCHS = 10.0


def option(default: Any, help: str, flag: str | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """A settings field and the CLI option that sets it: `flag` (default: --field-name),
    `help` as --help shows it, `choices` the values it takes."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices})


def option_field(cls: type, name: str) -> Field[Any]:
    """The dataclass field `name` of `cls` (with its option metadata)."""
    return next(f for f in fields(cls) if f.name == name)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _seed_ok(seed: int | None) -> bool:
    """torch takes seeds that fit in a signed 64-bit integer."""
    return seed is None or -(2**63) <= seed < 2**63


def _require_object(data: Any, what: str) -> None:
    """Settings read from a file (a checkpoint's metadata) must be a JSON object."""
    if not isinstance(data, dict):
        raise TypeError(f"{what} must be an object, not {type(data).__name__}")


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the network: embedding -> stacked RNN -> linear over the vocabulary."""

    # lstm | gru | rnn (tanh) | rnn-relu (ReLU, identity-initialised)
    cell: str = option("lstm", "Recurrent cell.", flag="--model", choices=CELLS)
    vocab_size: int = 0  # number of token ids; set from the tokenizer
    embed_size: int = option(64, "Token embedding width.", flag="--embed")
    # train: with --time-budget and neither flag, both are chosen for the budget (charrnn.training.sizing)
    hidden_size: int = option(512, "Units per recurrent layer (with --time-budget: chosen for it).", flag="--hidden")
    num_layers: int = option(2, "Stacked recurrent layers (with --time-budget: chosen for it).", flag="--layers")
    dropout: float = option(
        0.2,
        "Dropout between layers and before the output, in [0, 1). Not given, a run sized for a --time-budget "
        "that reads its text at most 7 times trains without.",
    )
    # False in every checkpoint written before the option existed (from_dict keeps the default)
    tie_weights: bool = option(
        False,
        "Share the embedding with the output layer (a learned projection hidden -> embed "
        "first where --embed differs from --hidden).",
    )

    def __post_init__(self) -> None:
        _require(isinstance(self.tie_weights, bool), f"tie_weights must be true or false (got {self.tie_weights!r})")
        _require(self.cell in CELLS, f"--model must be one of {', '.join(CELLS)} (got {self.cell!r})")
        _require(self.vocab_size >= 0, "vocabulary size must not be negative")
        _require(self.embed_size >= 1, f"--embed must be at least 1 (got {self.embed_size})")
        _require(self.hidden_size >= 1, f"--hidden must be at least 1 (got {self.hidden_size})")
        _require(self.num_layers >= 1, f"--layers must be at least 1 (got {self.num_layers})")
        _require(
            _finite(self.dropout) and 0.0 <= self.dropout < 1.0,
            f"--dropout must be in [0, 1) (got {self.dropout})",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        _require_object(data, "model settings")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class TrainConfig:
    """How a run trains: data windows, optimiser, schedule, limits and checkpoints."""

    seq_len: int = option(64, "Tokens per truncated-BPTT window.")
    batch_size: int = option(32, "Parallel streams: the rows of every batch.")
    chunk_windows: int = option(
        DEFAULT_CHUNK_WINDOWS,
        "Windows each stream reads in a row before it jumps to another place in the text (its hidden "
        "state then starts afresh); 0 = each stream reads its stretch of the text straight through, as char-rnn.",
        flag="--chunk",
    )
    lr: float = option(1e-2, "Peak learning rate.")
    optimizer: str = option("adamw", "Optimizer (warm-up then cosine decay for all).", choices=OPTIMIZERS)
    weight_decay: float = option(0.1, "Decoupled weight decay on matrices.")
    grad_clip: float = option(1.0, "Clip the global gradient norm; 0 = off.")
    warmup_steps: int = option(50, "Warm-up steps.", flag="--warmup")
    min_lr_frac: float = 0.1  # the cosine ends at lr * min_lr_frac
    steps: int | None = option(None, "Total optimizer steps of the run (a resumed run counts on).")
    epochs: float | None = option(None, "Passes over the training text.")
    # seconds of training (evaluations included); the CLI reads a duration
    time_budget: float | None = option(None, "Wall-clock training time, e.g. 90s, 10m, 2h.")
    # None: not given, saved so in checkpoints so that a resumed run still spaces its validations
    eval_every: int | None = option(
        None,
        f"Steps between validations and checkpoints [default: {DEFAULT_EVAL_EVERY}; a --time-budget run spaces them "
        "to 5% of its time after the first].",
    )
    val_frac: float = option(0.1, "Fraction of the text kept for validation.")
    val_split: str = option(
        "auto",
        "What is held out: auto = whole documents spread over a corpus of documents (a directory's files, "
        "ABC tunes), else the end of the text; documents = blank-line-separated blocks of any text; tail = the end.",
        choices=SPLITS,
    )
    val_tokens: int = option(
        DEFAULT_VAL_TOKENS, "Validate on at most N tokens of the validation split, spread over it (eval --val: all)."
    )
    patience: int | None = option(8, "Stop after this many evaluations without improvement.")
    seed: int = option(1337, "Random seed.")
    device: str = option("auto", "Where to train.", choices=DEVICES)
    precision: str = option(
        "auto", "auto: bf16 where the hardware has it, fp16 on older GPUs, else fp32.", choices=PRECISIONS
    )
    sample_every: int = option(0, "Show a short sample at every N-th evaluation.")
    eval_batch_size: int = 128  # streams used for validation (more is faster, same result)

    def __post_init__(self) -> None:
        _require(self.seq_len >= 1, f"--seq-len must be at least 1 (got {self.seq_len})")
        _require(self.batch_size >= 1, f"--batch-size must be at least 1 (got {self.batch_size})")
        _require(self.chunk_windows >= 0, f"--chunk must be >= 0 (got {self.chunk_windows})")
        _require(_finite(self.lr) and self.lr > 0, f"--lr must be a positive number (got {self.lr})")
        _require(
            self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)} (got {self.optimizer!r})"
        )
        _require(
            _finite(self.weight_decay) and self.weight_decay >= 0,
            f"--weight-decay must be >= 0 (got {self.weight_decay})",
        )
        _require(_finite(self.grad_clip) and self.grad_clip >= 0, f"--grad-clip must be >= 0 (got {self.grad_clip})")
        _require(self.warmup_steps >= 0, f"--warmup must be >= 0 (got {self.warmup_steps})")
        _require(_finite(self.min_lr_frac) and 0 <= self.min_lr_frac <= 1, "min_lr_frac must be in [0, 1]")
        _require(self.steps is None or self.steps >= 1, f"--steps must be at least 1 (got {self.steps})")
        _require(
            self.epochs is None or (_finite(self.epochs) and self.epochs > 0),
            f"--epochs must be a positive number (got {self.epochs})",
        )
        _require(
            self.time_budget is None or (_finite(self.time_budget) and self.time_budget > 0),
            f"--time-budget must be positive (got {self.time_budget})",
        )
        _require(
            self.eval_every is None or self.eval_every >= 1, f"--eval-every must be at least 1 (got {self.eval_every})"
        )
        _require(
            _finite(self.val_frac) and 0 < self.val_frac < 1,
            f"--val-frac must be between 0 and 1, exclusive (got {self.val_frac})",
        )
        _require(self.val_split in SPLITS, f"--val-split must be one of {', '.join(SPLITS)} (got {self.val_split!r})")
        _require(
            self.val_tokens >= self.seq_len + 1,
            f"--val-tokens must be at least one window, --seq-len + 1 = {self.seq_len + 1} (got {self.val_tokens})",
        )
        _require(self.patience is None or self.patience >= 1, f"--patience must be at least 1 (got {self.patience})")
        _require(self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)} (got {self.device!r})")
        _require(
            self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})"
        )
        _require(self.sample_every >= 0, f"--sample-every must be >= 0 (got {self.sample_every})")
        _require(_seed_ok(self.seed), f"--seed must fit in 64 bits, between -2**63 and 2**63 - 1 (got {self.seed})")
        _require(self.eval_batch_size >= 1, "eval_batch_size must be at least 1")

    @property
    def has_limit(self) -> bool:
        return self.steps is not None or self.epochs is not None or self.time_budget is not None

    @property
    def validation_interval(self) -> int:
        """--eval-every, or its default when not given (which a timed run then spaces: training/budget.py)."""
        return DEFAULT_EVAL_EVERY if self.eval_every is None else self.eval_every

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        _require_object(data, "training settings")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if data and "val_split" not in data:  # saved before --val-split: that run held out the tail
            values["val_split"] = "tail"
        if data and "chunk_windows" not in data:  # saved before --chunk: that run read its streams straight through
            values["chunk_windows"] = 0
        return cls(**values)


@dataclass(frozen=True)
class TokenizerConfig:
    """How a fresh run turns its corpus into token ids."""

    kind: str = option(
        "char", "char, or a SentencePiece model trained on the corpus.", flag="--tokenizer", choices=TOKENIZERS
    )
    vocab_size: int = option(2000, "Vocabulary size for bpe/unigram.")


@dataclass(frozen=True)
class SampleConfig:
    """How text is drawn from a model."""

    temperature: float = option(0.8, "Temperature; 0 = always the most likely next character.", flag="--temp")
    top_k: int = option(0, "Draw from the k most likely tokens only; 0 = all.")
    top_p: float = option(1.0, "Draw from the smallest set of tokens reaching probability p.")
    length: int = option(1000, "Characters to generate per sample.")  # after the prime
    num_samples: int = option(1, "How many samples.")
    seed: int | None = option(None, "Random seed: the same seed gives the same text.")
    stop: str | None = option(None, "End a sample where this string appears (\\n for newline).")

    def __post_init__(self) -> None:
        _require(
            _finite(self.temperature) and self.temperature >= 0,
            f"--temp must be a number >= 0 (got {self.temperature})",
        )
        _require(self.top_k >= 0, f"--top-k must be >= 0 (got {self.top_k})")
        _require(_finite(self.top_p) and 0 < self.top_p <= 1, f"--top-p must be in (0, 1] (got {self.top_p})")
        _require(self.length >= 0, f"--length must be >= 0 (got {self.length})")
        _require(self.num_samples >= 1, f"--num-samples must be at least 1 (got {self.num_samples})")
        _require(_seed_ok(self.seed), f"--seed must fit in 64 bits, between -2**63 and 2**63 - 1 (got {self.seed})")
        _require(self.stop is None or len(self.stop) > 0, "--stop must not be empty")


@dataclass(frozen=True)
class ServeConfig:
    """Where `charrnn serve` listens and how much work it takes on at once."""

    # loopback by default: only this computer can connect
    host: str = option("127.0.0.1", "Address to listen on; anything but loopback lets others in.")
    port: int = option(8000, "Port to listen on (0 = any free port).")
    workers: int = option(8, "Generations that run at once.")  # each on its own thread
    queue: int = option(8, "Generations that may wait; beyond that the server answers 503.")
    max_models: int = option(4, "Models kept loaded in memory.")  # the least recently used leaves first
    max_length: int = option(10_000, "Most characters one request may generate.")

    def __post_init__(self) -> None:
        _require(bool(self.host.strip()), "--host must not be empty")
        _require(0 <= self.port <= 65535, f"--port must be between 0 and 65535 (got {self.port})")
        _require(1 <= self.workers <= 256, f"--workers must be between 1 and 256 (got {self.workers})")
        _require(0 <= self.queue <= 10_000, f"--queue must be between 0 and 10000 (got {self.queue})")
        _require(1 <= self.max_models <= 100, f"--max-models must be between 1 and 100 (got {self.max_models})")
        _require(
            1 <= self.max_length <= 1_000_000, f"--max-length must be between 1 and 1000000 (got {self.max_length})"
        )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|sec|m|min|h|hr|d)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {
    None: 1.0,
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "d": 86400.0,
}


def parse_duration(text: str) -> float:
    """'90s' -> 90.0, '10m' -> 600.0, '1.5h' -> 5400.0, '45' -> 45.0 (seconds)."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"--time-budget: cannot read {text!r} as a duration (try 90s, 10m or 2h)")
    seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "").lower() or None]
    if seconds <= 0:
        raise ConfigError(f"--time-budget must be positive (got {text!r})")
    return seconds
