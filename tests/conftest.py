"""Shared fixtures: every test runs in its own directory with its own token-id cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charrnn.runtime import cpu_has_fast_bf16

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
    not cpu_has_fast_bf16(),
    reason="this CPU has no native bf16 (AVX-512 BF16, AMX or ARM BF16): charrnn refuses --precision bf16 here",
)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A fresh working directory and cache; the mirror (when there is one) stays visible."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / ".cache"))
    monkeypatch.delenv("CHARRNN_CORPORA", raising=False)
    yield tmp_path


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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory (best and last checkpoints) of a 2-step tiny GRU, trained once per session.
    Its token ids go to a cache of its own, not the user's ~/.cache."""
    from charrnn.config import ModelConfig, TrainConfig
    from charrnn.data import CorpusBytes
    from charrnn.train import train

    root = tmp_path_factory.mktemp("trained")
    model = ModelConfig(cell="gru", embed_size=8, hidden_size=16, num_layers=1)
    cfg = TrainConfig(seq_len=16, batch_size=4, steps=2, eval_every=2, device="cpu", precision="fp32")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHARRNN_CACHE", str(root / ".cache"))
        train(CorpusBytes("tiny", "tiny", TINY_TEXT.encode()), model, cfg, root / "run")
    return root / "run"


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system's Chromium (`make browser` installs it; tests never install anything)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium on PATH: `make browser` installs it (apt-get install chromium)")


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
    from charrnn.abc_midi import parse_abc

    def count(tune: str) -> int:
        score = parse_abc(tune)
        if score.recurse().getElementsByClass("Measure"):
            score = score.expandRepeats()
        return sum(len(n.pitches) for n in score.flatten().notes if not n.tie or n.tie.type == "start")

    return count
