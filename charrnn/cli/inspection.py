"""`charrnn info`, `plot`, `visualize`: looking at trained models and runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .application import app, chosen_checkpoint, hms, stderr
from .options import CheckpointArg


@app.command()
def info(
    checkpoint: CheckpointArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the details as JSON on stdout.")] = False,
) -> None:
    """Architecture, size, tokenizer, corpus and training state of a checkpoint."""
    from ..checkpoint import checkpoint_info

    details = checkpoint_info(chosen_checkpoint(checkpoint))
    if as_json:
        print(json.dumps(details, indent=2))
        return
    arch = details["architecture"]
    best = details["best_val_bpc"]
    seconds = details["training_seconds"]
    lines = [
        ("checkpoint", f"{details['path']} ({details['kind']}, {details['file_bytes'] / 1e6:.1f} MB)"),
        (
            "model",
            f"{arch['cell']}, {arch['layers']} layer(s) x {arch['hidden']} units, embedding {arch['embed']}"
            f"{' (tied to the output layer)' if arch['tied'] else ''}, dropout {arch['dropout']}",
        ),
        ("parameters", f"{details['parameters']:,}"),
        ("tokenizer", f"{details['tokenizer']}, vocabulary of {_count(details['vocab_size'])}"),
        ("corpus", str(details["corpus"])),
        (
            "trained",
            f"{_count(details['step'])} steps ({details['epoch'] or 0:.2f} epochs)",
        ),
        ("best validation", f"{best:.4f} bits/char" if best is not None else "none yet"),
        ("training time", hms(seconds) if seconds is not None else "?"),
        ("precision", f"{details['precision']} on {details['device_type']}"),
        ("resumable", _resumable(details)),
        ("charrnn", f"{details['charrnn_version']}, checkpoint format {details['format_version']}"),
    ]
    for key, value in lines:
        print(f"{key + ':':<17}{value}")


def _resumable(details: dict[str, Any]) -> str:
    point = details["resumes_from"]
    if point is None:
        return "no (weights only)"
    if details["resumable"]:
        return "yes (optimizer state included)"
    return f"yes: --resume continues from {point['path']} at step {_count(point['step'])} (this file is weights only)"


def _count(n: int | None) -> str:
    return f"{n:,}" if n is not None else "?"


@app.command()
def plot(
    run: Annotated[Path, typer.Argument(help="Run directory (or its metrics.jsonl).")],
    out: Annotated[Optional[Path], typer.Option(help="PNG to write [default: RUN/bpc.png].")] = None,
) -> None:
    """PNG of train and validation bits/char against steps and wall time (needs charrnn[plot])."""
    from ..plot import plot_run

    stderr.print(f"wrote {plot_run(run, out)}", markup=False)


@app.command()
def visualize(
    checkpoint: CheckpointArg = None,
    text: Annotated[Optional[Path], typer.Option("--text", help="Text file to read [default: stdin].")] = None,
    out: Annotated[Path, typer.Option(help="HTML page to write.")] = Path("visualize.html"),
    layer: Annotated[
        Optional[int], typer.Option(help="Recurrent layer whose units are shown, from 1 [default: the top].")
    ] = None,
    max_chars: Annotated[int, typer.Option("--max-chars", help="Show at most this many characters.")] = 2000,
    encoding: Annotated[str, typer.Option(help="Text encoding of --text.")] = "utf-8",
) -> None:
    """One self-contained HTML page: each character colored by surprise, hidden units over the text."""
    from ..checkpoint import load_model
    from ..data.tokens import CorpusBytes, decode_corpus
    from ..errors import ConfigError
    from ..evaluation import read_text
    from ..visualize import write_visualization

    if max_chars < 1:
        raise ConfigError(f"--max-chars must be at least 1 (got {max_chars})")
    if text is not None:
        content = read_text(text, encoding)
    else:
        content = decode_corpus(CorpusBytes("stdin", "stdin", sys.stdin.buffer.read()), encoding)
    path = chosen_checkpoint(checkpoint)
    loaded = load_model(path)
    analysis = write_visualization(
        loaded,
        content,
        out,
        title=f"charrnn: {path.parent.name}/{path.name}",
        layer=layer,
        max_chars=max_chars,
        log=lambda m: stderr.print(m, markup=False),
    )
    top = analysis.proposals[0] if analysis.proposals else None
    found = f"; best unit: {top.track}{top.unit} tracks {top.feature} (r={top.r:+.2f})" if top else ""
    stderr.print(
        f"wrote {out}: {len(analysis.text):,} characters at {analysis.bits_per_char:.3f} bits/char{found}",
        markup=False,
    )
