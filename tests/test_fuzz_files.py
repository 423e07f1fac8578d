"""Crafted files through the CLI: damaged and re-signed checkpoints, texts, ABC tunes and
SentencePiece models. Every one gives an answer or one `error:` line, never a traceback."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from conftest import TINY_TEXT
from fuzzing import FUZZ, check_one_line, fast_cli  # noqa: F401 (fast_cli: autouse)
from fuzzing import signed_checkpoint as signed
from hypothesis import example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from charrnn.checkpoint import load_checkpoint
from charrnn.cli import app


def invoke(*args) -> object:
    result = CliRunner().invoke(app, [str(a) for a in args])
    check_one_line(result)
    return result


class Real(tuple):
    """The tiny run's best checkpoint: (bytes, tensors, metadata); short in a failure report."""

    def __repr__(self) -> str:
        return "<the tiny run's best checkpoint>"


@pytest.fixture(scope="module")
def real(tiny_run) -> Real:
    path = tiny_run / "best.safetensors"
    tensors, meta = load_checkpoint(path)
    return Real((path.read_bytes(), tensors, meta))


def split(data: bytes) -> tuple[dict, bytes]:
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def join(header: dict | str, body: bytes) -> bytes:
    raw = (header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", len(raw)) + raw + body


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)

# ----------------------------------------------------------------------------- raw bytes


@settings(FUZZ, max_examples=400)
@example(edits=[], cut=0, extra=struct.pack("<Q", 100_000) + b"[" * 100_000)  # [[[[... (RecursionError)
@example(edits=[(0, 255), (1, 255), (2, 255), (3, 255), (4, 255), (5, 255), (6, 255), (7, 127)], cut=None, extra=b"")
@given(
    edits=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=4),
    cut=st.none() | st.integers(0, 3000),
    extra=st.binary(max_size=16),
)
def test_damaged_checkpoint_bytes(real, edits, cut, extra):
    data = bytearray(real[0])
    for at, value in edits:  # the header and the start of the tensor data
        data[at % len(data)] = value
    data = bytes(data[:cut]) + extra if cut is not None else bytes(data) + extra
    Path("c.safetensors").write_bytes(data)
    result = invoke("info", "c.safetensors")
    if edits or cut is not None or extra:
        assert result.exit_code != 0 or bytes(data) == real[0]


@settings(FUZZ, max_examples=250)
@example(tensor_field="data_offsets", value=[0, 2**64], which=0)
@example(tensor_field="shape", value=[-1], which=0)
@example(tensor_field="dtype", value="F8_E8M0", which=0)
@given(
    tensor_field=st.sampled_from(["data_offsets", "shape", "dtype", None]),
    value=json_values | st.lists(st.integers(-(2**65), 2**65), max_size=3),
    which=st.integers(0, 100),
)
def test_crafted_safetensors_header(real, tensor_field, value, which):
    header, body = split(real[0])
    names = sorted(k for k in header if k != "__metadata__")
    name = names[which % len(names)]
    if tensor_field is None:
        header[name] = value
    else:
        header[name][tensor_field] = value
    Path("c.safetensors").write_bytes(join(header, body))
    invoke("info", "c.safetensors")


# ----------------------------------------------------------------------------- re-signed metadata


def _mutate(meta: dict, path: list[str], value, delete: bool) -> dict:
    meta = json.loads(json.dumps(meta))
    node = meta
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            break
        node = node[key]
    else:
        if delete:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
        return meta
    node[path[-1]] = value
    return meta


def _meta_paths(meta: dict) -> list[list[str]]:
    paths = []
    for key, value in meta.items():
        paths.append([key])
        if isinstance(value, dict):
            paths += [[key, sub] for sub in value]
    return sorted(paths)


# Sizes far past any machine (2**40 layers) must be refused from the file, never allocated.
huge_integers = st.integers(-(2**65), 2**65) | st.sampled_from([2**31, 2**40, 2**63, -(2**63)])
metadata_edits = st.tuples(st.integers(0, 10_000), json_values | huge_integers, st.booleans())


def _crafted_meta(real, edits) -> bytes:
    _, tensors, meta = real
    paths = _meta_paths(meta)
    for index, value, delete in edits:
        meta = _mutate(meta, paths[index % len(paths)], value, delete)
    return signed(tensors, json.dumps(meta))


@settings(FUZZ, max_examples=400)
@example(edits=[(0, "x", False)])
@given(edits=st.lists(metadata_edits, min_size=1, max_size=3))
def test_info_of_crafted_metadata(real, edits):
    Path("c.safetensors").write_bytes(_crafted_meta(real, edits))
    invoke("info", "c.safetensors")
    invoke("info", "c.safetensors", "--json")


