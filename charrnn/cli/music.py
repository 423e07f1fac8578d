"""`charrnn abc check|calibrate`: ABC tunes checked with music21 (the optional [music] extra)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..abc_check import DEFAULT_ALLOWANCE
from . import app, stderr, stdout

abc_app = typer.Typer(
    help="Check ABC tunes (needs the [music] extra: pip install 'charrnn[music]').", no_args_is_help=True
)
app.add_typer(abc_app, name="abc")


@abc_app.command("check")
def abc_check(
    file: Annotated[Path, typer.Argument(help="An ABC file of tunes separated by blank lines.")],
    midi: Annotated[
        Optional[Path], typer.Option("--midi", help="Write a .mid file for each valid tune into this directory.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of the table.")] = False,
    max_misfit_bars: Annotated[
        int, typer.Option("--max-misfit-bars", help="Bars per tune allowed not to fit the meter...")
    ] = DEFAULT_ALLOWANCE.bars,
    max_misfit_share: Annotated[
        float, typer.Option("--max-misfit-share", help="...or this share of its bars, where that is more.")
    ] = DEFAULT_ALLOWANCE.share,
) -> None:
    """For each tune: does it parse, has it a title, meter, key and notes, do its bars fit its meter?"""
    from ..abc_check import MisfitAllowance, check_abc_file

    summary = check_abc_file(file, midi, MisfitAllowance(max_misfit_bars, max_misfit_share))
    if as_json:
        stdout.print_json(json.dumps(summary.to_dict()))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table("#", "title", "parses", "T:", "M:", "K:", "notes", "bars", "valid", "problems")
    yes = {True: "yes", False: "no"}
    for r in summary.results:
        table.add_row(
            str(r.index),
            r.title[:30],
            yes[r.parses],
            yes[r.has_title],
            yes[r.has_meter],
            yes[r.has_key],
            yes[r.has_notes],
            "ok" if r.bars_ok else f"{len(r.bad_bars)} off" if r.parses else "-",
            Text("valid", style="green") if r.valid else Text("invalid", style="red"),
            "; ".join(r.problems()),
        )
    stdout.print(table)
    stdout.print(f"{summary.valid} of {summary.tunes} tunes valid ({summary.valid_share:.0%})")
    if midi is not None:
        written = sum(bool(r.midi) for r in summary.results)
        stderr.print(f"wrote {written} MIDI file(s) to {midi}/", markup=False)


@abc_app.command("calibrate")
def abc_calibrate(
    corpus: Annotated[str, typer.Argument(help="An ABC file, or the name of a ready corpus.")] = "folk-abc",
    sample: Annotated[int, typer.Option(help="How many real tunes to draw (each is also corrupted 3 ways).")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed of the draw and the corruptions.")] = 0,
) -> None:
    """Share of real tunes the checker passes and of corrupted copies it rejects, for several
    allowances of misfit bars, the default among them (JSON on stdout)."""
    from ..abc_check import calibrate
    from ..corpora import get_corpus
    from ..music import split_documents

    path = Path(corpus) if Path(corpus).exists() else get_corpus(corpus, log=lambda m: stderr.print(m, markup=False))
    tunes = split_documents(path.read_text(encoding="utf-8"))
    result = calibrate(tunes, sample, seed, progress=lambda m: stderr.print(m, markup=False))
    stdout.print_json(json.dumps(result))
