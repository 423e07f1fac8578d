"""`charrnn gradients`: how far back in time a model's loss reaches (gradient flow through time)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Optional, Sequence

import typer

from ..errors import ConfigError
from .application import app, chosen_checkpoint, stderr

if TYPE_CHECKING:
    from ..gradients import RunFlow

DEFAULT_PICTURE = Path("gradients.png")


@app.command()
def gradients(
    runs: Annotated[
        Optional[list[Path]], typer.Argument(help="Run directories or checkpoint files, one curve each (and layer).")
    ] = None,
    text: Annotated[
        Optional[Path],
        typer.Option("--text", help="Held-out text to measure on [default: the validation split of the run's corpus]."),
    ] = None,
    corpus: Annotated[
        Optional[str],
        typer.Option(help="The run's corpus (file, directory or ready corpus name), when it is not found by name."),
    ] = None,
    max_k: Annotated[int, typer.Option("--max-k", help="Measure k = 0 ... K steps back.")] = 200,
    windows: Annotated[int, typer.Option(help="Windows of text averaged over, spread evenly over it.")] = 64,
    out: Annotated[
        Optional[Path], typer.Option(help="PNG to write [default: gradients.png; with --json, none unless given].")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the curves as JSON on stdout.")] = False,
    compare: Annotated[
        Optional[str],
        typer.Option(help="Train rnn, rnn-relu, gru and lstm alike on CORPUS, then draw all four.", metavar="CORPUS"),
    ] = None,
    time_budget: Annotated[str, typer.Option(help="With --compare: training time of each cell.")] = "60s",
    hidden: Annotated[int, typer.Option(help="With --compare: units per layer of every cell.")] = 256,
    layers: Annotated[int, typer.Option(help="With --compare: layers of every cell.")] = 1,
    out_dir: Annotated[
        Path, typer.Option("--out-dir", help="With --compare: where the runs go, one folder per cell.")
    ] = Path("gradients-compare"),
    force: Annotated[
        bool, typer.Option("--force", help="With --compare: train anew over runs already in --out-dir.")
    ] = False,
    threads: Annotated[
        int,
        typer.Option(
            help="CPU threads for measuring (and --compare's training); one is fastest on busy cores.", metavar="N"
        ),
    ] = 1,
) -> None:
    """Gradient flow through time: |d loss(t) / d h(t-k)| for k = 0 ... K, each layer, as a picture.

    A plain tanh RNN's gradient shrinks geometrically with k, so it cannot learn from far back; gates (LSTM, GRU) and identity-initialised ReLU RNNs keep it alive. Computed by autograd through the model in fp32, averaged over windows of held-out text.
    """
    from ..gradients import check_max_k, run_gradient_flow

    check_max_k(max_k)
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1 (got {threads})")

    def log(message: str) -> None:
        stderr.print(message, markup=False)

    if out is not None or not as_json:
        from ..plot import have_matplotlib

        if not have_matplotlib():  # said before minutes of training or measuring, not after
            raise ConfigError("the picture needs matplotlib: pip install 'charrnn[plot]' (or use --json alone)")
    if compare is not None:
        if runs:
            raise ConfigError("--compare trains its own runs: give either RUN ... or --compare CORPUS")
        flows = _compare(compare, time_budget, hidden, layers, max_k, windows, out_dir, force, threads, log)
    else:
        if not runs:
            raise ConfigError("name at least one run (or use --compare CORPUS)")
        flows = []
        for run in runs:
            path = chosen_checkpoint(run)
            label = run.name if run.is_dir() else f"{path.parent.name}/{path.name}"
            flow = run_gradient_flow(
                path, run=label, text=text, corpus=corpus, max_k=max_k, windows=windows, threads=threads, log=log
            )
            log(f"{label}: {flow.cell}, {flow.windows} windows of the {flow.text}")
            flows.append(flow)
    if as_json:
        print(json.dumps({"runs": [f.to_dict() for f in flows]}, indent=2))
    if out is not None or not as_json:
        from ..gradients.plot import plot_gradient_flow

        log(f"wrote {plot_gradient_flow(flows, out or DEFAULT_PICTURE)}")
    if not as_json:
        _print_table(flows)


def _compare(
    corpus: str,
    time_budget: str,
    hidden: int,
    layers: int,
    max_k: int,
    windows: int,
    out_dir: Path,
    force: bool,
    threads: int,
    log: Callable[[str], None],
) -> list[RunFlow]:
    from ..config import parse_duration
    from ..gradients.compare import CompareSettings, compare_cells
    from .train import _TrainReporter

    settings = CompareSettings(
        time_budget=parse_duration(time_budget),
        hidden=hidden,
        layers=layers,
        max_k=max_k,
        windows=windows,
        threads=threads,
    )
    return compare_cells(corpus, out_dir, settings, force=force, reporter_for=lambda _: _TrainReporter(), log=log)


def _print_table(flows: Sequence[RunFlow]) -> None:
    """The relative gradient at a few k for each run and layer."""
    picks = [k for k in (1, 10, 50, 100, 200) if k < len(flows[0].layers[0].k)]
    print(f"{'run':<24}{'layer':>6}" + "".join(f"{'k=' + str(k):>11}" for k in picks))
    for flow in flows:
        for layer in flow.layers:
            cells = [layer.relative[k] for k in picks]
            shown = "".join(f"{v:>11.3g}" if v is not None else f"{'-':>11}" for v in cells)
            print(f"{flow.run[:23]:<24}{layer.layer + 1:>6}{shown}")
