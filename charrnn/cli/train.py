"""`charrnn train`: a progress bar over `charrnn.train.train`."""

from __future__ import annotations

import math
import shlex
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..config import ModelConfig, TrainConfig
from ..errors import CharRNNError, Interrupted
from ..reporting import Reporter
from . import app, hms, stderr
from .choices import EXCLUDE, INCLUDE, Device, Precision


class Cell(str, Enum):
    lstm = "lstm"
    gru = "gru"
    rnn = "rnn"
    rnn_relu = "rnn-relu"


class Optimizer(str, Enum):
    adamw = "adamw"
    rmsprop = "rmsprop"
    adagrad = "adagrad"
    sgd = "sgd"


class TokenizerKind(str, Enum):
    char = "char"
    bpe = "bpe"
    unigram = "unigram"


_T = TrainConfig()


def _duration(value: str) -> float:
    from ..config import parse_duration

    return parse_duration(value)


# ----------------------------------------------------------------------------- train


@app.command()
def train(
    corpus: Annotated[
        str,
        typer.Argument(
            help="A text file, a directory (walked recursively, text files chosen by content), or a ready corpus name (charrnn corpus list)."
        ),
    ],
    model: Annotated[Cell, typer.Option("--model", help="Recurrent cell.")] = Cell.lstm,
    layers: Annotated[int, typer.Option(help="Stacked recurrent layers.")] = 2,
    hidden: Annotated[int, typer.Option(help="Units per recurrent layer.")] = 512,
    embed: Annotated[int, typer.Option(help="Token embedding width.")] = 64,
    dropout: Annotated[
        float, typer.Option(help="Dropout between layers and before the output, in [0, 1).")
    ] = ModelConfig().dropout,
    tokenizer: Annotated[
        TokenizerKind, typer.Option(help="char, or a SentencePiece model trained on the corpus.")
    ] = TokenizerKind.char,
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="Vocabulary size for bpe/unigram.")] = 2000,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per truncated-BPTT window.")] = _T.seq_len,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Parallel contiguous streams.")] = _T.batch_size,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = _T.lr,
    optimizer: Annotated[
        Optimizer, typer.Option(help="Optimizer (warm-up then cosine decay for all).")
    ] = Optimizer.adamw,
    weight_decay: Annotated[
        float, typer.Option("--weight-decay", help="Decoupled weight decay on matrices.")
    ] = _T.weight_decay,
    grad_clip: Annotated[
        float, typer.Option("--grad-clip", help="Clip the global gradient norm; 0 = off.")
    ] = _T.grad_clip,
    warmup: Annotated[int, typer.Option(help="Warm-up steps.")] = _T.warmup_steps,
    steps: Annotated[
        Optional[int], typer.Option(help="Total optimizer steps of the run (a resumed run counts on).")
    ] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Passes over the training text.")] = None,
    time_budget: Annotated[
        Optional[str], typer.Option("--time-budget", help="Wall-clock training time, e.g. 90s, 10m, 2h.")
    ] = None,
    eval_every: Annotated[
        Optional[int],
        typer.Option("--eval-every", help=f"Steps between validations and checkpoints [default: {_T.eval_every}]."),
    ] = None,
    patience: Annotated[
        Optional[int],
        typer.Option(help=f"Stop after this many evaluations without improvement [default: {_T.patience}]."),
    ] = None,
    val_frac: Annotated[
        float, typer.Option("--val-frac", help="Fraction of the text, at its end, kept for validation.")
    ] = _T.val_frac,
    seed: Annotated[int, typer.Option(help="Random seed.")] = _T.seed,
    device: Annotated[Device, typer.Option(help="Where to train.")] = Device.auto,
    precision: Annotated[
        Precision, typer.Option(help="auto: bf16 where the hardware has it, fp16 on older GPUs, else fp32.")
    ] = Precision.auto,
    out: Annotated[Optional[Path], typer.Option(help="Run directory [default: checkpoints/<corpus name>].")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out exactly where it stopped.")
    ] = False,
    init_from: Annotated[
        Optional[Path], typer.Option("--init-from", help="Start from a trained checkpoint's weights (fine-tune).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Start over in an existing run directory.")] = False,
    encoding: Annotated[str, typer.Option(help="Text encoding of the corpus.")] = "utf-8",
    include: Annotated[Optional[list[str]], INCLUDE] = None,
    exclude: Annotated[Optional[list[str]], EXCLUDE] = None,
    sample_every: Annotated[
        int, typer.Option("--sample-every", help="Show a short sample at every N-th evaluation.")
    ] = 0,
    save_every: Annotated[
        Optional[int], typer.Option("--save-every", help="Also write last.safetensors every N steps.")
    ] = None,
    tensorboard: Annotated[
        Optional[Path],
        typer.Option("--tensorboard", help="Also write TensorBoard event files to DIR (needs charrnn[tensorboard])."),
    ] = None,
) -> None:
    """Train a model on CORPUS; checkpoints go to checkpoints/<corpus name>/.

    With no --steps, --epochs or --time-budget a run ends after 10 epochs, or earlier when
    validation stops improving (--patience).
    """
    from ..config import ModelConfig
    from ..corpora import resolve_corpus
    from ..distributed import DistContext
    from ..runtime import stop_on_signals
    from ..train import train as run_training

    if resume and init_from is not None:
        raise CharRNNError(
            "--resume and --init-from exclude each other: resume continues a run, init-from starts a new one"
        )
    budget = _duration(time_budget) if time_budget is not None else None
    limits = {"steps": steps, "epochs": epochs, "time_budget": budget, "patience": patience, "eval_every": eval_every}
    given = {k: v for k, v in limits.items() if v is not None}
    train_cfg = TrainConfig(
        seq_len=seq_len,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer.value,
        weight_decay=weight_decay,
        grad_clip=grad_clip,
        warmup_steps=warmup,
        val_frac=val_frac,
        seed=seed,
        device=device.value,
        precision=precision.value,
        sample_every=sample_every,
        **given,
    )
    model_cfg = ModelConfig(cell=model.value, embed_size=embed, hidden_size=hidden, num_layers=layers, dropout=dropout)
    if save_every is not None and save_every < 1:
        raise CharRNNError(f"--save-every must be at least 1 (got {save_every})")
    dist = DistContext.from_env(device.value)
    reporter: Reporter = _TrainReporter(quiet=not dist.is_main)
    if tensorboard is not None and dist.is_main:
        from ..reporting import TensorBoardReporter

        reporter = TensorBoardReporter(reporter, tensorboard)
    try:
        data = resolve_corpus(
            corpus, log=reporter.on_message, encoding=encoding, include=include or (), exclude=exclude or ()
        )
        run_dir = out if out is not None else Path("checkpoints") / data.name
        with stop_on_signals() as stop, dist.failures_as_errors():
            try:
                result = run_training(
                    data,
                    model_cfg,
                    train_cfg,
                    run_dir,
                    tokenizer_kind=tokenizer.value,
                    vocab_size=vocab_size,
                    encoding=encoding,
                    resume=resume,
                    init_from=init_from,
                    force=force,
                    limits=given,
                    reporter=reporter,
                    stop=stop,
                    save_every=save_every,
                    dist=dist,
                )
            except Interrupted as exc:
                reporter.close()
                if not dist.is_main:  # every rank stopped at the same step; rank 0 says so, once
                    raise typer.Exit(exc.exit_code) from None
                launcher = "torchrun <the same torchrun options> -m charrnn" if dist.active else "charrnn"
                again = f"{launcher} train {shlex.quote(corpus)} --out {shlex.quote(str(run_dir))} --resume"
                raise Interrupted(
                    f"{exc}; saved {run_dir / 'last.safetensors'}; resume with: {again}", exc.exit_code - 128
                ) from None
            finally:
                reporter.close()
    finally:
        dist.close()
    if dist.is_main:
        stderr.print(
            f"done ({result.stopped_because}) after {result.steps} steps in {hms(result.elapsed)}: "
            f"best validation {result.best_val_bpc:.4f} bits/char ({result.best_val_bpc * math.log(2):.4f} nats/char, "
            f"{result.best_val_loss:.4f} nats/token)"
        )
        stderr.print(f"checkpoint: {result.best_path}   sample it: charrnn sample {shlex.quote(str(result.run_dir))}")
        _write_plot(result.run_dir)


