"""`charrnn visualize`: one self-contained HTML page showing what a model makes of a text.

The model reads the text one token at a time (`FastStepper`, the sampler's single-step path),
and for every token we keep: its surprise in bits (-log2 of the probability the model gave
it), the model's top guesses for the token after it, and the hidden units of one layer (for
an LSTM also its cells, as tanh(c), the view of Karpathy et al. 2015). Token figures are
spread over the token's characters, so every tokenizer is shown the same way: characters.

The page proposes the units that best track simple properties of the text (inside quotes or
brackets, position in the line, ...) by the correlation of their activation with each one.
Everything, data included, is inlined in the page: it opens offline.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .checkpoint import LoadedModel
from .errors import ConfigError, CorpusError
from .evaluation import LN2, start_context
from .sample import tuned_stepper
from .tokenizers.char import Tokenizer

TOP_GUESSES = 5
PROPOSALS_PER_FEATURE = 2
STRUCTURAL = ("inside double quotes", "inside brackets", "position in the line")


@dataclass
class Track:
    """Activations of one kind of unit over the tokens: (N tokens, U units)."""

    name: str  # "h" (hidden output) or "c" (LSTM cell, as tanh(c))
    values: np.ndarray  # (N, U) float32


@dataclass
class Proposal:
    feature: str  # what the unit seems to track, in words
    track: str
    unit: int
    r: float  # Pearson correlation of the unit with the feature over the characters


@dataclass
class Analysis:
    text: str  # the characters shown: the concatenated text of the tokens
    char_token: np.ndarray  # (C,) index of the token each character belongs to
    token_bits: np.ndarray  # (N,) surprise of each token, bits
    guesses: list[list[tuple[str, float]]]  # per token: the model's top guesses for the next token
    tracks: list[Track]
    layer: int  # 1-based
    proposals: list[Proposal] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # characters left out: not in the vocabulary

    @property
    def char_bits(self) -> np.ndarray:
        """(C,) each character's share of its token's surprise (a token's bits split evenly)."""
        counts = np.bincount(self.char_token, minlength=len(self.token_bits))
        shares: np.ndarray = self.token_bits[self.char_token] / np.maximum(counts[self.char_token], 1)
        return shares

    @property
    def bits_per_char(self) -> float:
        return float(self.token_bits.sum() / max(len(self.text), 1))


@torch.inference_mode()
def analyze(loaded: LoadedModel, text: str, *, layer: int | None = None, max_chars: int = 2000) -> Analysis:
    """Run the model over `text` (cut to `max_chars`, unknown characters left out)."""
    model, tokenizer = loaded.model, loaded.tokenizer
    layers = model.num_layers
    layer = layers if layer is None else layer
    if not 1 <= layer <= layers:
        raise ConfigError(f"--layer must be between 1 and {layers} (got {layer})")
    dropped = tokenizer.unknown_chars(text)
    if dropped:
        bad = set(dropped)
        text = "".join(c for c in text if c not in bad)
    text = text[:max_chars]
    if not text.strip():
        raise CorpusError("no text to visualize (empty, or nothing the model knows)")
    ids = [int(i) for i in tokenizer.encode(text)]
    if any(p.device.type != "cpu" for p in model.parameters()):
        model.cpu()  # only when needed: .cpu() rebuilds an RNN's flat weights, which a model shared
        # between threads (charrnn serve) may be reading at that moment
    model.eval()
    stepper = tuned_stepper(model, streams=1)
    state = stepper.init_state(1)
    context = start_context(tokenizer)
    logits, state = stepper.step(torch.tensor([0 if context is None else context]), state)
    decoder = tokenizer.stream_decoder()
    piece_of: dict[int, str] = {}
    n = len(ids)
    bits = np.zeros(n, dtype=np.float64)
    h_vals = np.zeros((n, model.hidden_size), dtype=np.float32)
    c_vals = np.zeros((n, model.hidden_size), dtype=np.float32) if model.cell == "lstm" else None
    guesses: list[list[tuple[str, float]]] = []
    chars: list[str] = []
    owner: list[int] = []
    for t, token in enumerate(ids):
        log_probs = torch.log_softmax(logits[0].float(), dim=-1)  # (V,)
        bits[t] = -float(log_probs[token]) / LN2
        piece = decoder.feed(token)
        chars.append(piece)
        owner.extend([t] * len(piece))
        logits, state = stepper.step(torch.tensor([token]), state)
        if isinstance(state, tuple):  # an LSTM's (h, c); c_vals is there for it
            h_vals[t] = state[0][layer - 1, 0].numpy()
            if c_vals is not None:
                c_vals[t] = torch.tanh(state[1][layer - 1, 0]).numpy()
        else:
            h_vals[t] = state[layer - 1, 0].numpy()
        probs = torch.softmax(logits[0].float(), dim=-1)
        top = torch.topk(probs, min(TOP_GUESSES, probs.shape[0]))
        guesses.append(
            [(_piece(tokenizer, piece_of, int(i)), round(float(p), 4)) for p, i in zip(top.values, top.indices)]
        )
    rest = decoder.flush()
    chars.append(rest)
    owner.extend([n - 1] * len(rest))
    tracks = [Track("h", h_vals)] + ([Track("c", c_vals)] if c_vals is not None else [])
    shown = "".join(chars)
    result = Analysis(shown, np.asarray(owner, dtype=np.int64), bits, guesses, tracks, layer, dropped=dropped)
    result.proposals = propose_units(result)
    return result


def _piece(tokenizer: Tokenizer, cache: dict[int, str], token: int) -> str:
    """The text of one token on its own (a partial UTF-8 byte shows as a replacement mark)."""
    if token not in cache:
        decoder = tokenizer.stream_decoder()
        cache[token] = decoder.feed(token) + decoder.flush()
    return cache[token]


# ----------------------------------------------------------------------------- interpretable units


def text_features(text: str) -> dict[str, np.ndarray]:
    """Simple properties of every character (the state after reading it) that a unit may track."""
    n = len(text)
    feats: dict[str, np.ndarray] = {}
    quote = np.zeros(n)
    bracket = np.zeros(n)
    col = np.zeros(n)
    word_pos = np.zeros(n)
    inside, depth, column, in_word = False, 0, 0, 0
    for i, ch in enumerate(text):
        if ch == '"':
            inside = not inside
        depth = depth + 1 if ch in "([{" else max(depth - 1, 0) if ch in ")]}" else depth
        column = 0 if ch == "\n" else column + 1
        in_word = in_word + 1 if ch.isalpha() else 0
        quote[i], bracket[i], col[i], word_pos[i] = inside, depth > 0, column, in_word
    feats["inside double quotes"] = quote
    feats["inside brackets"] = bracket
    feats["position in the line"] = col
    feats["position in the word"] = word_pos
    feats["inside a word"] = np.fromiter((c.isalpha() for c in text), dtype=np.float64, count=n)
    feats["upper-case letter"] = np.fromiter((c.isupper() for c in text), dtype=np.float64, count=n)
    feats["space or line end"] = np.fromiter((c.isspace() for c in text), dtype=np.float64, count=n)
    feats["punctuation"] = np.fromiter((not c.isalnum() and not c.isspace() for c in text), dtype=np.float64, count=n)
    # A feature that is (almost) constant over this text says nothing about any unit.
    return {k: v for k, v in feats.items() if (v > 0).sum() >= 2 and (v == 0).sum() >= 1}


def propose_units(analysis: Analysis) -> list[Proposal]:
    """For each text feature, the units whose activation (per character) correlates best with it."""
    feats = text_features(analysis.text)
    proposals = []
    for name, f in feats.items():
        fz = (f - f.mean()) / f.std()
        candidates = []
        for track in analysis.tracks:
            acts = track.values[analysis.char_token].astype(np.float64)  # (C, U)
            std = acts.std(axis=0)
            r = ((acts - acts.mean(axis=0)) * fz[:, None]).mean(axis=0) / np.where(std > 1e-8, std, np.inf)
            for unit in np.argsort(-np.abs(r))[:PROPOSALS_PER_FEATURE]:
                candidates.append(Proposal(name, track.name, int(unit), float(r[unit])))
        candidates.sort(key=lambda p: -abs(p.r))
        proposals.extend(candidates[:PROPOSALS_PER_FEATURE])
    # Long-range structure first (the page selects the first proposal): a unit that counts along the
    # line or remembers an open quote says more about the model than one that spots letters.
    proposals.sort(key=lambda p: (not (p.feature in STRUCTURAL and abs(p.r) >= 0.3), -abs(p.r)))
    return proposals


# ----------------------------------------------------------------------------- the page


def _int8_track(values: np.ndarray) -> tuple[str, list[float]]:
    """(N, U) floats -> base64 of int8 unit-major (U, N) and each unit's scale: ~1 byte per value,
    so a few thousand characters of a 512-unit LSTM stay a few MB."""
    scale = np.abs(values).max(axis=0)  # (U,)
    scale = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.round(values / scale * 127), -127, 127).astype(np.int8).T.copy()  # (U, N)
    return base64.b64encode(q.tobytes()).decode("ascii"), [round(float(s), 4) for s in scale]


