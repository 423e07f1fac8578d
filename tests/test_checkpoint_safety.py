"""Loading is never code execution, and a damaged checkpoint is named, never loaded.

Every command that reads a checkpoint (found by walking the CLI, so commands added later are
covered too) is handed crafted pickle and torch.save files whose unpickling would create a
marker file: each is refused in one line and the marker never appears.
"""

from __future__ import annotations

import json
import pickle
import random
import re
import struct
from pathlib import Path

import pytest
import torch
import typer.main
from conftest import REPO, one_error_line

from charrnn.checkpoint import FORMAT_VERSION, load_checkpoint
from charrnn.cli import app
from charrnn.errors import CheckpointError


class MakesMarker:
    """Unpickling this runs code: it creates the file at `path`."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('code ran')",))


@pytest.fixture
def trained(tiny_run) -> Path:
    return tiny_run


def _payloads(tmp: Path, marker: Path) -> dict[str, bytes]:
    evil = MakesMarker(marker)
    out = {f"pickle-protocol-{p}": pickle.dumps(evil, protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)}
    torch.save(evil, tmp / "zip.pt")
    out["torch-save-zip"] = (tmp / "zip.pt").read_bytes()
    torch.save(evil, tmp / "legacy.pt", _use_new_zipfile_serialization=False)
    out["torch-save-legacy"] = (tmp / "legacy.pt").read_bytes()
    return out


def test_the_payloads_are_live(tmp_path):
    """Control: unpickling the payload really does create the marker (so its absence below means something)."""
    marker = tmp_path / "marker"
    pickle.loads(_payloads(tmp_path, marker)["pickle-protocol-2"])
    assert marker.read_text() == "code ran"


def _checkpoint_commands() -> list[str]:
    """Every CLI command with a CHECKPOINT argument, e.g. ['sample', 'info', ...]."""
    found = []

    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, path + [name])
        elif any(p.name == "checkpoint" for p in command.params):
            found.append(" ".join(path))

    walk(typer.main.get_command(app), [])
    return found


def test_checkpoint_commands_are_found():
    commands = _checkpoint_commands()
    assert "sample" in commands and len(commands) >= 1


# Arguments that some commands need besides the checkpoint; `{text}` is a small text file.
EXTRA_ARGS = {"eval": ["{text}"], "visualize": ["--text", "{text}", "--out", "page.html"], "sample": ["--length", "5"]}


def test_crafted_pickles_are_never_loaded(cli, tmp_path, tiny_corpus):
    marker = tmp_path / "marker"
    payloads = _payloads(tmp_path, marker)
    before = set(Path().rglob("*"))
    for name, data in payloads.items():
        as_file = Path(f"{name}.safetensors")
        as_file.write_bytes(data)
        as_run = Path(f"run-{name}")  # a run directory whose checkpoints are the payload
        as_run.mkdir()
        for file in ("best.safetensors", "last.safetensors"):
            (as_run / file).write_bytes(data)
        invocations = [
            [*cmd.split(), str(target), *(a.format(text=tiny_corpus) for a in EXTRA_ARGS.get(cmd, []))]
            for cmd in _checkpoint_commands()
            for target in (as_file, as_run)
        ]
        invocations += [
            ["train", str(tiny_corpus), "--out", str(as_run), "--resume", "--steps", "3"],
            ["train", str(tiny_corpus), "--init-from", str(as_file), "--out", f"tuned-{name}", "--steps", "1"],
            ["train", str(tiny_corpus), "--init-from", str(as_run), "--out", f"tuned-{name}", "--steps", "1"],
        ]
        for args in invocations:
            line = one_error_line(cli(*args))
            assert not marker.exists(), f"{args} ran code"
            assert "not a" in line and name in line, (args, line)
            if name.startswith("torch-save") or name[-1] in "2345":  # recognised for what it is
                assert "pickle" in line, (args, line)
    assert not marker.exists()
    inputs = ("pickle", "torch", "run-", ".cache")  # what this test wrote, and the token-id cache
    created = {p for p in set(Path().rglob("*")) - before if not p.parts[0].startswith(inputs)}
    assert created == set(), "a refused command wrote files"


def test_the_package_never_unpickles():
    """Belt and braces: no unpickling API appears anywhere in the package's source."""
    banned = re.compile(
        r"\btorch\.load\(|\bimport pickle\b|\bfrom pickle\b|\bcPickle\b|\bdill\b|\bjoblib\b|allow_pickle=True"
    )
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for path in (REPO / "charrnn").rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if banned.search(line)
    ]
    assert offenders == []


