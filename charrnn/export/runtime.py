"""Sampling from an exported folder with onnxruntime alone: no torch, no checkpoint.

This is what any runtime does with `model.onnx` and `tokenizer.json`, written in Python; the web
page does the same in JavaScript. It checks exports (greedy text equals `charrnn sample --temp 0`)
and shows how to use one. It imports nothing else of charrnn, so it can be copied beside an export,
and it runs as a command of its own (the one module outside charrnn/cli that prints, for that reason):

    python -m charrnn.export.runtime EXPORT_DIR [--prime TEXT] [--length N] [--temp T] [--seed S]
"""

from __future__ import annotations

import argparse
import base64
import codecs
import json
import sys
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

SPACE = "\u2581"  # SentencePiece's visible space: in text it is encoded as its UTF-8 bytes


class PieceDecoder(Protocol):
    """What `ExportedTokenizer.decoder()` gives: `decode(token_bytes(id))` -> the text now whole."""

    def decode(self, piece: Any, /, final: bool = False) -> str: ...


class ExportedTokenizer:
    """Text <-> ids from a tokenizer.json."""

    def __init__(self, spec: dict[str, Any]):
        self.kind = spec["kind"]
        self.vocab_size = int(spec["vocab_size"])
        if self.kind == "char":
            self.chars: list[str] = list(spec["chars"])
            self.index = {c: i for i, c in enumerate(self.chars)}
        else:
            import sentencepiece as spm

            self.sp = spm.SentencePieceProcessor(model_proto=base64.b64decode(spec["sentencepiece_model"]))
            self.piece_bytes = [bytes.fromhex(h) for h in spec["piece_bytes_hex"]]
            self.space_ids = [self.sp.piece_to_id(f"<0x{b:02X}>") for b in SPACE.encode("utf-8")]

    def encode(self, text: str) -> list[int]:
        if self.kind == "char":
            unknown = sorted(set(text) - self.index.keys())
            if unknown:
                raise ValueError(f"characters the model never saw: {unknown[:10]}")
            return [self.index[c] for c in text]
        ids: list[int] = []
        for k, segment in enumerate(text.split(SPACE)):
            if k:
                ids.extend(self.space_ids)
            if segment:
                ids.extend(self.sp.encode(segment, out_type=int))
        return ids

    def decoder(self) -> PieceDecoder:
        """Feed ids one at a time (`decode(piece_bytes)`), get text as soon as it is whole."""
        if self.kind == "char":
            return _CharDecoder()
        return codecs.getincrementaldecoder("utf-8")(errors="replace")

    def token_bytes(self, token: int) -> bytes | str:
        return self.chars[token] if self.kind == "char" else self.piece_bytes[token]

    def start_ids(self, prime: str) -> list[int]:
        """The ids to condition on: the prime's, else a newline's (a line start), else id 0."""
        if prime:
            return self.encode(prime)
        if self.kind != "char" or "\n" in self.index:
            return self.encode("\n")[-1:]
        return [0]


class _CharDecoder:
    """Char models: an id is a character already."""

    def decode(self, piece: str | bytes, final: bool = False) -> str:
        return piece if isinstance(piece, str) else ""


class OnnxSampler:
    """Runs an exported folder's single-step graph one token at a time."""

    def __init__(self, folder: Path):
        import onnxruntime as ort

        folder = Path(folder)
        spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        self.tokenizer = ExportedTokenizer(spec)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # a step is a few small matmuls: threads only add waiting
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self.state_names = [i.name for i in self.session.get_inputs()][1:]  # h [, c]
        layers, _, hidden = self.session.get_inputs()[1].shape  # (L, batch, H)
        self.state_shape = (int(layers), int(hidden))

    def zero_state(self, batch: int = 1) -> list[np.ndarray]:
        layers, hidden = self.state_shape
        return [np.zeros((layers, batch, hidden), np.float32) for _ in self.state_names]

    def step(self, tokens: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """tokens (B,) -> logits (B, V), new state."""
        feeds = {"tokens": np.asarray(tokens, dtype=np.int64)} | dict(zip(self.state_names, state))
        logits, *new_state = self.session.run(None, feeds)
        return logits, new_state

    def generate(self, prime: str = "", length: int = 100, temperature: float = 0.0, seed: int = 0) -> Iterator[str]:
        """The prime, then `length` new characters; temperature 0 is argmax (ties to the lowest id)."""
        if prime:
            yield prime
        rng = np.random.default_rng(seed)
        state = self.zero_state()
        for token in self.tokenizer.start_ids(prime):
            logits, state = self.step(np.array([token]), state)
        decoder = self.tokenizer.decoder()
        produced = 0
        while produced < length:
            token = choose(logits[0], temperature, rng)
            piece = decoder.decode(self.tokenizer.token_bytes(token))[: length - produced]
            produced += len(piece)
            if piece:
                yield piece
            if produced >= length:
                break
            logits, state = self.step(np.array([token]), state)
        rest = decoder.decode(b"", final=True)[: length - produced]
        if rest:
            yield rest


def choose(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """logits (V,) -> an id: argmax at temperature 0, else a draw from softmax(logits / temperature)."""
    if temperature == 0:
        return int(np.argmax(logits))  # the first maximum, as torch.argmax on CPU
    scaled = (logits.astype(np.float64) - logits.max()) / temperature
    probs = np.exp(scaled)
    return int(rng.choice(len(probs), p=probs / probs.sum()))


def main(argv: list[str] | None = None) -> int:
    """Sample from an exported folder on stdout; a bad folder or option is one line on stderr, exit 1."""
    parser = argparse.ArgumentParser(prog="python -m charrnn.export.runtime", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a folder written by `charrnn export` (model.onnx, tokenizer.json)")
    parser.add_argument("--prime", default="", help="text to start from [default: none]")
    parser.add_argument("--length", type=int, default=500, help="characters to generate [default: 500]")
    parser.add_argument("--temp", type=float, default=0.8, help="temperature; 0 is greedy [default: 0.8]")
    parser.add_argument("--seed", type=int, default=0, help="random seed [default: 0]")
    args = parser.parse_args(argv)
    if args.length < 1 or args.temp < 0:
        return _fail(f"--length must be >= 1 and --temp >= 0 (got {args.length}, {args.temp})")
    try:
        sampler = OnnxSampler(args.folder)
    except FileNotFoundError as exc:
        return _fail(f"{args.folder} is not an exported folder: no {Path(exc.filename or '?').name}")
    except Exception as exc:  # onnxruntime's own kinds (InvalidProtobuf, ...) share no narrower base
        return _fail(f"cannot load {args.folder}: {' '.join(str(exc).split())}")
    try:
        for piece in sampler.generate(args.prime, length=args.length, temperature=args.temp, seed=args.seed):
            sys.stdout.write(piece)
    except ValueError as exc:  # a prime with characters the model never saw
        return _fail(str(exc))
    sys.stdout.write("\n")
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
