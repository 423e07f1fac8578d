"""`charrnn serve`'s page in a real browser (headless Chromium, driven over the DevTools protocol):
it lists the models, streams a generation, draws a finished tune as SVG with the checker's verdict,
plays it with sounds from the server, colours the sample by surprise, and Stop cancels. Skipped
where Chromium is absent."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import HEADLESS_FLAGS, train_tiny_run

pytest.importorskip("uvicorn", reason="charrnn serve needs the [serve] extra (starlette, uvicorn)")
pytest.importorskip("websockets", reason="driving Chromium needs websockets (the [test] extra)")

from websockets.sync.client import connect  # noqa: E402

TUNE = "X:1\nT:The test reel\nM:4/4\nL:1/8\nK:D\nA2FA dAFA|B2GB dBGB|A2FA dAFA|BAGF E2D2|]\n"
ABC_TEXT = "\n".join(TUNE.replace("X:1", f"X:{n}").replace("D2|]", f"D{n % 3 + 1}|]") for n in range(1, 40))


@pytest.fixture(scope="module")
def abc_run(tmp_path_factory) -> Path:
    """A served directory holding a 2-step tiny model that knows the characters of ABC tunes."""
    root = tmp_path_factory.mktemp("served-abc")
    model = ["--model", "gru", "--embed", "8", "--hidden", "16"]
    train_tiny_run(root, *model, "--out", str(root / "runs" / "tunes"), text=ABC_TEXT, name="tiny-abc")
    return root / "runs"


class LiveServer:
    """`charrnn serve`'s application on a free loopback port, in a thread of this process."""

    def __init__(self, served: Path, max_length: int = 1_000_000):
        import uvicorn

        from charrnn.config import ServeConfig
        from charrnn.serve.server import build_app, open_socket, url_of

        self.app = build_app(served, ServeConfig(max_length=max_length))
        self.sock = open_socket("127.0.0.1", 0)
        self.url = url_of(self.sock)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.app.state.pool.shutdown()
        self.sock.close()


