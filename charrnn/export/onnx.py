"""The single-step ONNX graph of a model and the tokenizer.json a runtime needs beside it.

The graph is `FastStepper.step` traced once, so it does exactly the sampler's math:
    tokens int64 (B,), h float32 (L, B, H) [, c (L, B, H) for an LSTM]
    -> logits float32 (B, V), h_out (L, B, H) [, c_out]
with the batch axis dynamic. It is exported with torch's TorchScript-based exporter
(`dynamo=False`): the dynamo exporter needs onnxscript, took ~7 s instead of ~0.2 s per tiny model
and, at opset 17, wrote a Split node onnxruntime rejects. The ops used (Gather, Gemm, Sigmoid,
Tanh, Relu, Mul, Add, Concat, Slice) run in every onnxruntime build, the wasm one included.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import warnings
from typing import Any

import torch

from ..model import RNNLanguageModel
from ..stepper import FastStepper
from ..tokenizers.char import Tokenizer

OPSET = 17
TOKENIZER_FORMAT = "charrnn-tokenizer"
TOKENIZER_VERSION = 1


def state_names(cell: str) -> tuple[list[str], list[str]]:
    """(input names, output names) of the graph for a cell type."""
    if cell == "lstm":
        return ["tokens", "h", "c"], ["logits", "h_out", "c_out"]
    return ["tokens", "h"], ["logits", "h_out"]


class SingleStep(torch.nn.Module):
    """`FastStepper.step` as a module with flat tensor inputs and outputs, for tracing."""

    def __init__(self, model: RNNLanguageModel):
        super().__init__()
        frozen = copy.deepcopy(model).float().eval().requires_grad_(False)  # constants, not parameters
        self.stepper = FastStepper(frozen)
        self.lstm = model.cell == "lstm"

    def forward(self, tokens: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if self.lstm:
            assert c is not None  # an LSTM's graph always has the cell state as an input
            logits, (h_out, c_out) = self.stepper.step(tokens, (h, c))
            return logits, h_out, c_out
        logits, h_out = self.stepper.step(tokens, h)
        assert isinstance(h_out, torch.Tensor)  # a GRU's or RNN's state is one tensor
        return logits, h_out


def onnx_bytes(model: RNNLanguageModel, meta: dict[str, str] | None = None) -> bytes:
    """The serialized single-step graph (`meta` goes into the model's metadata_props)."""
    import onnx

    step = SingleStep(model).cpu()
    inputs, outputs = state_names(model.cell)
    batch = 2  # any size: the batch axis is declared dynamic below
    zeros = torch.zeros(model.num_layers, batch, model.hidden_size)
    args = (torch.zeros(batch, dtype=torch.long), zeros) + ((zeros.clone(),) if model.cell == "lstm" else ())
    dynamic = {"tokens": {0: "batch"}, "logits": {0: "batch"}}
    dynamic.update({name: {1: "batch"} for name in inputs[1:] + outputs[1:]})
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy exporter warns that it is legacy, and about Python-level checks in step()
        # that tracing fixes once; neither changes the graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            step,
            args,
            buffer,  # type: ignore[arg-type]  # torch's annotation omits file objects, which export() writes to
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in (meta or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    data: bytes = proto.SerializeToString()
    return data


def model_meta(model: RNNLanguageModel, tokenizer: Tokenizer) -> dict[str, str]:
    """What a runtime needs to know about the graph, as ONNX metadata (string values)."""
    return {
        "producer": "charrnn",
        "cell": model.cell,
        "num_layers": str(model.num_layers),
        "hidden_size": str(model.hidden_size),
        "vocab_size": str(model.vocab_size),
        "tokenizer": tokenizer.kind,
    }


def tokenizer_json(tokenizer: Tokenizer) -> dict[str, Any]:
    """Everything a runtime outside charrnn needs to turn text into ids and ids into text."""
    head: dict[str, Any] = {
        "format": TOKENIZER_FORMAT,
        "version": TOKENIZER_VERSION,
        "kind": tokenizer.kind,
        "vocab_size": tokenizer.vocab_size,
    }
    if tokenizer.kind == "char":
        chars = list(tokenizer.decode(range(tokenizer.vocab_size)))
        return head | {
            "chars": chars,
            "encoding": "one id per Unicode code point: its index in chars",
            "decoding": "chars[id] for each id, concatenated",
        }
    from ..tokenizers.subword import SPACE

    _, model_proto = tokenizer.to_state()
    ids = range(tokenizer.vocab_size)
    return head | {
        "pieces": tokenizer.pieces(ids),  # type: ignore[attr-defined]
        "piece_bytes_hex": [b.hex() for b in tokenizer.piece_bytes()],  # type: ignore[attr-defined]
        "sentencepiece_model": base64.b64encode(model_proto or b"").decode("ascii"),
        "encoding": (
            "SentencePiece encode with sentencepiece_model as given (its normalizer is identity, no dummy "
            f"prefix, byte fallback); a literal {SPACE} (U+2581) in the text is encoded as the byte pieces "
            "<0xE2> <0x96> <0x81>, the text between such characters with SentencePiece"
        ),
        "decoding": "piece_bytes_hex of each id, concatenated, decoded as UTF-8 (invalid bytes become U+FFFD)",
    }


def tokenizer_json_text(tokenizer: Tokenizer) -> str:
    # ASCII-only JSON: lone surrogates and control characters survive any file encoding.
    return json.dumps(tokenizer_json(tokenizer), ensure_ascii=True, indent=1) + "\n"
