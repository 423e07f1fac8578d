"""Shared fixtures: every test runs in its own directory with its own token-id cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from charrnn.runtime import cpu_can_run_bf16

REPO = Path(__file__).resolve().parent.parent

TINY_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\n"
) * 40


# bf16 on a CPU runs through oneDNN kernels that need AVX-512 (or ARM BF16); elsewhere charrnn
# refuses --precision bf16, so the bf16 cases of a test cannot run there.
needs_native_bf16 = pytest.mark.skipif(
    not cpu_can_run_bf16(),
    reason="this CPU has no bf16 kernels (AVX-512 or ARM BF16): charrnn refuses --precision bf16 here",
)


# In CI a skip for want of setup fails (see ci_policy.py); pytest finds the hooks by their names here.
from ci_policy import pytest_make_collect_report, pytest_runtest_makereport  # noqa: E402, F401


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A fresh working directory and cache; the mirror (when there is one) stays visible."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / ".cache"))
    monkeypatch.delenv("CHARRNN_CORPORA", raising=False)
    yield tmp_path


@pytest.fixture
def one_thread():
    """These tests check results, not speed. Tiny ops on two OpenMP threads of a busy shared
    machine wait on each other (measured: 25x slower than one thread), so use one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def cli():
    """Run the CLI in-process: cli(*args) -> result with .exit_code, .stdout, .stderr."""
    from charrnn.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    return invoke


# Tiny-model flags for CLI tests: seconds, not minutes.
TINY_TRAIN = ["--hidden", "32", "--embed", "16", "--layers", "1", "--seq-len", "16", "--batch-size", "4"]


def mirror() -> Path | None:
    """The corpus mirror for tests that need tinyshakespeare (CHARRNN_MIRROR or ../shared/corpora)."""
    for raw in (os.environ.get("CHARRNN_MIRROR"), str(REPO.parent / "shared" / "corpora")):
        if raw and (Path(raw) / "tinyshakespeare.txt").exists():
            return Path(raw)
    return None


@pytest.fixture
def shakespeare(monkeypatch) -> Path:
    found = mirror()
    if found is None:
        pytest.skip("tinyshakespeare not available: set CHARRNN_MIRROR to a directory holding tinyshakespeare.txt")
    monkeypatch.setenv("CHARRNN_MIRROR", str(found))
    return found / "tinyshakespeare.txt"


@pytest.fixture
def local_mirror(tmp_path, monkeypatch) -> str:
    """A ready corpus that comes from a mirror on every machine: the catalogue gains `tinymirror`
    (TINY_TEXT, with its sha256) and CHARRNN_MIRROR names a folder holding it, so `corpus get`
    takes its mirror path without the real corpus. Returns the corpus name."""
    import hashlib

    from charrnn.data import corpora

    folder = tmp_path / "mirror"
    folder.mkdir()
    data = TINY_TEXT.encode("utf-8")
    (folder / "tinymirror.txt").write_bytes(data)
    entry = {
        "description": "a test corpus",
        "url": "https://example.invalid/tinymirror.txt",
        "sha256": hashlib.sha256(data).hexdigest(),
        "chars": len(TINY_TEXT),
        "bytes": len(data),
    }
    real = corpora.catalogue
    monkeypatch.setattr(corpora, "catalogue", lambda: {**real(), "tinymirror": entry})
    monkeypatch.setenv("CHARRNN_MIRROR", str(folder))
    return "tinymirror"


def train_tiny_run(root: Path, *options: str, text: str = TINY_TEXT, name: str = "tiny") -> Path:
    """The one way tests build a trained run: `charrnn train` on `text` (root/<name>.txt) into
    root/run with the TINY_TRAIN model, 2 steps evaluated at 2, on the CPU in fp32; `options`
    add to or override those. Its token ids go to root/cache, not the user's ~/.cache; what the
    command printed on stderr is kept in root/train-stderr.txt."""
    from charrnn.cli import app

    corpus = root / f"{name}.txt"
    corpus.write_text(text, encoding="utf-8")
    args = ["train", str(corpus), *TINY_TRAIN, "--steps", "2", "--eval-every", "2", "--device", "cpu"]
    args += ["--precision", "fp32", "--out", str(root / "run"), *options]
    result = CliRunner().invoke(app, args, env={"CHARRNN_CACHE": str(root / "cache")})
    assert result.exit_code == 0, result.output
    (root / "train-stderr.txt").write_text(result.stderr, encoding="utf-8")
    return root / "run"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory (best and last checkpoints) of a 2-step tiny GRU, trained once per session."""
    return train_tiny_run(tmp_path_factory.mktemp("trained"), "--model", "gru", "--embed", "8", "--hidden", "16")


@pytest.fixture(scope="session")
def sampled_run(tmp_path_factory) -> Path:
    """A run of 20 steps evaluated at 10 and 20, with a sample at each evaluation (trained once)."""
    return train_tiny_run(
        tmp_path_factory.mktemp("sampled"), "--steps", "20", "--eval-every", "10", "--sample-every", "1"
    )


def metrics_of(run: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def one_error_line(result, *, alone: bool = False) -> str:
    """The command failed as a user error: non-zero exit, no traceback, and exactly one
    "error: ..." line on stderr, its last (notes may come before it; none with `alone`).
    Returns that line."""
    assert result.exit_code not in (0, None), result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert len(lines) == 1 or not alone, result.stderr
    return errors[0]


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system's Chromium (`make browser` installs it; tests never install anything)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium on PATH: `make browser` sets it up (Debian package chromium)")


HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def headless(browser: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run headless Chromium with a throw-away profile and no network of its own."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [browser, *HEADLESS_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def read_midi():
    """read_midi(bytes) -> (notes started, tempos set in microseconds per quarter, length in seconds),
    read with mido, a reader independent of music21 which wrote the file."""
    mido = pytest.importorskip("mido", reason="needs mido (the [test] extra) to read MIDI files back")
    import io

    def read(midi: bytes) -> tuple[int, list[int], float]:
        mf = mido.MidiFile(file=io.BytesIO(midi))
        messages = [m for track in mf.tracks for m in track]
        notes = sum(m.type == "note_on" and m.velocity > 0 for m in messages)
        return notes, [m.tempo for m in messages if m.type == "set_tempo"], mf.length

    return read


@pytest.fixture
def score_notes():
    """score_notes(tune) -> the notes a MIDI file of the ABC `tune` must start: music21's count
    with repeats played, chords by their notes, a tied note once."""
    pytest.importorskip("music21", reason="needs music21 (the [music] extra)")
    from charrnn.music.midi import parse_abc

    def count(tune: str) -> int:
        score = parse_abc(tune)
        if score.recurse().getElementsByClass("Measure"):
            score = score.expandRepeats()
        return sum(len(n.pitches) for n in score.flatten().notes if not n.tie or n.tie.type == "start")

    return count


@pytest.fixture
def one_torch_thread():
    """Results, not speed: tiny ops on two threads of a busy machine wait on each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cached_speed():
    """cached_speed(flops): a settled speed cache saying this machine trains at `flops` (fp32,
    torch's thread count now), written by charrnn's own cache, so no speed probe runs in the test."""
    import torch

    from charrnn.probes.cache import SETTLED_PROBES
    from charrnn.training.sizing import machine_flops_per_sec

    def write(flops: float) -> None:
        for _ in range(SETTLED_PROBES):
            machine_flops_per_sec(torch.device("cpu"), "fp32", measure=lambda device, precision: flops)

    return write