@settings(FUZZ, max_examples=150)
@given(edits=st.lists(metadata_edits, min_size=1, max_size=2), command=st.sampled_from(["sample", "eval"]))
def test_sample_and_eval_of_crafted_metadata(real, edits, command):
    Path("c.safetensors").write_bytes(_crafted_meta(real, edits))
    Path("t.txt").write_text("First Citizen:\nSpeak.\n", encoding="utf-8")
    args = ["--length", "8", "--seed", "1"] if command == "sample" else ["t.txt"]
    invoke(command, "c.safetensors", *args)


MODEL_SIZES = ["num_layers", "hidden_size", "embed_size", "vocab_size"]


@settings(FUZZ, max_examples=120)
@example(field="num_layers", value=2**40, command="sample")
@example(field="hidden_size", value=2**40, command="eval")
@given(field=st.sampled_from(MODEL_SIZES), value=huge_integers, command=st.sampled_from(["info", "sample", "eval"]))
def test_model_sizes_of_any_magnitude(real, field, value, command):
    _, tensors, meta = real
    Path("c.safetensors").write_bytes(signed(tensors, json.dumps(_mutate(meta, ["model", field], value, False))))
    Path("t.txt").write_text("First Citizen:\nSpeak.\n", encoding="utf-8")
    args = {"info": [], "sample": ["--length", "8"], "eval": ["t.txt"]}[command]
    result = invoke(command, "c.safetensors", *args)
    if value != meta["model"][field] and command != "info":
        assert result.exit_code != 0  # a size the tensors do not have is refused, whatever its magnitude


@settings(FUZZ, max_examples=60)
@example(meta_json="[" * 100_000)
@example(meta_json='{"model": {"num_layers": 1e999}}')
@given(meta_json=st.text(max_size=40) | json_values.map(json.dumps))
def test_metadata_that_is_not_an_object(real, meta_json):
    Path("c.safetensors").write_bytes(signed(real[1], meta_json))
    invoke("info", "c.safetensors")


# ----------------------------------------------------------------------------- texts

KNOWN = sorted(set(TINY_TEXT))
texts = st.one_of(
    st.text(st.sampled_from(KNOWN), max_size=60).map(str.encode),  # what the model knows: scores
    st.text(max_size=30).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
    st.sampled_from([b"", b"\xef\xbb\xbf", b"\r\n\r\n", b"\x00", "Speak ☃\n".encode()]),
)
encodings = st.sampled_from(["utf-8", "utf-8", "latin-1", "utf-16", "ascii", "rot13", "nope", ""])


@settings(FUZZ, max_examples=200)
@given(
    data=texts,
    val=st.booleans(),
    encoding=encodings,
    precision=st.sampled_from([None, "fp32", "bf16", "fp16"]),
    as_json=st.booleans(),
)
def test_eval_of_any_text(tiny_run, data, val, encoding, precision, as_json):
    Path("t.txt").write_bytes(data)
    args = ["eval", tiny_run, "t.txt", "--encoding", encoding]
    args += (["--val"] if val else []) + (["--precision", precision] if precision else [])
    args += ["--json"] if as_json else []
    result = invoke(*args)
    if result.exit_code == 0 and as_json:
        assert json.loads(result.stdout)["total"]["chars"] >= 1


@settings(FUZZ, max_examples=150)
@given(
    data=texts,
    layer=st.none() | st.integers(-1, 3),
    max_chars=st.none() | st.integers(-1, 80),
    encoding=encodings,
)
def test_visualize_of_any_text(tiny_run, data, layer, max_chars, encoding):
    Path("t.txt").write_bytes(data)
    args = ["visualize", tiny_run, "--text", "t.txt", "--out", "page.html", "--encoding", encoding]
    args += (["--layer", layer] if layer is not None else []) + (["--max-chars", max_chars] if max_chars else [])
    result = invoke(*args)
    if result.exit_code == 0:
        assert "</html>" in Path("page.html").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- ABC tunes

