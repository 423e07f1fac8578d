"""Shared fixtures: every test runs in its own directory with its own token-id cache."""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
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


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Module- and session-scoped fixtures run before `isolated` below: what they cache (token
    ids, the sampler's and the speed probes' choices) goes here, never to the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHARRNN_CACHE", str(tmp_path_factory.mktemp("session-cache")))
        yield


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


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def reaches_beyond_loopback(url: str) -> bool:
    """Whether a page's request for `url` would leave this machine (the test's own files and
    data/blob URLs stay; http(s) and ws(s) may reach loopback only)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme not in ("file", "data", "blob", "about") and parts.hostname not in LOOPBACK


@pytest.fixture(scope="module")
def browser(chromium):
    """The system's Chromium, headless, driven by Playwright; launched once per module that uses it.
    Not once per session: while Playwright's sync driver runs, its event loop counts as running in
    this thread, so a later test's asyncio.run (tests/serve/test_serve_generation.py) would fail."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs playwright (the [test] extra) to drive Chromium"
    )
    with sync_api.sync_playwright() as driver:
        # executable_path: the system's Chromium, never Playwright's own builds (`playwright install`
        # fetches them from a CDN). chromium_sandbox=False passes --no-sandbox: Chromium's sandbox
        # needs user namespaces or a setuid helper and refuses to start as root, as containers and CI
        # run; the pages opened are the tests' own, loaded from loopback or files.
        launched = driver.chromium.launch(executable_path=chromium, headless=True, chromium_sandbox=False)
        yield launched
        launched.close()


class OfflinePages:
    """open(url) -> a Playwright page at `url`, in its own context, that can reach loopback only:
    any other request is aborted and kept in `attempted` (the fixture fails the test if any was)."""

    def __init__(self, browser):
        self.browser = browser
        self.attempted: list[str] = []
        self.contexts: list = []

    def _block(self, route) -> None:
        self.attempted.append(route.request.url)
        route.abort("blockedbyclient")

    def _block_socket(self, socket) -> None:
        self.attempted.append(socket.url)
        socket.close()  # never connected to its server: Playwright stands in for it

    def open(self, url: str, *, width: int = 1280, height: int = 720, wait_until: str = "load"):
        context = self.browser.new_context(viewport={"width": width, "height": height}, service_workers="block")
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(120_000)
        page.route(reaches_beyond_loopback, self._block)
        page.route_web_socket(reaches_beyond_loopback, self._block_socket)
        page.goto(url, wait_until=wait_until)
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(browser):
    """Pages must work offline and load no remote script: each page of the test reaches loopback
    only, and the test fails if one tried to reach anything else."""
    opened = OfflinePages(browser)
    yield opened
    opened.close()
    assert not opened.attempted, f"a page tried to reach beyond loopback: {opened.attempted}"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve():
    """serve(folder) -> base URL of a loopback http server for `folder`, stopped after the test."""
    servers = []

    def start(folder: Path) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


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
