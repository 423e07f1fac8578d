"""The bad-input wall: every known mistake ends in one line on stderr, a non-zero exit code, no
traceback, and no file written that was not asked for. Odd but valid text is accepted."""

from __future__ import annotations

import errno
import json
import math
import os
import random
import shutil
import struct
from pathlib import Path
from typing import Callable

import pytest
import torch
from conftest import TINY_TEXT, TINY_TRAIN, mirror, one_error_line
from fuzzing import signed_checkpoint

from charrnn.checkpoint import load_checkpoint


@pytest.fixture
def checkpoint(tiny_run) -> Path:
    return tiny_run / "best.safetensors"


def _write(name: str, data: bytes | str) -> None:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


TRAIN = ["train", *TINY_TRAIN, "--steps", "2"]
CKPT = "{checkpoint}"  # replaced by the module's trained checkpoint

# (case, files to create {name: content}, arguments, what the message must say)
CASES = [
    ("missing path", {}, [*TRAIN[:1], "nope.txt", *TRAIN[1:]], "corpus not found: nope.txt"),
    (
        "directory without text files",
        {"d/photo.png": b"\x89PNG\r\n"},
        ["train", "d"],
        "d: skipped 1 not valid utf-8 (photo.png)",
    ),
    (
        "directory with nothing usable",
        {"d/.env": "K=v\n", "d/x.bin": b"\x00\x01"},
        ["train", "d"],
        "no text files in directory d: skipped 1 hidden (.env), 1 binary (NUL bytes) (x.bin)",
    ),
    ("empty directory", {"d/sub/.keep": ""}, ["train", "d/sub"], "no text files in directory d/sub: skipped 1 hidden"),
    (
        "--include matching nothing",
        {"d/a.txt": TINY_TEXT},
        ["train", "d", "--include", "*.rs"],
        "--include '*.rs' matched nothing",
    ),
    ("--exclude on a single file", {}, [*TRAIN, "tiny.txt", "--exclude", "*.md"], "pick files inside a directory"),
    ("empty file", {"e.txt": b""}, ["train", "e.txt"], "corpus is empty"),
    ("whitespace-only file", {"w.txt": " \n\t\r\n  \n"}, ["train", "w.txt"], "only whitespace"),
    ("smaller than one window", {"s.txt": "ab\ncd\n"}, [*TRAIN, "s.txt"], "training text too small"),
    ("invalid UTF-8", {"u.txt": b"hello\n" * 10 + b"caf\xe9\n"}, ["train", "u.txt"], "at offset 63"),
    ("NUL bytes", {"n.txt": b"some text\x00\x01\x02 binary"}, ["train", "n.txt"], "NUL byte at offset 9"),
    ("binary file", {"b.bin": bytes(range(256)) * 4}, ["train", "b.bin"], "looks binary"),
    ("one-character vocabulary", {"a.txt": "a" * 5000}, ["train", "a.txt"], "only one distinct character"),
    ("unwritable --out", {"afile": "x"}, [*TRAIN, "tiny.txt", "--out", "afile/run"], "cannot write to afile/run"),
    ("--resume with no checkpoint", {}, [*TRAIN, "tiny.txt", "--out", "r", "--resume"], "no last.safetensors in r"),
    ("--init-from a missing file", {}, [*TRAIN, "tiny.txt", "--init-from", "gone.safetensors"], "not found"),
    ("--seq-len 0", {}, [*TRAIN, "tiny.txt", "--seq-len", "0"], "--seq-len must be at least 1"),
    ("--batch-size 0", {}, [*TRAIN, "tiny.txt", "--batch-size", "0"], "--batch-size must be at least 1"),
    ("--chunk -1", {}, [*TRAIN, "tiny.txt", "--chunk", "-1"], "--chunk must be >= 0"),
    ("--dropout 1", {}, [*TRAIN, "tiny.txt", "--dropout", "1"], "--dropout must be in [0, 1)"),
    ("--dropout 1.5", {}, [*TRAIN, "tiny.txt", "--dropout", "1.5"], "--dropout must be in [0, 1)"),
    ("--steps 0", {}, [*TRAIN, "tiny.txt", "--steps", "0"], "--steps must be at least 1"),
    ("--lr nan", {}, [*TRAIN, "tiny.txt", "--lr", "nan"], "--lr must be a positive number"),
    ("prime with unseen characters", {}, ["sample", CKPT, "--prime", "Speak☃€"], "2 characters the model never saw"),
    ("--temp negative", {}, ["sample", CKPT, "--temp", "-0.5"], "--temp must be a number >= 0"),
    ("--temp NaN", {}, ["sample", CKPT, "--temp", "nan"], "--temp must be a number >= 0"),
    ("--top-p 0", {}, ["sample", CKPT, "--top-p", "0"], "--top-p must be in (0, 1]"),
    ("--top-p above 1", {}, ["sample", CKPT, "--top-p", "1.01"], "--top-p must be in (0, 1]"),
    ("--top-p NaN", {}, ["sample", CKPT, "--top-p", "nan"], "--top-p must be in (0, 1]"),
    ("--top-k negative", {}, ["sample", CKPT, "--top-k", "-1"], "--top-k must be >= 0"),
    ("--length negative", {}, ["sample", CKPT, "--length", "-5"], "--length must be >= 0"),
    ("--stop bad escape", {}, ["sample", CKPT, "--stop", "\\x"], "bad backslash escape"),
    ("sampling with no checkpoints at all", {}, ["sample"], "no checkpoint found under ./checkpoints"),
    ("sampling a missing checkpoint", {}, ["sample", "nowhere/best.safetensors"], "checkpoint not found"),
    ("a checkpoint that is a text file", {"fake.safetensors": TINY_TEXT}, ["sample", "fake.safetensors"], "not a"),
]


