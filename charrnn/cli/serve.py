"""`charrnn serve`: the local web playground and HTTP API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import ServeConfig
from .application import app, stderr
from .options import default, opt

S = ServeConfig


@app.command()
def serve(
    target: Annotated[
        Optional[Path],
        typer.Argument(help="A directory of runs, one run directory, or one checkpoint [default: ./checkpoints]."),
    ] = None,
    host: Annotated[str, opt(S, "host")] = default(S, "host"),
    port: Annotated[int, opt(S, "port")] = default(S, "port"),
    workers: Annotated[int, opt(S, "workers")] = default(S, "workers"),
    queue: Annotated[int, opt(S, "queue")] = default(S, "queue"),
    max_models: Annotated[int, opt(S, "max_models")] = default(S, "max_models"),
    max_length: Annotated[int, opt(S, "max_length")] = default(S, "max_length"),
) -> None:
    """A local web page and HTTP API to sample from trained models and hear their tunes (needs charrnn[serve])."""
    cfg = ServeConfig(host=host, port=port, workers=workers, queue=queue, max_models=max_models, max_length=max_length)
    # The [serve] extra, checked before anything is printed (a missing one is one line: cli/application.py).
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401

    from ..serve.server import build_app, is_loopback, open_socket, run, url_of

    application = build_app(target if target is not None else Path("checkpoints"), cfg)
    registry = application.state.registry
    sock = open_socket(cfg.host, cfg.port)
    if not is_loopback(cfg.host):
        from rich.text import Text

        stderr.print(
            Text.assemble(
                ("warning:", "bold red"),
                f" listening on {cfg.host}, beyond this computer: anyone who can reach it can use the models "
                "and this machine's CPU (there is no password)",
            )
        )
    count = len(registry.scan())
    stderr.print(f"serving {count} model{'s' if count != 1 else ''} from {registry.root}")
    stderr.print(f"open {url_of(sock)}  (Ctrl-C stops)")
    run(application, sock)
