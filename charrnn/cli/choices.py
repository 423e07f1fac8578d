"""Option choices and options shared by several commands (Typer shows them in --help and validates them)."""

from __future__ import annotations

from enum import Enum

import typer


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


# Options shared by the commands that read a directory as a corpus (train, eval).
INCLUDE = typer.Option(
    "--include",
    metavar="GLOB",
    help="In a directory, read only files whose path or name matches GLOB (repeatable), e.g. '*.py'.",
)
EXCLUDE = typer.Option(
    "--exclude",
    metavar="GLOB",
    help="In a directory, leave out files and folders whose path or name matches GLOB (repeatable).",
)
