"""`charrnn corpus list|get`: the catalogue of ready corpora."""

from __future__ import annotations

from typing import Annotated

import typer

from .application import app, stderr, stdout

corpus_app = typer.Typer(help="List and fetch ready corpora.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")


@corpus_app.command("list")
def corpus_list() -> None:
    """Show the ready corpora and whether each is already here."""
    from rich.table import Table

    from ..data.corpora import catalogue, corpus_size, corpus_status

    table = Table("name", "description", "size", "status")
    for name, entry in sorted(catalogue().items()):
        table.add_row(name, entry.get("description", ""), corpus_size(name), corpus_status(name))
    stdout.print(table)


@corpus_app.command("get")
def corpus_get(name: Annotated[str, typer.Argument(help="A name from `charrnn corpus list`.")]) -> None:
    """Materialise corpora/NAME.txt (from a local mirror, the network, or an offline builder)."""
    from ..data.corpora import get_corpus

    path = get_corpus(name, log=lambda m: stderr.print(m, markup=False))
    size = path.stat().st_size
    stderr.print(f"{name}: {path} ({size / 1e6:.1f} MB)")
