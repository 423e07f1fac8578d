"""The command line. Each command is a thin wrapper over a plain function of the package.

This package is the only place that prints, exits, or imports Typer and Rich; one module per
command group keeps each file readable. Known errors (`CharRNNError`, bad option values)
become one line on stderr and a non-zero exit code; anything else is a bug and keeps its
traceback. torch is imported inside commands, so `charrnn --help` stays fast.
"""

from __future__ import annotations

import gc

# Each module registers its commands on `app` (or a sub-app) when imported.
from . import bench, copies, corpus, evaluate, export, gradients, inspection, music, sample, serve, train  # noqa: E402,F401,I001
from .application import app


def main() -> None:
    try:
        app()
    finally:
        # The process ends next, and the interpreter's last collections over torch's objects took
        # 0.45 s of each command's exit (a --time-budget bounds a run to its process's exit). The
        # system takes the memory back without them; what they would skip is the finalizers of
        # objects in reference cycles, so a command closes every file it writes (with-blocks,
        # atomic.py) rather than leave one to the collector.
        gc.freeze()
