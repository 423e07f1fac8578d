"""`charrnn export --format web`: the folder, the page's escaping, and greedy parity in headless Chromium
(driven by Playwright)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'charrnn[export]'")

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


def finished(page) -> str:
    """The page's state once it has finished, with its status line: done or error."""
    page.wait_for_function("() => ['done', 'error'].includes(document.body.dataset.state)")
    return f"{page.evaluate('document.body.dataset.state')}: {page.locator('#status').text_content()}"


def test_the_page_writes_charrnn_samples_greedy_text_in_headless_chromium(web_run, cli, tmp_path, serve, pages):
    out = tmp_path / "web"
    assert cli("export", web_run, "--format", "web", "--out", out).exit_code == 0
    prime = "All:\nSp"
    expected = cli("sample", web_run, "--temp", "0", "--length", "300", "--prime", prime).stdout
    assert len(set(expected[len(prime) :])) > 3, "greedy text of one repeated character proves little"
    page = pages.open(serve(out) + "/index.html?prime=All%3A%0ASp&temp=0&length=300&run=1")
    assert finished(page).startswith("done: ")
    assert page.locator("#output").text_content() + "\n" == expected


def test_from_a_file_url_the_page_says_to_serve_the_folder(web_run, cli, tmp_path, pages):
    out = tmp_path / "web"
    assert cli("export", web_run, "--format", "web", "--out", out).exit_code == 0
    page = pages.open((out / "index.html").as_uri())
    assert finished(page).startswith("error: ")
    status = page.locator("#status")
    assert status.get_attribute("class") == "error"
    assert re.match(r"[^<]*python -m http\.server", status.inner_html()), status.inner_html()