ABC_BODY = "abcdefgABCDEFGz|:[]^_=,'/0123456789 ()-<>{}!\"%\n"
header_values = st.text(st.sampled_from("0123456789/CGDAmajinor| :[]"), max_size=6)
tunes = st.builds(
    lambda x, t, m, unit, k, body, extra: f"X:{x}\nT:{t}\nM:{m}\nL:{unit}\nK:{k}\n{extra}{body}\n",
    x=st.integers(0, 3),
    t=st.text(max_size=8).map(lambda s: s.replace("\n", " ")),
    m=st.sampled_from(["2/4", "6/8", "C", "C|", "3/4"]) | header_values,
    unit=st.sampled_from(["1/8", "1/16"]) | header_values,
    k=st.sampled_from(["G", "Dmaj", "Ador", "Em"]) | header_values,
    body=st.text(st.sampled_from(ABC_BODY), max_size=40),
    extra=st.sampled_from(["", "M:3/4\n", "K:\n", "V:1\n", "%%score\n", "P:A\n"]),
)


@settings(FUZZ, max_examples=60)
@given(
    documents=st.lists(tunes | st.text(max_size=30), min_size=0, max_size=2),
    midi=st.booleans(),
    bars=st.sampled_from(["0", "1", "3", "-1", "x"]),
    share=st.sampled_from(["0", "0.12", "1", "1.5", "nan"]),
    as_json=st.booleans(),
)
def test_abc_check_of_any_tunes(documents, midi, bars, share, as_json):
    pytest.importorskip("music21", reason="abc check needs the [music] extra (pip install music21)")
    Path("tunes.abc").write_text("\n\n".join(documents), encoding="utf-8", errors="surrogatepass")
    args = ["abc", "check", "tunes.abc", "--max-misfit-bars", bars, "--max-misfit-share", share]
    args += (["--midi", "midi"] if midi else []) + (["--json"] if as_json else [])
    result = CliRunner().invoke(app, args)
    if result.exit_code == 1 and "error:" not in result.stderr:  # a verdict that some tune is not valid
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        summary = json.loads(result.stdout) if as_json else None
        assert summary["valid"] < summary["tunes"] if as_json else " tunes valid (" in result.stdout.splitlines()[-1]
    else:
        check_one_line(result)
    if result.exit_code == 0 and as_json:
        assert json.loads(result.stdout)["tunes"] >= 0


# ----------------------------------------------------------------------------- SentencePiece models


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory) -> Path:
    """A 2-step GRU with a small bpe vocabulary."""
    from charrnn.config import ModelConfig, TokenizerConfig, TrainConfig
    from charrnn.data.tokens import CorpusBytes
    from charrnn.training.run import RunRequest, train

    root = tmp_path_factory.mktemp("bpe")
    model = ModelConfig(cell="gru", embed_size=8, hidden_size=16, num_layers=1)
    cfg = TrainConfig(seq_len=16, batch_size=4, steps=2, eval_every=2, device="cpu", precision="fp32")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHARRNN_CACHE", str(root / ".cache"))
        train(
            CorpusBytes("tiny", "tiny", TINY_TEXT.encode()),
            model,
            cfg,
            root / "run",
            RunRequest(tokenizer=TokenizerConfig("bpe", 320)),
        )
    return root / "run"


@settings(FUZZ, max_examples=150)
@given(prime=st.text(max_size=20), drop=st.booleans(), data=texts, command=st.sampled_from(["sample", "eval"]))
def test_bpe_model_on_any_text(bpe_run, prime, drop, data, command):
    Path("t.txt").write_bytes(data)
    if command == "sample":
        result = invoke(
            "sample", bpe_run, "--prime", prime, "--length", "10", "--seed", "0", *["--drop-unknown"] * drop
        )
        if result.exit_code == 0:
            assert len(result.stdout) >= 10  # whole characters, however the pieces fall
    else:
        invoke("eval", bpe_run, "t.txt")


@settings(FUZZ, max_examples=120)
@example(edits=[(0, 0)], cut=None, state_edit=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3),
    cut=st.none() | st.integers(0, 5000),
    state_edit=st.none() | st.tuples(st.sampled_from(["kind", "vocab_size", "notes", "x"]), json_values),
)
def test_damaged_sentencepiece_model(bpe_run, edits, cut, state_edit):
    import torch

    tensors, meta = load_checkpoint(bpe_run / "best.safetensors")
    blob = bytearray(tensors["tokenizer.model"].numpy().tobytes())
    for at, value in edits:
        blob[at % len(blob)] = value
    blob = blob[:cut] if cut is not None else blob
    tensors["tokenizer.model"] = torch.frombuffer(bytearray(blob) or bytearray(1), dtype=torch.uint8).clone()
    if state_edit is not None:
        meta["tokenizer"][state_edit[0]] = state_edit[1]
    Path("c.safetensors").write_bytes(signed(tensors, json.dumps(meta)))
    invoke("sample", "c.safetensors", "--length", "10", "--seed", "0")
    invoke("info", "c.safetensors")
