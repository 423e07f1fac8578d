"""The browser tests' guard (conftest's `pages`): a page reaches loopback and its own files only,
and whatever else it asks for is stopped and named."""

from __future__ import annotations

import pytest
from conftest import reaches_beyond_loopback

REMOTE_PAGE = """<!doctype html><body><img src="here.png">
<script src="https://cdn.example.invalid/lib.js"></script>
<script>
(async () => {
  const tries = {};
  for (const [name, url] of [["remote", "http://10.0.0.1/data"], ["local", "/data.txt"]]) {
    tries[name] = await fetch(url).then(r => r.text(), e => "failed");
  }
  const socket = new WebSocket("wss://socket.example.invalid/");
  tries.socket = await new Promise(done => { socket.onopen = () => done("open"); socket.onclose = () => done("closed"); });
  document.body.dataset.tries = JSON.stringify(tries);
})();
</script></body>"""


@pytest.mark.parametrize(
    "url, beyond",
    [
        ("http://127.0.0.1:8000/", False),
        ("http://localhost/x", False),
        ("ws://[::1]:9/", False),
        ("file:///tmp/page.html", False),
        ("data:text/plain,hi", False),
        ("https://cdn.example.invalid/lib.js", True),
        ("http://10.0.0.1/", True),
        ("wss://127.0.0.1.example.invalid/", True),
    ],
)
def test_what_counts_as_beyond_loopback(url, beyond):
    assert reaches_beyond_loopback(url) is beyond


def test_a_page_reaches_loopback_and_nothing_else(pages, serve, tmp_path):
    (tmp_path / "data.txt").write_text("from loopback")
    (tmp_path / "index.html").write_text(REMOTE_PAGE)
    page = pages.open(serve(tmp_path) + "/index.html")
    page.wait_for_function("() => document.body.dataset.tries !== undefined")
    tries = page.evaluate("JSON.parse(document.body.dataset.tries)")
    assert tries == {"remote": "failed", "local": "from loopback", "socket": "closed"}
    assert sorted(pages.attempted) == [
        "http://10.0.0.1/data",
        "https://cdn.example.invalid/lib.js",
        "wss://socket.example.invalid/",
    ]
    pages.attempted.clear()  # seen and checked here; the fixture would fail the test for them