# ----------------------------------------------------------------------------- crafted checkpoints


def _signed(edit: Callable[[dict], object]) -> Callable[[Path], bytes]:
    """The module's checkpoint with its metadata edited (`edit` returns the new metadata, or
    None after editing in place) and signed again: it passes the integrity check, so what is
    tested is how its content is read."""

    def craft(checkpoint: Path) -> bytes:
        tensors, meta = load_checkpoint(checkpoint)
        edited = edit(meta)
        return signed_checkpoint(
            tensors, edited if isinstance(edited, str) else json.dumps(meta if edited is None else edited)
        )

    return craft


def _flip_last_byte(checkpoint: Path) -> bytes:
    data = bytearray(checkpoint.read_bytes())
    data[-1] ^= 0x01
    return bytes(data)


def _header_version(version: str) -> Callable[[Path], bytes]:
    def craft(checkpoint: Path) -> bytes:
        (size,) = struct.unpack("<Q", checkpoint.read_bytes()[:8])
        data = checkpoint.read_bytes()
        header = json.loads(data[8 : 8 + size])
        header["__metadata__"]["format_version"] = version
        raw = json.dumps(header).encode()
        return struct.pack("<Q", len(raw)) + raw + data[8 + size :]

    return craft


W, M = "model.rnn.weight_hh_l0", "optim.0.exp_avg"  # a weight, an optimiser moment
LAST_FILE = "r/last.safetensors"
RESUME = ["train", "tiny.txt", "--resume", "--out", "r", "--steps", "50"]


def _last(edit: Callable[[dict, dict], object]) -> Callable[[Path], bytes]:
    """The module's last.safetensors with its tensors and metadata edited in place, signed again."""

    def craft(checkpoint: Path) -> bytes:
        tensors, meta = load_checkpoint(checkpoint.parent / "last.safetensors")
        edit(tensors, meta)
        return signed_checkpoint(tensors, json.dumps(meta))

    return craft


def _bpe_garbage(tensors: dict, meta: dict) -> None:
    meta["tokenizer"] = {"kind": "bpe", "vocab_size": meta["model"]["vocab_size"]}
    tensors["tokenizer.model"] = torch.frombuffer(bytearray(b"\x0a\x05not a model" * 9), dtype=torch.uint8)


NESTED = struct.pack("<Q", 100_000) + b"[" * 100_000
TEXT = {"t.txt": "First Citizen:\nSpeak.\n"}
CKPT_FILE = "c.safetensors"

