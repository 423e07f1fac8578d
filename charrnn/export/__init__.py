"""Models that run outside charrnn: `charrnn export RUN --format onnx|web --out DIR`.

- onnx: `model.onnx` (a single-step graph, see onnx.py) and `tokenizer.json`, checked against
  the sampler with onnxruntime before the command returns.
- web: the same two files plus `index.html` and onnxruntime-web (vendored from npm, see
  scripts/vendor_js.py): a static page that samples in the browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CharRNNError

FORMATS = ("onnx", "web")
CHECK_STEPS = 200  # greedy steps compared with the sampler after each export: well under a second


@dataclass
class ExportReport:
    out: Path
    files: dict[str, int] = field(default_factory=dict)  # relative path -> bytes
    max_logit_diff: float = 0.0  # onnxruntime vs charrnn's sampler, over CHECK_STEPS greedy steps
    argmax_disagreements: int = 0
    check_steps: int = CHECK_STEPS

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


def export_run(target: Path | None, fmt: str, out: Path, force: bool = False) -> ExportReport:
    """Export the checkpoint `target` (a file or run directory; None: the newest run) to `out`."""
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
    try:
        out.mkdir(parents=True, exist_ok=True)
        report = ExportReport(out)
        _write_onnx(loaded, out, report)
        if fmt == "web":
            from .web import write_web

            report.files.update(write_web(loaded, out))
    except OSError as exc:
        raise CharRNNError(f"cannot write to {out}: {exc.strerror or exc}") from None
    from .onnx import compare_with_sampler

    report.max_logit_diff, report.argmax_disagreements = compare_with_sampler(loaded.model, out, CHECK_STEPS)
    return report


def _write_onnx(loaded, out: Path, report: ExportReport) -> None:
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
