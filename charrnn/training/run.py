"""`train()`: setting up a run, fresh, resumed or fine-tuned, then handing it to the `Trainer`.

- fresh: a tokenizer is fitted to the corpus, the model starts from a random initialisation;
- resume (`--resume`): model, tokenizer, settings and every counter come from last.safetensors,
  only the limits may change;
- fine-tune (`--init-from`): a trained checkpoint's tokenizer (a char vocabulary grows to cover
  the new corpus) and weights start a new run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import LAST, RunCheckpoint, resolve_checkpoint
from ..config import ModelConfig, TokenizerConfig, TrainConfig
from ..data.tokens import CorpusBytes, TokenData, decode_corpus, load_tokens
from ..errors import CharRNNError, CheckpointError, ConfigError
from ..footprint import check_training_fits
from ..model import RNNLanguageModel
from ..runtime import Placement, StopFlag
from ..tokenizers.char import CharTokenizer
from .distributed import DistContext
from .loop import Trainer
from .reporting import Reporter, TrainResult
from .rundir import prepare_run_dir, remove_if_empty


@dataclass(frozen=True)
class Limits:
    """The limits a command gave (None: not given): all that a resumed run may change."""

    steps: int | None = None
    epochs: float | None = None
    time_budget: float | None = None  # seconds
    patience: int | None = None
    eval_every: int | None = None

    def given(self) -> dict[str, Any]:
        """The limits given, by TrainConfig field name."""
        return {name: value for name, value in asdict(self).items() if value is not None}

    def applied_to(self, cfg: TrainConfig) -> TrainConfig:
        """`cfg` with the limits given; a limit not given keeps cfg's (the default, or a resumed run's)."""
        return replace(cfg, **self.given())


@dataclass(frozen=True)
class RunRequest:
    """How a run starts, beyond the model and training settings: fresh (a tokenizer fitted to
    the corpus), resumed, or fine-tuned from `init_from`; what else the command asked for."""

    tokenizer: TokenizerConfig = TokenizerConfig()
    encoding: str = "utf-8"
    resume: bool = False
    init_from: Path | None = None
    force: bool = False
    limits: Limits = Limits()  # on resume, the settings saved in last.safetensors with these changed
    save_every: int | None = None  # also write last.safetensors every N steps
    size_for_budget: bool = False  # a fresh run with a --time-budget picks its size (training.sizing)
    dropout_given: bool = True  # False: a run sized for its budget may drop dropout (sizing.dropout_for_budget)
    started: float | None = None  # when the command started: a --time-budget counts from there
    threads: int | None = None  # --threads: a fixed count; None: measured (probes.threads)

    def __post_init__(self) -> None:
        if self.resume and self.init_from is not None:
            raise CharRNNError(
                "--resume and --init-from exclude each other: resume continues a run, init-from starts a new one"
            )
        if self.save_every is not None and self.save_every < 1:
            raise CharRNNError(f"--save-every must be at least 1 (got {self.save_every})")


@dataclass
class RunHooks:
    """Who hears the run (reporter), who can stop it (a signal's flag), and its processes."""

    reporter: Reporter = field(default_factory=Reporter)
    stop: StopFlag = field(default_factory=StopFlag)
    dist: DistContext = field(default_factory=DistContext)


def train(
    corpus: CorpusBytes,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    run_dir: Path,
    request: RunRequest = RunRequest(),
    hooks: RunHooks | None = None,
) -> TrainResult:
    """Train a model on `corpus` into `run_dir`: fresh, resumed or fine-tuned, as `request` says."""
    hooks = hooks or RunHooks()
    run_dir = Path(run_dir)
    created, lock = (
        prepare_run_dir(run_dir, resume=request.resume, force=request.force) if hooks.dist.is_main else ([], None)
    )
    hooks.dist.barrier()
    try:
        if request.resume:
            trainer = _resumed(corpus, run_dir, request, hooks, tie=model_cfg.tie_weights)
        elif request.init_from is not None:
            trainer = _fine_tuned(corpus, model_cfg, train_cfg, run_dir, request, hooks)
        else:  # in this order: device and precision, the data, the size for a budget, the model
            placement = _placement(model_cfg, train_cfg, request, hooks)
            data = load_tokens(
                corpus,
                tokenizer_kind=request.tokenizer.kind,
                vocab_size=request.tokenizer.vocab_size,
                val_frac=train_cfg.val_frac,
                val_split=train_cfg.val_split,
                encoding=request.encoding,
            )
            size_notes: list[str] = []
            if request.size_for_budget and train_cfg.time_budget and not hooks.dist.active:
                model_cfg, size_notes = _sized_for_budget(model_cfg, train_cfg, data, placement, request)
            trainer = _trainer(data, model_cfg, train_cfg, run_dir, request, hooks, placement)
            trainer.notes += size_notes
        return trainer.run()
    except BaseException:
        if lock is not None:
            lock.release()  # first: its file would keep a new directory from being removed
        remove_if_empty(created)
        raise
    finally:
        if lock is not None:
            lock.release()  # idempotent


def _placement(model_cfg: ModelConfig, train_cfg: TrainConfig, request: RunRequest, hooks: RunHooks) -> Placement:
    """Device, precision and threads: --precision auto times the run's training step in each
    precision (probes.precision). A fresh run's vocabulary is not known yet: a char corpus's is
    about 100, a subword one's --vocab-size. A run sized for its budget is timed at the shape
    whose speed then sizes it (training.sizing.PROBE_SHAPE): both measurements agree."""
    from ..probes.precision import StepShape, choose_precision
    from .sizing import PROBE_SHAPE, PROBE_VOCAB

    vocab = model_cfg.vocab_size or (request.tokenizer.vocab_size if request.tokenizer.kind != "char" else PROBE_VOCAB)
    hidden, layers, batch, seq_len = (
        (model_cfg.hidden_size, model_cfg.num_layers, train_cfg.batch_size, train_cfg.seq_len)
        if not (request.size_for_budget and train_cfg.time_budget)
        else PROBE_SHAPE
    )
    shape = StepShape(model_cfg.cell, vocab, model_cfg.embed_size, hidden, layers, batch, seq_len)

    def measured(device: torch.device) -> tuple[str, str]:
        # Sizes that cannot be trained here are refused before a probe allocates them.
        check_training_fits(
            replace(model_cfg, vocab_size=vocab, hidden_size=hidden, num_layers=layers), train_cfg, device
        )
        return choose_precision(device, shape)

    return Placement.decide(
        train_cfg.device,
        train_cfg.precision,
        hooks.dist.device,
        # Every process of a distributed run must train in the same precision: no per-process timing there.
        auto=None if hooks.dist.active else measured,
        threads=request.threads,
    )


def _sized_for_budget(
    model_cfg: ModelConfig, train_cfg: TrainConfig, data: TokenData, placement: Placement, request: RunRequest
) -> tuple[ModelConfig, list[str]]:
    """The size for the budget (training.sizing), and no dropout for a short one unless --dropout was given."""
    from .sizing import dropout_for_budget, size_for_budget

    choice = size_for_budget(model_cfg, train_cfg, data.train_chars, data.tokenizer.vocab_size, placement)
    model_cfg = replace(model_cfg, hidden_size=choice.hidden_size, num_layers=choice.num_layers)
    notes = [f"size: {choice.reason}"]
    no_dropout = None if request.dropout_given else dropout_for_budget(choice, len(data.train))
    if no_dropout is not None and model_cfg.dropout > 0:
        model_cfg = replace(model_cfg, dropout=no_dropout[0])
        notes.append(no_dropout[1])
    return model_cfg, notes


def _trainer(
    data: TokenData,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    run_dir: Path,
    request: RunRequest,
    hooks: RunHooks,
    placement: Placement | None = None,
) -> Trainer:
    """A Trainer for `data`, once every process has checked it holds the same run as the others.
    `placement`: the device and precision decided before the data (else from train_cfg, now)."""
    model_cfg = replace(model_cfg, vocab_size=data.tokenizer.vocab_size)
    settings = {"model": model_cfg.to_dict(), "train": train_cfg.to_dict(), "corpus_sha256": data.digest}
    same = {**settings, "tokenizer": data.tokenizer.fingerprint(), "resume": request.resume, "run_dir": str(run_dir)}
    hooks.dist.check_same(same)
    return Trainer(
        data,
        model_cfg,
        train_cfg,
        run_dir,
        dist=hooks.dist,
        reporter=hooks.reporter,
        stop=hooks.stop,
        save_every=request.save_every,
        started=request.started,
        placement=placement or _placement(model_cfg, train_cfg, request, hooks),
    )


def _resumed(corpus: CorpusBytes, run_dir: Path, request: RunRequest, hooks: RunHooks, tie: bool) -> Trainer:
    """The run in `run_dir` where last.safetensors left it; only the request's limits change
    (`tie`: the user asked for --tie-weights, which an untied run cannot become)."""
    checkpoint = RunCheckpoint(run_dir / LAST)
    model_cfg = checkpoint.model_config()
    if tie and not model_cfg.tie_weights:
        raise ConfigError(
            f"--tie-weights: the run in {run_dir} has an output layer of its own and --resume keeps its "
            "architecture (drop --tie-weights, or start a new run)"
        )
    train_cfg = checkpoint.train_config(request.limits.given())
    data = load_tokens(
        corpus,
        val_frac=train_cfg.val_frac,
        val_split=train_cfg.val_split,
        encoding=request.encoding,
        tokenizer=checkpoint.tokenizer(),
    )
    train_cfg, batch_note = _per_rank_batch(train_cfg, checkpoint.world_size, hooks.dist)
    trainer = _trainer(data, model_cfg, train_cfg, run_dir, request, hooks)
    trainer.notes += [batch_note] if batch_note else []
    saved_digest = checkpoint.meta.get("corpus_sha256")
    if saved_digest and saved_digest != data.digest:
        raise ConfigError(
            f"--resume: {run_dir} was trained on a different corpus ({checkpoint.meta.get('corpus')!r}); "
            f"give the same corpus, or use --init-from to fine-tune on a new one"
        )
    trainer.restore(checkpoint)
    done = trainer.budget.should_stop(trainer.state.step, trainer.state.elapsed, keep_for_end=False)
    if done:  # continuing would only evaluate and save again what is already there
        raise ConfigError(
            f"--resume: the run in {run_dir} is at step {trainer.state.step} and has {done}; "
            f"give a higher --steps, --epochs or --time-budget to train on"
        )
    return trainer


def _per_rank_batch(train_cfg: TrainConfig, saved_world: int, dist: DistContext) -> tuple[TrainConfig, str | None]:
    """Resuming with another number of processes keeps the global batch (the streams, their
    hidden state and the data cursor) when it divides evenly: a run saved by 2 x 4 streams
    resumes in one process as 1 x 8 and back. Otherwise the per-process batch is kept."""
    total = train_cfg.batch_size * saved_world
    if saved_world == dist.world_size:
        return train_cfg, None
    if total % dist.world_size == 0:
        per_rank = total // dist.world_size
        note = f"resumed a {saved_world}-process run with {dist.world_size}: {dist.world_size} x {per_rank} streams"
        return replace(train_cfg, batch_size=per_rank), note
    return train_cfg, None


def _fine_tuned(
    corpus: CorpusBytes,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    run_dir: Path,
    request: RunRequest,
    hooks: RunHooks,
) -> Trainer:
    """A new run on `corpus` from the weights and tokenizer of `init_from` (a run directory
    means its best checkpoint); the architecture is the checkpoint's, the dropout the one asked for."""
    init_from = request.init_from
    checkpoint = RunCheckpoint(resolve_checkpoint(init_from))
    tokenizer = checkpoint.tokenizer()
    if model_cfg.tie_weights and not checkpoint.model_config().tie_weights:
        raise ConfigError(
            f"--tie-weights: {init_from} was trained with an output layer of its own; a fine-tune keeps the "
            "checkpoint's architecture (drop --tie-weights, or train a tied model from scratch)"
        )
    model_cfg = replace(checkpoint.model_config(), dropout=model_cfg.dropout)
    if isinstance(tokenizer, CharTokenizer):  # a char vocabulary grows to cover the new corpus
        tokenizer, added = tokenizer.extend(decode_corpus(corpus, request.encoding))
        hooks.reporter.on_message(
            f"--init-from: vocabulary extended by {added} new character{'s' if added != 1 else ''}"
            if added
            else "--init-from: the new corpus uses no new characters"
        )
    data = load_tokens(
        corpus,
        val_frac=train_cfg.val_frac,
        val_split=train_cfg.val_split,
        encoding=request.encoding,
        tokenizer=tokenizer,
    )
    trainer = _trainer(data, model_cfg, train_cfg, run_dir, request, hooks)
    _load_grown_weights(trainer.model, checkpoint.weights())
    return trainer


def _load_grown_weights(model: RNNLanguageModel, old: dict[str, torch.Tensor]) -> None:
    """Old weights into a model whose vocabulary may have grown: the old rows of the embedding
    and the output layer are copied; new rows keep their fresh initialisation."""
    new_state = model.state_dict()
    for name, value in old.items():
        if name not in new_state:
            raise CheckpointError(f"--init-from: weight {name} does not fit this model")
        target = new_state[name]
        if target.shape == value.shape:
            target.copy_(value)
        elif target.shape[1:] == value.shape[1:] and target.shape[0] > value.shape[0]:
            target[: value.shape[0]].copy_(value)
        else:
            raise CheckpointError(
                f"--init-from: weight {name} has shape {tuple(value.shape)}, expected {tuple(target.shape)}"
            )
    model.load_state_dict(new_state)
