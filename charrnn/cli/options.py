"""Command options declared from the settings dataclasses in config.py, which hold each
option's flag, default and help text: a command names the field, never repeats them."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional, cast

import typer

from ..config import option_field


def flag(cls: type, name: str) -> str:
    return option_field(cls, name).metadata.get("flag") or "--" + name.replace("_", "-")


def opt(cls: type, name: str, *, show_default_in_help: bool = False, **extra: Any) -> Any:
    """typer.Option for the field `name` of `cls`. `show_default_in_help`: for an option whose
    declared default is None (so that a resumed run can tell "not given"), say the real default."""
    field = option_field(cls, name)
    text = field.metadata["help"]
    if show_default_in_help:
        text = f"{text.rstrip('.')} [default: {field.default}]."
    return typer.Option(flag(cls, name), help=text, **extra)


def default(cls: type, name: str) -> Any:
    return option_field(cls, name).default


class Choice(str, Enum):
    """The base of every option's choices: a str Enum whose members `choices`/`enum_of` make.

    Typer reads a command's annotations when it runs, so a parameter is annotated with the enum
    built here; mypy cannot see members made at run time, so a module declares that name as
    `Choice` for the checker (`if TYPE_CHECKING: Device = Choice`, else the enum built here)."""


def choices(cls: type, name: str, enum_name: str) -> type[Choice]:
    """A str Enum of the field's choices (Typer shows them in --help and checks them)."""
    return enum_of(enum_name, option_field(cls, name).metadata["choices"])


def enum_of(enum_name: str, values: tuple[str, ...]) -> type[Choice]:
    members = [(v.replace("-", "_"), v) for v in values]
    return cast("type[Choice]", Enum(enum_name, members, type=Choice))


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

THREADS = typer.Option(
    "--threads",
    metavar="N",
    help="CPU threads for the math (torch's intra-op threads) [default: one per core]; fewer beside a busy program.",
    show_default=False,
)

# A checkpoint argument that may be left out (sample, info, visualize).
CheckpointArg = Annotated[
    Optional[Path],
    typer.Argument(help="Checkpoint file or run directory [default: the newest run under ./checkpoints]."),
]