def _write_plot(run_dir: Path) -> None:
    """The bits/char PNG in the run directory, when matplotlib is installed (a nicety, never fatal)."""
    from ..plot import have_matplotlib, plot_run

    if not have_matplotlib():
        return
    try:
        stderr.print(f"plot: {plot_run(run_dir)}")
    except CharRNNError as exc:
        stderr.print(f"note: no plot written ({exc})", markup=False)


class _TrainReporter(Reporter):
    """Rich progress bar on a terminal, plain lines otherwise (logs, CI, pipes)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.live = sys.stderr.isatty() and not quiet
        self.progress: Any = None
        self.task: Any = None
        self.info: Any = None
        self.last_val = "-"
        self.last_plain = 0.0

    def on_start(self, info) -> None:
        self.info = info
        if self.quiet:
            return
        for note in info.notes:
            stderr.print(f"note: {note}")
        limits = [f"{info.total_steps:,} steps"] if info.total_steps else []
        limits += [f"{hms(info.time_budget)} of training"] if info.time_budget else []
        limit = "up to " + " or ".join(limits) if limits else "until --patience"
        stderr.print(
            f"{'resuming at step ' + str(info.start_step) + ': ' if info.start_step else ''}"
            f"{info.parameters / 1e6:.2f}M parameters, {info.tokenizer} vocabulary of {info.vocab_size:,}; "
            f"{info.train_tokens:,} train / {info.val_tokens:,} val tokens{' (cached ids)' if info.cached else ''}; "
            f"batch {info.batch_size}{' x ' + str(info.world_size) + ' processes' if info.world_size > 1 else ''}; {limit}"
        )
        stderr.print(
            f"device {info.device}, precision {info.precision} ({info.precision_reason}); run directory {info.run_dir}"
        )
        if self.live:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("step {task.fields[step]}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("val {task.fields[val]}"),
                TextColumn("{task.fields[speed]} chars/s"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=stderr,
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=1000, step=info.start_step, loss="-", val="-", speed="-")

    def on_step(self, r) -> None:
        if self.progress is not None:
            done = 1000 * r.progress if r.progress is not None else 0
            self.progress.update(
                self.task,
                completed=done,
                step=r.step,
                loss=f"{r.loss:.3f}",
                val=self.last_val,
                speed=f"{r.chars_per_sec:,.0f}",
            )
        elif not self.quiet and time.monotonic() - self.last_plain > 30:
            self.last_plain = time.monotonic()
            print(
                f"step {r.step} | epoch {r.epoch:.2f} | loss {r.loss:.3f} | {r.chars_per_sec:,.0f} chars/s | {hms(r.elapsed)}",
                file=sys.stderr,
                flush=True,
            )

    def on_eval(self, r) -> None:
        self.last_val = f"{r.val_bpc:.3f} bpc {r.val_loss:.3f}/token"
        line = (
            f"step {r.step} | epoch {r.epoch:.2f} | train {r.train_loss:.4f} | val {r.val_loss:.4f} nats/token "
            f"{r.val_bpc:.4f} bpc{' *' if r.is_best else ''} | {r.chars_per_sec:,.0f} chars/s | {hms(r.elapsed)}"
        )
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def on_sample(self, step: int, text: str) -> None:
        if self.quiet:
            return
        stderr.rule(f"sample at step {step}")
        stderr.print(text, markup=False)
        stderr.rule()

    def on_message(self, text: str) -> None:
        if not self.quiet:
            stderr.print(text, markup=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