CASES += [
    ("a header of [[[[...", {CKPT_FILE: NESTED}, ["info", CKPT_FILE], "header is damaged"),
    ("a truncated checkpoint", {CKPT_FILE: lambda c: c.read_bytes()[:2000]}, ["info", CKPT_FILE], "truncated"),
    ("an empty checkpoint", {CKPT_FILE: b""}, ["info", CKPT_FILE], "too short (0 bytes)"),
    ("a pickle", {CKPT_FILE: b"\x80\x04\x95\x00cos\nsystem\n."}, ["info", CKPT_FILE], "a Python pickle"),
    ("a torch.save zip", {CKPT_FILE: b"PK\x03\x04" + bytes(40)}, ["sample", CKPT_FILE], "zip archive"),
    ("a flipped bit", {CKPT_FILE: _flip_last_byte}, ["sample", CKPT_FILE], "checksum mismatch"),
    ("a newer format", {CKPT_FILE: _header_version("99")}, ["info", CKPT_FILE], "newer than this charrnn reads"),
    ("format version 0", {CKPT_FILE: _header_version("0")}, ["info", CKPT_FILE], "impossible format version 0"),
    ("an unreadable format version", {CKPT_FILE: _header_version("one")}, ["info", CKPT_FILE], "unreadable format"),
    ("metadata [[[[...", {CKPT_FILE: _signed(lambda m: "[" * 100_000)}, ["info", CKPT_FILE], "unreadable metadata"),
    ("metadata not an object", {CKPT_FILE: _signed(lambda m: [m])}, ["info", CKPT_FILE], "is not an object"),
    (
        "no model in the metadata",
        {CKPT_FILE: _signed(lambda m: {k: v for k, v in m.items() if k != "model"})},
        ["info", CKPT_FILE],
        "no model",
    ),
    (
        "model settings that are a list",
        {CKPT_FILE: _signed(lambda m: m.update(model=[1]))},
        ["sample", CKPT_FILE],
        "model settings must be an object, not list",
    ),
    (
        "tokenizer settings that are a number",
        {CKPT_FILE: _signed(lambda m: m.update(tokenizer=3))},
        ["sample", CKPT_FILE],
        "the tokenizer description is not an object",
    ),
    (
        "a vocabulary smaller than the model's",
        {CKPT_FILE: _signed(lambda m: m["tokenizer"].update(chars="ab"))},
        ["sample", CKPT_FILE],
        "a vocabulary of 2 for a model of",
    ),
    (
        "training settings of the wrong type",
        {CKPT_FILE: _signed(lambda m: m["train"].update(val_frac="half")), **TEXT},
        ["eval", CKPT_FILE, "t.txt"],
        "unreadable training settings",
    ),
    (
        "metadata claiming 2**40 layers",
        {CKPT_FILE: _signed(lambda m: m["model"].update(num_layers=2**40))},
        ["sample", CKPT_FILE],
        "its tensors hold",
    ),
    (
        "a weight reshaped",
        {CKPT_FILE: _last(lambda t, m: t.update({W: t[W].reshape(-1)}))},
        ["sample", CKPT_FILE],
        f"weight {W[6:]} of shape",
    ),
    (
        "--resume: no generator state",
        {LAST_FILE: _last(lambda t, m: t.pop("rng.torch"))},
        RESUME,
        "no usable random generator",
    ),
    (
        "--resume: a generator state of 3 bytes",
        {LAST_FILE: _last(lambda t, m: t.update({"rng.torch": torch.zeros(3, dtype=torch.uint8)}))},
        RESUME,
        "no usable random generator",
    ),
    (
        "--resume: a weight of the wrong size",
        {LAST_FILE: _last(lambda t, m: t.update({"model.head.bias": torch.zeros(3)}))},
        RESUME,
        "its tensors hold",
    ),
    (
        "--resume: a weight that does not exist",
        {LAST_FILE: _last(lambda t, m: t.update({"model.extra": torch.zeros(0)}))},
        RESUME,
        "weight extra of shape (0,) is not part",
    ),
    (
        "--resume: a NaN weight",
        {LAST_FILE: _last(lambda t, m: t[W].view(-1).__setitem__(0, math.nan))},
        RESUME,
        "not finite",
    ),
    (
        "--resume: an optimiser moment of the wrong shape",
        {LAST_FILE: _last(lambda t, m: t.update({M: t[M][:1]}))},
        RESUME,
        f"optimiser state {M} does not fit",
    ),
    (
        "--resume: an optimiser moment for no weight",
        {LAST_FILE: _last(lambda t, m: t.update({"optim.99.exp_avg": t[M].clone()}))},
        RESUME,
        "optim.99.exp_avg does not fit",
    ),
    (
        "--resume: an infinite optimiser moment",
        {LAST_FILE: _last(lambda t, m: t[M].view(-1).__setitem__(0, math.inf))},
        RESUME,
        f"{M} holds values that are not finite",
    ),
    (
        "--resume: a hidden state of the wrong width",
        {LAST_FILE: _last(lambda t, m: t.update({"hidden.0": torch.zeros(1, 4, 7)}))},
        RESUME,
        "hidden state",
    ),
    (
        "--resume: a NaN hidden state",
        {LAST_FILE: _last(lambda t, m: t["hidden.0"].view(-1).__setitem__(0, math.nan))},
        RESUME,
        "hidden.0 holds values that are not finite",
    ),
    ("--resume: no step", {LAST_FILE: _last(lambda t, m: m.pop("step"))}, RESUME, "KeyError('step')"),
    ("--resume: no elapsed time", {LAST_FILE: _last(lambda t, m: m.pop("elapsed"))}, RESUME, "KeyError('elapsed')"),
    (
        "--resume: metadata claiming --hidden 10**9",
        {LAST_FILE: _last(lambda t, m: m["model"].update(hidden_size=10**9))},
        RESUME,
        "its tensors hold",
    ),
    ("--resume: a damaged SentencePiece model", {LAST_FILE: _last(_bpe_garbage)}, RESUME, "does not describe a run"),
    ("--hidden 1000000000", {}, [*TRAIN, "tiny.txt", "--hidden", "1000000000"], "PB of memory; this machine has"),
    ("--layers 2**40", {}, [*TRAIN, "tiny.txt", "--layers", str(2**40)], "of memory; this machine has"),
    ("info of a missing checkpoint", {}, ["info", "nowhere"], "checkpoint not found: nowhere"),
    ("a run directory with no checkpoint", {"d/notes.txt": "x"}, ["info", "d"], "no checkpoint in d"),
    # eval, visualize
    ("eval of a missing file", {}, ["eval", CKPT, "nope.txt"], "corpus not found: nope.txt"),
    ("eval of a binary file", {"b.bin": b"text\x00\x01"}, ["eval", CKPT, "b.bin"], "looks binary"),
    ("eval with an unknown encoding", TEXT, ["eval", CKPT, "t.txt", "--encoding", "nope"], "unknown --encoding"),
    ("eval of unseen characters", {"t.txt": "Speak ☃"}, ["eval", CKPT, "t.txt"], "character the model never saw"),
    ("eval --precision fp64", TEXT, ["eval", CKPT, "t.txt", "--precision", "fp64"], "Invalid value for '--precision'"),
    ("visualize --layer 5", TEXT, ["visualize", CKPT, "--text", "t.txt", "--layer", "5"], "between 1 and 1"),
    ("visualize --max-chars 0", TEXT, ["visualize", CKPT, "--text", "t.txt", "--max-chars", "0"], "at least 1"),
    (
        "visualize --out under a file",
        {**TEXT, "afile": "x"},
        ["visualize", CKPT, "--text", "t.txt", "--out", "afile/page.html"],
        "cannot write afile/page.html",
    ),
    ("visualize a binary file", {"b.bin": b"\x00" * 9}, ["visualize", CKPT, "--text", "b.bin"], "looks binary"),
    # sample, train options
    ("--num-samples 0", {}, ["sample", CKPT, "--num-samples", "0"], "--num-samples must be at least 1"),
    ("--seed beyond 64 bits", {}, ["sample", CKPT, "--seed", str(2**64)], "--seed must fit in 64 bits"),
    ("--length not a number", {}, ["sample", CKPT, "--length", "abc"], "Invalid value for '--length'"),
    ("an unknown option", {}, ["sample", CKPT, "--nope"], "No such option: --nope"),
    ("--model transformer", {}, [*TRAIN, "tiny.txt", "--model", "transformer"], "Invalid value for '--model'"),
    ("--vocab-size too small", {}, [*TRAIN, "tiny.txt", "--tokenizer", "bpe", "--vocab-size", "10"], "too small"),
    ("--time-budget soon", {}, [*TRAIN, "tiny.txt", "--time-budget", "soon"], "cannot read 'soon' as a duration"),
    ("--val-frac 0", {}, [*TRAIN, "tiny.txt", "--val-frac", "0"], "--val-frac must be between 0 and 1"),
    ("--epochs 0", {}, [*TRAIN, "tiny.txt", "--epochs", "0"], "--epochs must be a positive number"),
    ("--eval-every 0", {}, [*TRAIN, "tiny.txt", "--eval-every", "0"], "--eval-every must be at least 1"),
    ("--warmup -1", {}, [*TRAIN, "tiny.txt", "--warmup", "-1"], "--warmup must be >= 0"),
    ("--grad-clip -1", {}, [*TRAIN, "tiny.txt", "--grad-clip", "-1"], "--grad-clip must be >= 0"),
    ("--hidden 0", {}, [*TRAIN, "tiny.txt", "--hidden", "0"], "--hidden must be at least 1"),
    ("--layers 0", {}, [*TRAIN, "tiny.txt", "--layers", "0"], "--layers must be at least 1"),
    ("--patience 0", {}, [*TRAIN, "tiny.txt", "--patience", "0"], "--patience must be at least 1"),
    ("--save-every 0", {}, [*TRAIN, "tiny.txt", "--save-every", "0"], "--save-every must be at least 1"),
    ("--weight-decay -1", {}, [*TRAIN, "tiny.txt", "--weight-decay", "-1"], "--weight-decay must be >= 0"),
    ("--optimizer nope", {}, [*TRAIN, "tiny.txt", "--optimizer", "nope"], "Invalid value for '--optimizer'"),
    ("--encoding nope", {}, [*TRAIN, "tiny.txt", "--encoding", "nope"], "unknown --encoding 'nope'"),
    ("--init-from a text file", {"afile": "x"}, [*TRAIN, "tiny.txt", "--init-from", "afile"], "not a checkpoint"),
    # the other commands
    ("abc check of a missing file", {}, ["abc", "check", "nope.abc"], "ABC file not found: nope.abc"),
    ("abc check of a binary file", {"b.abc": b"\xff\xfe"}, ["abc", "check", "b.abc"], "is not UTF-8"),
    (
        "abc check --max-misfit-share 1.5",
        {"t.abc": "X:1\n"},
        ["abc", "check", "t.abc", "--max-misfit-share", "1.5"],
        "--max-misfit-share in [0, 1]",
    ),
    ("corpus get of an unknown name", {}, ["corpus", "get", "nope"], "unknown corpus 'nope'"),
]