def page_data(analysis: Analysis, loaded: LoadedModel, title: str) -> dict[str, Any]:
    cfg = loaded.meta.get("model", {})
    tok = loaded.tokenizer
    tracks = []
    for track in analysis.tracks:
        data, scale = _int8_track(track.values)
        tracks.append({"name": track.name, "units": int(track.values.shape[1]), "scale": scale, "data": data})
    return {
        "title": title,
        "model": f"{cfg.get('cell')} {cfg.get('num_layers')}x{cfg.get('hidden_size')}, {tok.kind} vocabulary of "
        f"{tok.vocab_size}, step {loaded.meta.get('step')}, corpus {loaded.meta.get('corpus')}",
        "layer": analysis.layer,
        "layers": int(cfg.get("num_layers") or 1),
        "bpc": round(analysis.bits_per_char, 4),
        "text": analysis.text,
        "charToken": analysis.char_token.tolist(),
        "charBits": [round(float(b), 3) for b in analysis.char_bits],
        "tokenBits": [round(float(b), 3) for b in analysis.token_bits],
        "guesses": analysis.guesses,
        "tracks": tracks,
        "proposals": [p.__dict__ | {"r": round(p.r, 3)} for p in analysis.proposals],
    }


# Characters escaped in the JSON data block: "<" and ">" so that no "</script>" or "<!--" can end or
# bend the <script> element, "&" for good measure, and U+2028/U+2029, which older JavaScript parsers
# read as line ends. Each escape is the same JSON string, so JSON.parse gives back the exact text.
_JSON_IN_SCRIPT = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)
_PLACEHOLDER = re.compile(r"__(TITLE|DATA)__")


def render_page(data: dict[str, Any]) -> str:
    """The page with its two placeholders filled in one pass (a value that itself contains a
    placeholder's name stays as it is), each escaped for where it lands: the title as HTML text,
    the data as JSON inside a <script> element."""
    template = resources.files("charrnn").joinpath("visualize_page.html").read_text(encoding="utf-8")
    values = {
        "TITLE": html.escape(str(data["title"]), quote=True),
        "DATA": json.dumps(data, ensure_ascii=False, separators=(",", ":")).translate(_JSON_IN_SCRIPT),
    }
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def write_visualization(
    loaded: LoadedModel,
    text: str,
    out: Path,
    *,
    title: str = "charrnn",
    layer: int | None = None,
    max_chars: int = 2000,
    log: Callable[[str], None] = lambda _: None,
) -> Analysis:
    """Analyze `text` and write the page to `out`."""
    analysis = analyze(loaded, text, layer=layer, max_chars=max_chars)
    if analysis.dropped:
        log(f"note: left out {len(analysis.dropped)} character kind(s) the model never saw")
    html = render_page(page_data(analysis, loaded, title))
    try:
        Path(out).write_text(html, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror or exc}") from None
    return analysis
