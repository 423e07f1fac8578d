"""`charrnn train`: a progress bar over `charrnn.training.run.train`."""

from __future__ import annotations

import math
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..config import ModelConfig, TokenizerConfig, TrainConfig
from ..errors import CharRNNError, Interrupted
from ..training.reporting import EvalReport, Reporter, RunInfo, StepReport, TrainResult

if TYPE_CHECKING:  # the training package imports torch: not for `charrnn --help`
    from ..data.tokens import CorpusBytes
    from ..training.run import RunHooks, RunRequest
from .application import app, hms, stderr
from .options import EXCLUDE, INCLUDE, THREADS, Choice, choices, default, opt

M, T, K = ModelConfig, TrainConfig, TokenizerConfig
PLOT_SECONDS = 3.0  # drawing bpc.png (matplotlib's import included): left out when a --time-budget has no room
if TYPE_CHECKING:  # Typer reads the enums built from config.py; mypy sees a Choice (see options.Choice)
    Cell = Choice
    Optimizer = Choice
    Device = Choice
    Precision = Choice
    ValSplit = Choice
    TokenizerKind = Choice
else:
    Cell = choices(M, "cell", "Cell")
    Optimizer = choices(T, "optimizer", "Optimizer")
    Device = choices(T, "device", "Device")
    Precision = choices(T, "precision", "Precision")
    ValSplit = choices(T, "val_split", "ValSplit")
    TokenizerKind = choices(K, "kind", "TokenizerKind")


# ----------------------------------------------------------------------------- train


@app.command()
def train(
    corpus: Annotated[
        str,
        typer.Argument(
            help="A text file, a directory (walked recursively, text files chosen by content), or a ready corpus name (charrnn corpus list)."
        ),
    ],
    cell: Annotated[Cell, opt(M, "cell")] = Cell(default(M, "cell")),
    # None = not given: with --time-budget the size is then chosen for the budget
    num_layers: Annotated[Optional[int], opt(M, "num_layers", show_default_in_help=True)] = None,
    hidden_size: Annotated[Optional[int], opt(M, "hidden_size", show_default_in_help=True)] = None,
    embed_size: Annotated[int, opt(M, "embed_size")] = default(M, "embed_size"),
    # None = not given: a run sized for a short --time-budget then trains without dropout
    dropout: Annotated[Optional[float], opt(M, "dropout", show_default_in_help=True)] = None,
    tie_weights: Annotated[bool, opt(M, "tie_weights")] = default(M, "tie_weights"),
    tokenizer: Annotated[TokenizerKind, opt(K, "kind")] = TokenizerKind(default(K, "kind")),
    vocab_size: Annotated[int, opt(K, "vocab_size")] = default(K, "vocab_size"),
    seq_len: Annotated[int, opt(T, "seq_len")] = default(T, "seq_len"),
    batch_size: Annotated[int, opt(T, "batch_size")] = default(T, "batch_size"),
    chunk_windows: Annotated[int, opt(T, "chunk_windows", metavar="K")] = default(T, "chunk_windows"),
    lr: Annotated[float, opt(T, "lr")] = default(T, "lr"),
    optimizer: Annotated[Optimizer, opt(T, "optimizer")] = Optimizer(default(T, "optimizer")),
    weight_decay: Annotated[float, opt(T, "weight_decay")] = default(T, "weight_decay"),
    grad_clip: Annotated[float, opt(T, "grad_clip")] = default(T, "grad_clip"),
    warmup_steps: Annotated[int, opt(T, "warmup_steps")] = default(T, "warmup_steps"),
    # The limits default to None, "not given", so that a resumed run keeps its own.
    steps: Annotated[Optional[int], opt(T, "steps")] = None,
    epochs: Annotated[Optional[float], opt(T, "epochs")] = None,
    time_budget: Annotated[Optional[str], opt(T, "time_budget")] = None,
    eval_every: Annotated[Optional[int], opt(T, "eval_every")] = None,
    patience: Annotated[Optional[int], opt(T, "patience", show_default_in_help=True)] = None,
    val_frac: Annotated[float, opt(T, "val_frac")] = default(T, "val_frac"),
    val_split: Annotated[ValSplit, opt(T, "val_split")] = ValSplit(default(T, "val_split")),
    val_tokens: Annotated[int, opt(T, "val_tokens", metavar="N")] = default(T, "val_tokens"),
    seed: Annotated[int, opt(T, "seed")] = default(T, "seed"),
    device: Annotated[Device, opt(T, "device")] = Device(default(T, "device")),
    precision: Annotated[Precision, opt(T, "precision")] = Precision(default(T, "precision")),
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
    sample_every: Annotated[int, opt(T, "sample_every")] = default(T, "sample_every"),
    save_every: Annotated[
        Optional[int], typer.Option("--save-every", help="Also write last.safetensors every N steps.")
    ] = None,
    tensorboard: Annotated[
        Optional[Path],
        typer.Option("--tensorboard", help="Also write TensorBoard event files to DIR (needs charrnn[tensorboard])."),
    ] = None,
    threads: Annotated[Optional[int], THREADS] = None,
) -> None:
    """Train a model on CORPUS; checkpoints go to checkpoints/<corpus name>/.

    With no --steps, --epochs or --time-budget a run ends after 10 epochs, or earlier when
    validation stops improving (--patience).
    """
    from ..training.budget import command_start

    started = command_start()  # a --time-budget counts from here: the process's start
    from ..config import parse_duration
    from ..data.corpora import resolve_corpus
    from ..runtime import set_cpu_threads
    from ..training.distributed import DistContext
    from ..training.run import Limits, RunHooks, RunRequest

    set_cpu_threads(threads)
    budget = parse_duration(time_budget) if time_budget is not None else None
    limits = Limits(steps, epochs, budget, patience, eval_every)
    train_cfg = TrainConfig(
        seq_len=seq_len,
        batch_size=batch_size,
        chunk_windows=chunk_windows,
        lr=lr,
        optimizer=optimizer.value,
        weight_decay=weight_decay,
        grad_clip=grad_clip,
        warmup_steps=warmup_steps,
        val_frac=val_frac,
        val_split=val_split.value,
        val_tokens=val_tokens,
        seed=seed,
        device=device.value,
        precision=precision.value,
        sample_every=sample_every,
    )
    train_cfg = limits.applied_to(train_cfg)
    model_cfg = _model_config(cell.value, embed_size, hidden_size, num_layers, dropout, tie_weights)
    request = RunRequest(
        tokenizer=TokenizerConfig(tokenizer.value, vocab_size),
        encoding=encoding,
        resume=resume,
        init_from=init_from,
        force=force,
        limits=limits,
        save_every=save_every,
        size_for_budget=hidden_size is None and num_layers is None,
        dropout_given=dropout is not None,
        started=started,
        threads=threads,
    )  # checked as it is made: --resume with --init-from, --save-every 0
    dist = DistContext.from_env(device.value)
    reporter = _reporter(dist.is_main, tensorboard)
    with dist.running():
        data = resolve_corpus(
            corpus, log=reporter.on_message, encoding=encoding, include=include or (), exclude=exclude or ()
        )
        run_dir = out if out is not None else Path("checkpoints") / data.name
        result = _run(corpus, data, model_cfg, train_cfg, run_dir, request, RunHooks(reporter, dist=dist))
    if dist.is_main:
        _print_result(result, result.time_budget)


