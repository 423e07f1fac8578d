"""`charrnn eval`: bits per character of held-out text under a trained model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..config import EVAL_PRECISIONS, TrainConfig
from .application import app, chosen_checkpoint, stderr
from .options import EXCLUDE, INCLUDE, Choice, choices, enum_of

if TYPE_CHECKING:  # Typer reads the enums built from config.py; mypy sees a Choice (see options.Choice)
    Device = Choice
    EvalPrecision = Choice
else:
    Device = choices(TrainConfig, "device", "Device")
    EvalPrecision = enum_of("EvalPrecision", EVAL_PRECISIONS)


@app.command("eval")
def eval_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or run directory.")],
    files: Annotated[
        list[Path], typer.Argument(help="Held-out text files (or directories, or ready corpus names) to score.")
    ],
    val: Annotated[
        bool,
        typer.Option("--val", help="Score only the validation part of each file, split as training split it."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON on stdout.")] = False,
    device: Annotated[Device, typer.Option(help="Where to run the model.")] = Device("auto"),
    precision: Annotated[
        Optional[EvalPrecision],
        typer.Option(
            help="Arithmetic [default: the checkpoint's validation precision where this device runs it, else fp32]."
        ),
    ] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the files.")] = "utf-8",
    include: Annotated[Optional[list[str]], INCLUDE] = None,
    exclude: Annotated[Optional[list[str]], EXCLUDE] = None,
) -> None:
    """Bits per character (and per token) of held-out text, hidden state carried through it."""
    from ..checkpoint import load_model
    from ..evaluation import evaluate_files
    from ..runtime import resolve_device, resolve_precision

    path = chosen_checkpoint(checkpoint)
    target = resolve_device(device.value)
    arithmetic = resolve_precision(precision.value, target)[0] if precision is not None else None
    loaded = load_model(path, target)
    scores, total = evaluate_files(
        loaded,
        files,
        validation_only=val,
        encoding=encoding,
        device=target,
        precision=arithmetic,
        include=include or (),
        exclude=exclude or (),
        log=lambda m: stderr.print(m, markup=False),
    )
    if as_json:
        out = {"checkpoint": str(path), "validation_only": val, "files": [s.to_dict() for s in scores]}
        out["total"] = total.to_dict()
        print(json.dumps(out, indent=2))
        return
    rows = scores + ([total] if len(scores) > 1 else [])
    width = max(len(s.source) for s in rows)
    for s in rows:
        print(
            f"{s.source:<{width}}  {s.bits_per_char:.4f} bits/char  {s.bits_per_token:.4f} bits/token  "
            f"({s.chars:,} chars, {s.tokens:,} tokens)"
        )