@pytest.mark.parametrize("case, files, args, says", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line(cli, tiny_corpus, checkpoint, case, files, args, says):
    for name, content in files.items():
        _write(name, content(checkpoint) if callable(content) else content)
    before = {p for p in Path().rglob("*") if ".cache" not in p.parts}
    result = cli(*[a.replace(CKPT, str(checkpoint)) for a in args])
    line = one_error_line(result)
    assert says in line, line
    assert result.stdout == ""
    after = {p for p in Path().rglob("*") if ".cache" not in p.parts}
    assert after == before, f"{case}: wrote {sorted(map(str, after - before))}"


def test_bom_crlf_and_cr_are_normalised(cli):
    text = TINY_TEXT.replace("\n", "\r\n")
    _write("windows.txt", b"\xef\xbb\xbf" + text.encode() + "Old Mac line\rand another\r".encode())
    done = cli("train", "windows.txt", *TINY_TRAIN, "--steps", "2", "--out", "run")
    assert done.exit_code == 0, done.stderr
    chars = load_checkpoint(Path("run/best.safetensors"))[1]["tokenizer"]["chars"]
    assert "\r" not in chars and "\ufeff" not in chars and "\n" in chars
    sampled = cli("sample", "run", "--length", "200", "--seed", "1")
    assert sampled.exit_code == 0 and "\r" not in sampled.stdout


def test_a_huge_file_with_no_newlines_trains(cli):
    rng = random.Random(0)
    words = ["the", "king", "of", "a", "land", "where", "rivers", "run", "north"]
    text = " ".join(rng.choice(words) for _ in range(700_000))  # about 3 MB on one line
    _write("one-line.txt", text)
    done = cli("train", "one-line.txt", *TINY_TRAIN, "--steps", "2", "--out", "run")
    assert done.exit_code == 0, done.stderr
    chars = load_checkpoint(Path("run/best.safetensors"))[1]["tokenizer"]["chars"]
    assert "\n" not in chars
    sampled = cli("sample", "run", "--length", "50", "--seed", "1")  # no newline to start from: still fine
    assert sampled.exit_code == 0 and len(sampled.stdout) == 51


def test_a_small_corpus_lowers_the_batch_with_a_note(cli):
    _write("small.txt", "to be or not to be\n" * 8)  # room for a few streams of 17, not 32
    done = cli("train", "small.txt", "--hidden", "16", "--seq-len", "16", "--batch-size", "32", "--steps", "2")
    assert done.exit_code == 0, done.stderr
    assert "note: corpus is small: --batch-size lowered from 32 to" in done.stderr


# ----------------------------------------------------------------------------- writes that fail

FULL_DISK = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full (always-full device) here")


def _full_disk_for_new_files(monkeypatch) -> None:
    """No room for a new file: every atomic write (corpus, MIDI, cache, checkpoint) fails to start.
    (Tests run as root, where a read-only directory does not stop writes.)"""

    def no_space(*args, **kwargs):
        raise FULL_DISK

    monkeypatch.setattr("charrnn.atomic.tempfile.mkstemp", no_space)


def _metrics_on_a_full_disk(cli, tiny_corpus, monkeypatch, tiny_run) -> list[str]:
    shutil.copytree(tiny_run, "run")  # evaluated and saved at step 2
    Path("run/metrics.jsonl").unlink()
    Path("run/metrics.jsonl").symlink_to("/dev/full")  # every write fails with ENOSPC, from the kernel itself
    return ["train", str(tiny_corpus), "--out", "run", "--resume", "--steps", "4"]


def _samples_on_a_full_disk(cli, tiny_corpus, monkeypatch, tiny_run) -> list[str]:
    Path("run").mkdir()
    Path("run/samples.txt").symlink_to("/dev/full")
    return ["train", str(tiny_corpus), *TINY_TRAIN, "--steps", "4", "--eval-every", "4", "--sample-every", "1"] + [
        "--out",
        "run",
    ]


def _corpus_on_a_full_disk(cli, tiny_corpus, monkeypatch, tiny_run) -> list[str]:
    found = mirror()
    if found is None:
        pytest.skip("tinyshakespeare not available: set CHARRNN_MIRROR to a directory holding tinyshakespeare.txt")
    monkeypatch.setenv("CHARRNN_MIRROR", str(found))
    _full_disk_for_new_files(monkeypatch)
    return ["corpus", "get", "tinyshakespeare"]


def _midi_under_a_file(cli, tiny_corpus, monkeypatch, tiny_run) -> list[str]:
    pytest.importorskip("music21", reason="abc check needs the [music] extra (pip install music21)")
    _write("tunes.abc", TUNE)
    return ["abc", "check", "tunes.abc", "--midi", "tunes.abc/midi"]


def _midi_on_a_full_disk(cli, tiny_corpus, monkeypatch, tiny_run) -> list[str]:
    pytest.importorskip("music21", reason="abc check needs the [music] extra (pip install music21)")
    _write("tunes.abc", TUNE)
    _full_disk_for_new_files(monkeypatch)
    return ["abc", "check", "tunes.abc", "--midi", "midi"]


TUNE = "X:1\nT:Reel\nM:2/4\nL:1/8\nK:G\nGABc | d2d2 |]\n"

# (case, setup(cli, corpus, monkeypatch, tiny_run) -> arguments, what the message must say)
WRITE_FAILURES = [
    (
        "metrics.jsonl on a full disk",
        _metrics_on_a_full_disk,
        "cannot write run/metrics.jsonl: No space left on device",
    ),
    ("samples.txt on a full disk", _samples_on_a_full_disk, "cannot write run/samples.txt: No space left on device"),
    ("corpus on a full disk", _corpus_on_a_full_disk, "cannot write corpora/tinyshakespeare.txt: No space left"),
    ("--midi under a file", _midi_under_a_file, "cannot write tunes.abc/midi: Not a directory"),
    ("MIDI file on a full disk", _midi_on_a_full_disk, "cannot write midi/001-reel.mid: No space left on device"),
]


@needs_dev_full
@pytest.mark.parametrize("case, setup, says", WRITE_FAILURES, ids=[c[0] for c in WRITE_FAILURES])
def test_a_failed_write_gets_one_line_and_loses_nothing(cli, tiny_corpus, tiny_run, monkeypatch, case, setup, says):
    args = setup(cli, tiny_corpus, monkeypatch, tiny_run)
    assert says in one_error_line(cli(*args))
    assert not list(Path().rglob("*.tmp")), "a temporary file was left behind"
    if Path("run").exists():  # the evaluation's checkpoints were saved before its log line: all kept
        assert load_checkpoint(Path("run/last.safetensors"))[1]["step"] == 4
        assert load_checkpoint(Path("run/best.safetensors"))[1]["step"] in (2, 4)
    assert not Path("corpora/tinyshakespeare.txt").exists() and not list(Path().rglob("*.mid"))


def test_an_unwritable_id_cache_is_a_note_and_the_run_goes_on(cli, tiny_corpus, monkeypatch):
    _write("afile", "x")
    monkeypatch.setenv("CHARRNN_CACHE", "afile/cache")
    done = cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "2", "--out", "run")
    assert done.exit_code == 0, done.stderr
    assert "note: token ids not cached (cannot write afile/cache/ids: Not a directory)" in done.stderr
    assert load_checkpoint(Path("run/best.safetensors"))[1]["step"] == 2