def _model_config(
    cell: str, embed: int, hidden: int | None, layers: int | None, dropout: float | None, tie: bool
) -> ModelConfig:
    """The architecture asked for; a size not given is the default (a --time-budget run may pick it later)."""
    return ModelConfig(
        cell=cell,
        embed_size=embed,
        hidden_size=default(M, "hidden_size") if hidden is None else hidden,
        num_layers=default(M, "num_layers") if layers is None else layers,
        dropout=default(M, "dropout") if dropout is None else dropout,
        tie_weights=tie,
    )


def _reporter(is_main: bool, tensorboard: Path | None) -> Reporter:
    """The progress display (quiet on every rank but the first), and TensorBoard files when asked."""
    reporter: Reporter = _TrainReporter(quiet=not is_main)
    if tensorboard is not None and is_main:
        from ..training.reporting import TensorBoardReporter

        reporter = TensorBoardReporter(reporter, tensorboard)
    return reporter


def _run(
    corpus: str,
    data: CorpusBytes,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    run_dir: Path,
    request: RunRequest,
    hooks: RunHooks,
) -> TrainResult:
    """The training under signal handling: an interrupted run ends in one line that says how to resume."""
    from ..runtime import stop_on_signals
    from ..training.run import train as run_training

    dist, reporter = hooks.dist, hooks.reporter
    with stop_on_signals() as stop, dist.failures_as_errors():
        try:
            return run_training(data, model_cfg, train_cfg, run_dir, request, replace(hooks, stop=stop))
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


def _print_result(result: TrainResult, time_budget: float | None) -> None:
    stderr.print(
        f"done ({result.stopped_because}{'; see the warning below' if result.warning else ''}) "
        f"after {result.steps} steps in {hms(result.elapsed)}: "
        f"best validation {result.best_val_bpc:.4f} bits/char ({result.best_val_bpc * math.log(2):.4f} nats/char, "
        f"{result.best_val_loss:.4f} nats/token)"
    )
    if result.warning:
        stderr.print(f"warning: {result.warning}", markup=False)
    if result.whole_val_bpc is not None:
        stderr.print(f"whole validation split: {result.whole_val_bpc:.4f} bits/char")
    stderr.print(f"checkpoint: {result.best_path}   sample it: charrnn sample {shlex.quote(str(result.run_dir))}")
    if time_budget is not None and result.elapsed + PLOT_SECONDS > time_budget:
        stderr.print(f"no plot written, to end within --time-budget (charrnn plot {shlex.quote(str(result.run_dir))})")
    else:
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

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.live = sys.stderr.isatty() and not quiet
        self.progress: Any = None
        self.task: Any = None
        self.info: Any = None
        self.last_val = "-"
        self.last_plain = 0.0

    def on_start(self, info: RunInfo) -> None:
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

    def on_step(self, r: StepReport) -> None:
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

    def on_eval(self, r: EvalReport) -> None:
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