class Page:
    """One Chromium tab, driven over the DevTools protocol."""

    def __init__(self, browser: str, url: str, size: str = "1100,1500"):
        self.profile = tempfile.mkdtemp(prefix="charrnn-chromium-")
        args = [browser, *HEADLESS_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0"]
        self.proc = subprocess.Popen([*args, f"--window-size={size}", url], stderr=subprocess.PIPE, text=True)
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            match = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = match.group(1) if match else None
        if port is None:
            self.close()
            pytest.fail("chromium did not open its DevTools port")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as res:
            targets = [t for t in json.load(res) if t.get("type") == "page"]
        self.stack = contextlib.ExitStack()
        self.ws = self.stack.enter_context(connect(targets[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30))
        self.calls = 0

    def call(self, method: str, **params):
        self.calls += 1
        self.ws.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.calls:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, what: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        status = self.js("$('status').textContent")
        raise AssertionError(f"timed out waiting for {what}; the page's status line: {status!r}")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        if getattr(self, "stack", None) is not None:
            self.stack.close()
        self.proc.kill()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


def generate_tune(page: Page, prime: str, length: int, seed: int = 1) -> None:
    """Fill the form, press Generate, wait for streamed text and a drawn tune, then for the end."""
    page.wait("document.querySelectorAll('#model option').length > 0", "the model list")
    page.js(
        f"$('prime').value = {json.dumps(prime)}; $('length').value = {length}; $('seed').value = {seed};"
        "$('generate').click(); true"
    )
    page.wait(f"(document.querySelector('.sample pre.text')?.textContent.length ?? 0) > {len(prime)}", "streamed text")
    page.wait("document.querySelector('.tune .score svg') !== null", "the tune drawn as SVG")
    page.wait("$('status').textContent === 'done'", "the end of the generation")
    page.wait("!document.querySelector('.tune .verdict').textContent.startsWith('checking')", "the verdict", 120)


def test_the_page_streams_draws_a_tune_and_stops(chromium, abc_run, tmp_path, request):
    with LiveServer(abc_run) as server:
        page = Page(chromium, server.url)
        try:
            page.wait("document.querySelectorAll('#model option').length > 0", "the model list")
            assert "tunes (gru 1x16, tiny-abc" in page.js("$('model').selectedOptions[0].textContent")
            assert page.js("$('prime').value") == "X:1\n"  # an ABC model starts the prime as a tune
            generate_tune(page, TUNE + "\n", 200)
            assert page.js("document.querySelector('.sample pre.text').textContent").startswith(TUNE + "\n")
            assert page.js("document.querySelectorAll('.tune .score svg path').length") > 20  # staff, notes
            verdict = page.js("document.querySelector('.tune .verdict').textContent")
            try:
                import music21  # noqa: F401

                assert verdict.startswith("valid tune"), verdict
            except ImportError:
                assert "checker unavailable" in verdict
            assert "characters in" in page.js("document.querySelector('.sample .figures').textContent")
            # Play: abcjs's synth fetches its note sounds from this server (nothing from the web).
            from charrnn.serve.tunes import wav_note

            wav_note.cache_clear()
            page.js("document.querySelector('.tune button').click(); true")
            deadline = time.monotonic() + 30
            while wav_note.cache_info().currsize == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert wav_note.cache_info().currsize > 0
            page.wait("document.querySelector('.tune button').textContent === 'Stop'", "playing")
            # Surprise colouring of the sample: one shaded span per character.
            page.js("document.querySelector('.sample .colour').click(); true")
            page.wait("document.querySelectorAll('.sample pre.text span').length > 50", "the surprise colours")
            assert "bits/char" in page.js("document.querySelector('.sample .note').textContent")
            assert "characters in" in page.js("document.querySelector('.sample .figures').textContent")
            page.js("$('paste-text').value = 'K:D\\nA2FA|'; $('paste-colour').click(); true")  # pasted text too
            page.wait("$('paste-out').querySelectorAll('span').length === 9", "the pasted text's colours")
            page.screenshot(tmp_path / "serve.png")
            if os.environ.get("CHARRNN_SERVE_SCREENSHOT"):  # how docs/serve.png is refreshed
                target = request.config.invocation_params.dir / os.environ["CHARRNN_SERVE_SCREENSHOT"]
                shutil.copy(tmp_path / "serve.png", target)
            # Stop: a million characters asked for, cancelled after the first ones arrive.
            page.js("$('prime').value = ''; $('length').value = 1000000; $('generate').click(); true")
            page.wait(
                "document.querySelectorAll('.sample').length === 2 && $('stop-button').disabled === false", "start"
            )
            page.wait("document.querySelector('.sample pre.text').textContent.length > 0", "the second stream")
            page.js("$('stop-button').click(); true")
            page.wait("$('status').textContent === 'stopped'", "the stop")
            assert page.js("$('generate').disabled") is False
            deadline = time.monotonic() + 10
            while server.app.state.pool.taken and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.app.state.pool.taken == 0  # the server's worker stopped too
        finally:
            page.close()


def test_a_tune_cut_at_the_length_limit_is_labelled_unfinished(chromium, abc_run):
    """The server says the stream stopped at `length`: the page labels its last tune unfinished
    without asking the checker, and the finished tune before it gets the checker's verdict."""
    cut_tune = TUNE.replace("X:1", "X:2").split("|")[0] + "|"  # its header and one bar, no end
    with LiveServer(abc_run) as server:
        page = Page(chromium, server.url)
        try:
            generate_tune(page, TUNE + "\n" + cut_tune, 1)  # one character more cannot end it
            page.wait("document.querySelectorAll('.tune .verdict').length === 2", "both tunes drawn")
            page.wait(
                "[...document.querySelectorAll('.tune .verdict')].every(v => !v.textContent.startsWith('checking'))",
                "both verdicts",
                120,
            )
            first, last = page.js("[...document.querySelectorAll('.tune .verdict')].map(v => v.textContent)")
            assert last == "unfinished (cut at the length limit)"
            assert "unfinished" not in first and "cut" not in first, first
        finally:
            page.close()
