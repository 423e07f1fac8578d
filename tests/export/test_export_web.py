"""`charrnn export --format web`: the folder, the page's escaping, and greedy parity in headless Chromium."""

from __future__ import annotations

import functools
import html
import re
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'charrnn[export]'")

from conftest import headless  # noqa: E402
from test_export import louder, trained_run  # noqa: E402


@pytest.fixture(scope="module")
def web_run(tmp_path_factory) -> Path:
    return louder(trained_run(tmp_path_factory.mktemp("web"), cell="gru"))


def test_the_folder_holds_the_page_the_model_and_the_runtime_with_its_license(web_run, cli, tmp_path):
    out = tmp_path / "web"
    result = cli("export", web_run, "--format", "web", "--out", out)
    assert result.exit_code == 0, result.output
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == [
        "index.html",
        "model.onnx",
        "ort/LICENSE",
        "ort/SOURCE.txt",
        "ort/ort-wasm-simd-threaded.wasm",
        "ort/ort.wasm.bundle.min.mjs",
        "tokenizer.json",
    ]
    assert "MIT License" in (out / "ort" / "LICENSE").read_text() and "http.server" in result.stderr
    page = (out / "index.html").read_text(encoding="utf-8")
    # Offline: the page names no other host (only http://127.0.0.1 in the instructions).
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "cdn" not in page.lower()
    assert not re.search(r"__[A-Z]+__", page), "a template marker was left in the page"


def test_values_in_the_page_are_escaped_for_where_they_land(web_run, cli, tmp_path):
    hostile = tmp_path / '<img src=x onerror=alert(1)>&"<!--'
    shutil.copytree(web_run, hostile)
    out = tmp_path / "web"
    assert cli("export", hostile, "--format", "web", "--out", out).exit_code == 0
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "<img" not in page and "<!--" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;&amp;&quot;&lt;!--" in page


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


def page_text(chromium: str, url: str) -> str:
    """The page's output text after it ran, from the DOM headless Chromium dumps."""
    # Virtual time: the page's timers run as fast as the work allows, and the dump waits for them.
    done = headless(chromium, "--virtual-time-budget=120000", "--dump-dom", url, timeout=180)
    state = re.search(r'<body data-state="(\w+)"', done.stdout)
    output = re.search(r'<pre id="output">(.*?)</pre>', done.stdout, re.S)
    status = re.search(r'<div id="status"[^>]*>(.*?)</div>', done.stdout, re.S)
    assert state and output, f"no page in Chromium's output: {done.stderr[-500:]}"
    assert state.group(1) == "done", f"page state {state.group(1)}: {status.group(1) if status else ''}"
    return html.unescape(re.sub(r"<[^>]+>", "", output.group(1)))


def test_the_page_writes_charrnn_samples_greedy_text_in_headless_chromium(web_run, cli, tmp_path, serve, chromium):
    out = tmp_path / "web"
    assert cli("export", web_run, "--format", "web", "--out", out).exit_code == 0
    prime = "All:\nSp"
    expected = cli("sample", web_run, "--temp", "0", "--length", "300", "--prime", prime).stdout
    assert len(set(expected[len(prime) :])) > 3, "greedy text of one repeated character proves little"
    url = serve(out) + "/index.html?prime=All%3A%0ASp&temp=0&length=300&run=1"
    text = page_text(chromium, url)
    assert text + "\n" == expected


def test_from_a_file_url_the_page_says_to_serve_the_folder(web_run, cli, tmp_path, chromium):
    out = tmp_path / "web"
    assert cli("export", web_run, "--format", "web", "--out", out).exit_code == 0
    dom = headless(chromium, "--virtual-time-budget=20000", "--dump-dom", (out / "index.html").as_uri()).stdout
    assert '<body data-state="error">' in dom
    assert re.search(r'<div id="status" class="error">[^<]*python -m http.server', dom)
