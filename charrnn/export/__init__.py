"""Models that run outside charrnn: `charrnn export RUN --format onnx|web --out DIR`.

- onnx: `model.onnx` (a single-step graph, see onnx.py) and `tokenizer.json`, checked against
  the sampler with onnxruntime before anything reaches --out: the files are written to a
  staging folder beside it and moved in only when the check passes (`check=False` skips it).
- web: the same two files plus `index.html` and onnxruntime-web (vendored from npm, see
  scripts/vendor_js.py): a static page that samples in the browser.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CharRNNError
from .parity import SamplerParity, compare_with_sampler

if TYPE_CHECKING:
    from ..checkpoint import LoadedModel

FORMATS = ("onnx", "web")
CHECK_STEPS = 200  # greedy steps compared with the sampler after each export: well under a second


class ExportCheckFailed(CharRNNError):
    """The exported graph does not compute what charrnn's sampler computes."""


@dataclass
class ExportReport:
    out: Path
    files: dict[str, int] = field(default_factory=dict)  # relative path -> bytes
    parity: SamplerParity | None = None  # None: not checked (--no-check)

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


def export_run(target: Path | None, fmt: str, out: Path, force: bool = False, check: bool = True) -> ExportReport:
    """Export the checkpoint `target` (a file or run directory; None: the newest run) to `out`.
    With `check`, onnxruntime runs the graph beside charrnn's sampler first; when they differ
    (`SamplerParity.ok`), ExportCheckFailed is raised and nothing reaches `out`."""
    if fmt not in FORMATS:
        raise CharRNNError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    _check_out(Path(out), force)
    _require_extra()
    from ..checkpoint import load_model, resolve_checkpoint

    loaded = load_model(resolve_checkpoint(target))
    if fmt == "web" and loaded.tokenizer.kind != "char":
        raise CharRNNError(
            f"--format web supports character models only; this one uses a {loaded.tokenizer.kind} "
            "SentencePiece tokenizer, which has no small browser implementation: use --format onnx "
            "and a SentencePiece runtime (tokenizer.json carries the model)"
        )
    out = Path(out)
    report = ExportReport(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise CharRNNError(f"cannot write to {out}: {exc.strerror or exc}") from None
    try:
        _write_onnx(loaded, staging, report)
        if fmt == "web":
            from .web import write_web

            report.files.update(write_web(loaded, staging))
        if check:
            report.parity = compare_with_sampler(loaded.model, staging, CHECK_STEPS)
            if not report.parity.ok:
                raise ExportCheckFailed(
                    f"the exported graph does not match charrnn's sampler ({report.parity}); "
                    f"nothing was written to {out} (--no-check writes it unchecked)"
                )
        _move_into(staging, out, report.files)
    except OSError as exc:
        raise CharRNNError(f"cannot write to {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _move_into(staging: Path, out: Path, files: dict[str, int]) -> None:
    """Each checked file into `out` (renames on one file system), leaving the user's other files."""
    out.mkdir(exist_ok=True)
    for name in files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, out / name)


def _write_onnx(loaded: LoadedModel, out: Path, report: ExportReport) -> None:
    from ..atomic import write_atomic
    from .onnx import model_meta, onnx_bytes, tokenizer_json_text

    graph = onnx_bytes(loaded.model, model_meta(loaded.model, loaded.tokenizer))
    tokenizer = tokenizer_json_text(loaded.tokenizer).encode("utf-8")
    for name, data in (("model.onnx", graph), ("tokenizer.json", tokenizer)):
        write_atomic(out / name, data)
        report.files[name] = len(data)


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CharRNNError(f"--out {out} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise CharRNNError(f"--out {out} exists and is not empty (add --force to write into it)")


def _require_extra() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise CharRNNError(
            f"charrnn export needs {exc.name}: pip install 'charrnn[export]' (onnx and onnxruntime)"
        ) from None
