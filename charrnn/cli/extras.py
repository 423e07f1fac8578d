"""The optional extras of pyproject.toml: the modules each one brings, and the one line that says
which extra to install when a command finds one of them missing (the CLI prints it)."""

from __future__ import annotations

EXTRAS = {
    "serve": ("starlette", "uvicorn"),
    "music": ("music21",),
    "plot": ("matplotlib",),
    "export": ("onnx", "onnxruntime"),
    "tensorboard": ("tensorboard",),
}


def extra_of(module: str | None) -> str | None:
    """The extra that brings `module` (a dotted name; its top package counts), or None."""
    top = (module or "").split(".")[0]
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)


def missing_extra_message(module: str | None, what: str = "this command") -> str | None:
    """'<what> needs the [extra] extra (<module> is missing): pip install ...', or None when no
    extra brings `module` (then a missing module is a broken install, not a missing extra)."""
    extra = extra_of(module)
    if extra is None:
        return None
    top = (module or "").split(".")[0]
    return f"{what} needs the [{extra}] extra ({top} is missing): pip install 'charrnn[{extra}]'"
