"""`--format web`: a static folder that samples in the browser.

    index.html            the page (page.html with the model's facts filled in)
    model.onnx            the single-step graph (written by the onnx export)
    tokenizer.json        the characters in id order
    ort/                  onnxruntime-web's ES-module bundle, its SIMD wasm build and LICENSE

Nothing is fetched from elsewhere at run time, so the folder works offline from any static host.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..checkpoint import LoadedModel
from ..errors import CharRNNError
from .onnx import state_names

RUNTIME_DIR = "ort"
RUNTIME_MODULE = "ort.wasm.bundle.min.mjs"


def vendored_runtime() -> dict[str, bytes]:
    """onnxruntime-web's files as shipped in this package (scripts/vendor_js.py refreshes them)."""
    folder = resources.files("charrnn.export").joinpath("vendor", "onnxruntime-web")
    files = {entry.name: entry.read_bytes() for entry in folder.iterdir() if entry.is_file()}
    if not any(name.endswith(".wasm") for name in files):
        # The wasm is fetched from npm by `make vendor` (it is too large for git): a checkout
        # installed without it cannot write a page that runs.
        raise CharRNNError(
            "this install lacks onnxruntime-web's wasm: run `make vendor` "
            "(python scripts/vendor_js.py onnxruntime-web) in the checkout, then reinstall"
        )
    return files


def page_config(loaded: LoadedModel) -> dict[str, Any]:
    model = loaded.model
    inputs, outputs = state_names(model.cell)
    return {
        "runtime": f"./{RUNTIME_DIR}/{RUNTIME_MODULE}",
        "model": "./model.onnx",
        "tokenizer": "./tokenizer.json",
        "cell": model.cell,
        "num_layers": model.num_layers,
        "hidden_size": model.hidden_size,
        "state_inputs": inputs[1:],
        "state_outputs": outputs[1:],
    }


def render_page(loaded: LoadedModel) -> str:
    template = resources.files("charrnn.export").joinpath("page.html").read_text(encoding="utf-8")
    model = loaded.model
    title = loaded.path.parent.name or "charrnn model"
    step = loaded.meta.get("step")
    about = (
        f"{model.cell.upper()}, {model.num_layers} layer{'s' if model.num_layers > 1 else ''} of {model.hidden_size}, "
        f"{model.vocab_size} characters" + (f", trained {step} steps" if isinstance(step, int) else "")
    )
    # Inside <script>, "<" as \u003c keeps "</script>" or "<!--" in a value from ending the element.
    config = json.dumps(page_config(loaded), ensure_ascii=True).replace("<", "\\u003c")
    # __CONFIG__ last: the escaped title and text cannot introduce a marker it would then replace.
    return (
        template.replace("__TITLE__", html.escape(title))
        .replace("__ABOUT__", html.escape(about))
        .replace("__CONFIG__", config)
    )


def write_web(loaded: LoadedModel, out: Path) -> dict[str, int]:
    """The page and the runtime, beside model.onnx and tokenizer.json in `out`; {path: bytes}."""
    written: dict[str, int] = {}
    page = render_page(loaded).encode("utf-8")
    write_atomic(out / "index.html", page)
    written["index.html"] = len(page)
    (out / RUNTIME_DIR).mkdir(exist_ok=True)
    for name, data in vendored_runtime().items():
        write_atomic(out / RUNTIME_DIR / name, data, durable=False)
        written[f"{RUNTIME_DIR}/{name}"] = len(data)
    return written