def _rewrite_header(data: bytes, change) -> bytes:
    """The same tensors with the safetensors header (JSON) passed through `change`."""
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    change(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + size :]


def _damaged(good: bytes) -> dict[str, tuple[bytes, str]]:
    """name -> (file content, what the error must say)."""
    (size,) = struct.unpack("<Q", good[:8])
    data_start = 8 + size

    def flip(data: bytes, at: int, bit: int = 0) -> bytes:
        return data[:at] + bytes([data[at] ^ (1 << bit)]) + data[at + 1 :]

    def future(header):
        header["__metadata__"]["format_version"] = str(FORMAT_VERSION + 1)

    def foreign(header):
        header["__metadata__"] = {"format": "pt"}

    meta_at = good.index(b'"charrnn"')
    return {
        "empty": (b"", "too short"),
        "truncated-to-5-bytes": (good[:5], "too short"),
        "truncated-in-header": (good[: 8 + size // 2], "truncated"),
        "truncated-in-tensors": (good[: data_start + (len(good) - data_start) // 2], "truncated"),
        "last-byte-missing": (good[:-1], "truncated"),
        "bit-flip-in-tensors": (flip(good, len(good) - 3, 4), "corrupted"),
        "bit-flip-in-metadata": (flip(good, meta_at + 40, 1), "corrupted"),
        "bit-flip-in-length": (flip(good, 3, 0), "truncated"),  # it now promises 16 MB more
        "text-file": (b"First Citizen:\nBefore we proceed any further\n", "not a"),
        "json-file": (b'{"model": "lstm", "weights": [1, 2, 3]}', "not a"),
        "numpy-npy": (b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", "not a"),
        "foreign-safetensors": (_rewrite_header(good, foreign), "not a charrnn checkpoint"),
        "future-format-version": (_rewrite_header(good, future), "newer than this charrnn reads"),
    }


def test_damaged_checkpoints_get_one_line_naming_file_and_fault(cli, trained, tiny_corpus):
    good = (trained / "best.safetensors").read_bytes()
    for name, (data, says) in _damaged(good).items():
        path = Path(f"{name}.safetensors")
        path.write_bytes(data)
        line = one_error_line(cli("sample", path, "--length", "5"))
        assert str(path) in line and says in line, (name, line)
        with pytest.raises(CheckpointError, match=re.escape(says)):
            load_checkpoint(path)

    run = Path("run")
    run.mkdir()
    (run / "last.safetensors").write_bytes(good[:-100])
    line = one_error_line(cli("train", tiny_corpus, "--out", run, "--resume"))
    assert "last.safetensors" in line and "truncated" in line


def test_every_bit_flip_is_detected(tmp_path, trained):
    """Flip single bits all over a checkpoint: each load fails with CheckpointError, nothing else."""
    good = (trained / "last.safetensors").read_bytes()
    (size,) = struct.unpack("<Q", good[:8])
    rng = random.Random(4)
    positions = [(i, b) for i in range(8) for b in range(8)]  # the length prefix, every bit
    positions += [(rng.randrange(8, 8 + size), rng.randrange(8)) for _ in range(1500)]  # header
    positions += [(rng.randrange(8 + size, len(good)), rng.randrange(8)) for _ in range(300)]  # tensors
    path = tmp_path / "flipped.safetensors"
    for at, bit in positions:
        path.write_bytes(good[:at] + bytes([good[at] ^ (1 << bit)]) + good[at + 1 :])
        with pytest.raises(CheckpointError):
            load_checkpoint(path)
            pytest.fail(f"a flip of bit {bit} at byte {at} went unnoticed")
