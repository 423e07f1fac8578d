"""`charrnn export`: a model that runs outside charrnn (ONNX, or a static web page)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .application import app, chosen_checkpoint, stderr


class ExportFormat(str, Enum):
    onnx = "onnx"
    web = "web"


@app.command("export")
def export_command(
    checkpoint: Annotated[
        Optional[Path],
        typer.Argument(help="Checkpoint file or run directory [default: the newest run under ./checkpoints]."),
    ] = None,
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format", help="onnx: model.onnx + tokenizer.json; web: those plus index.html and onnxruntime-web."
        ),
    ] = ExportFormat.onnx,
    out: Annotated[Path, typer.Option("--out", help="Folder to write (created; must be empty unless --force).")] = Path(
        "export"
    ),
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty --out folder.")] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check/--no-check",
            help="Run the graph in onnxruntime beside charrnn's sampler first; write nothing when they differ.",
        ),
    ] = True,
) -> None:
    """Write a model that runs without charrnn: ONNX, or a page that samples in a browser (needs charrnn[export])."""
    from ..export import export_run

    report = export_run(chosen_checkpoint(checkpoint), fmt.value, out, force=force, check=check)
    for name, size in sorted(report.files.items()):
        stderr.print(f"  {name:<40} {size / 1e6:8.2f} MB", markup=False)
    stderr.print(f"wrote {report.out} ({report.total_bytes / 1e6:.1f} MB)", markup=False)
    if report.parity is None:
        stderr.print("not checked against charrnn's sampler (--no-check)", markup=False)
    else:
        stderr.print(f"checked: onnxruntime vs charrnn's sampler {report.parity}", markup=False)
    if fmt is ExportFormat.web:
        stderr.print(
            f"serve it: python -m http.server -d {report.out}  (then open http://127.0.0.1:8000)", markup=False
        )
