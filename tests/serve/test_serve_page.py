"""`charrnn serve`'s page in a real browser (headless Chromium, driven by Playwright): it lists the
models, streams a generation, draws a finished tune as SVG with the checker's verdict, plays it with
sounds from the server, colours the sample by surprise, and Stop cancels. Skipped where Chromium or
Playwright is absent."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import train_tiny_run

pytest.importorskip("uvicorn", reason="charrnn serve needs the [serve] extra (starlette, uvicorn)")

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


def wait(page, expression: str, what: str, timeout: float = 60) -> None:
    """Wait until the JavaScript `expression` holds on the page; say what did not happen, with the
    page's status line, when it does not."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        # A function, not a bare expression: Playwright would eval() a string, which the page's CSP forbids.
        page.wait_for_function(f"() => ({expression})", timeout=timeout * 1000)
    except PlaywrightTimeout:
        status = page.locator("#status").text_content()
        raise AssertionError(f"timed out waiting for {what}; the page's status line: {status!r}") from None


def open_served(pages, server: LiveServer):
    """The page of `server`, once it has listed its models."""
    page = pages.open(server.url, width=1100, height=1357)  # the size of docs/serve.png
    wait(page, "document.querySelectorAll('#model option').length > 0", "the model list")
    return page


def generate_tune(page, prime: str, length: int, seed: int = 1) -> None:
    """Fill the form, press Generate, wait for streamed text and a drawn tune, then for the end."""
    page.fill("#prime", prime)
    page.fill("#length", str(length))
    page.fill("#seed", str(seed))
    page.click("#generate")
    wait(page, f"(document.querySelector('.sample pre.text')?.textContent.length ?? 0) > {len(prime)}", "streamed text")
    wait(page, "document.querySelector('.tune .score svg') !== null", "the tune drawn as SVG")
    wait(page, "$('status').textContent === 'done'", "the end of the generation")
    wait(page, "!document.querySelector('.tune .verdict').textContent.startsWith('checking')", "the verdict", 120)


def test_the_page_streams_draws_a_tune_and_stops(pages, abc_run, tmp_path, request):
    with LiveServer(abc_run) as server:
        page = open_served(pages, server)
        assert "tunes (gru 1x16, tiny-abc" in page.evaluate("$('model').selectedOptions[0].textContent")
        assert page.input_value("#prime") == "X:1\n"  # an ABC model starts the prime as a tune
        generate_tune(page, TUNE + "\n", 200)
        sample = page.locator(".sample").first
        assert sample.locator("pre.text").text_content().startswith(TUNE + "\n")
        assert page.locator(".tune .score svg path").count() > 20  # staff, notes
        verdict = page.locator(".tune .verdict").first.text_content()
        try:
            import music21  # noqa: F401

            assert verdict.startswith("valid tune"), verdict
        except ImportError:
            assert "checker unavailable" in verdict
        assert "characters in" in sample.locator(".figures").text_content()
        # Play: abcjs's synth fetches its note sounds from this server (nothing from the web).
        from charrnn.serve.tunes import wav_note

        wav_note.cache_clear()
        play = page.locator(".tune button").first
        with page.expect_response(lambda res: "/soundfont/" in res.url, timeout=30_000) as sound:
            play.click()
        assert sound.value.ok and sound.value.url.startswith(server.url)
        assert wav_note.cache_info().currsize > 0
        wait(page, "document.querySelector('.tune button').textContent === 'Stop'", "playing")
        # Surprise colouring of the sample: one shaded span per character.
        sample.locator(".colour").click()
        wait(page, "document.querySelectorAll('.sample pre.text span').length > 50", "the surprise colours")
        assert "bits/char" in sample.locator(".note").text_content()
        assert "characters in" in sample.locator(".figures").text_content()
        page.fill("#paste-text", "K:D\nA2FA|")  # pasted text too
        page.click("#paste-colour")
        wait(page, "$('paste-out').querySelectorAll('span').length === 9", "the pasted text's colours")
        page.screenshot(path=tmp_path / "serve.png")
        if os.environ.get("CHARRNN_SERVE_SCREENSHOT"):  # how docs/serve.png is refreshed
            target = request.config.invocation_params.dir / os.environ["CHARRNN_SERVE_SCREENSHOT"]
            shutil.copy(tmp_path / "serve.png", target)
        # Stop: a million characters asked for, cancelled after the first ones arrive.
        page.fill("#prime", "")
        page.fill("#length", "1000000")
        page.click("#generate")
        wait(page, "document.querySelectorAll('.sample').length === 2 && $('stop-button').disabled === false", "start")
        wait(page, "document.querySelector('.sample pre.text').textContent.length > 0", "the second stream")
        page.click("#stop-button")
        wait(page, "$('status').textContent === 'stopped'", "the stop")
        assert page.is_enabled("#generate")
        deadline = time.monotonic() + 10  # the server's side: no page event tells when its worker is free
        while server.app.state.pool.taken and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.app.state.pool.taken == 0  # the server's worker stopped too


def test_a_tune_cut_at_the_length_limit_is_labelled_unfinished(pages, abc_run):
    """The server says the stream stopped at `length`: the page labels its last tune unfinished
    without asking the checker, and the finished tune before it gets the checker's verdict."""
    cut_tune = TUNE.replace("X:1", "X:2").split("|")[0] + "|"  # its header and one bar, no end
    with LiveServer(abc_run) as server:
        page = open_served(pages, server)
        generate_tune(page, TUNE + "\n" + cut_tune, 1)  # one character more cannot end it
        wait(page, "document.querySelectorAll('.tune .verdict').length === 2", "both tunes drawn")
        wait(
            page,
            "[...document.querySelectorAll('.tune .verdict')].every(v => !v.textContent.startsWith('checking'))",
            "both verdicts",
            120,
        )
        first, last = page.locator(".tune .verdict").all_text_contents()
        assert last == "unfinished (cut at the length limit)"
        assert "unfinished" not in first and "cut" not in first, first
