"""charrnn visualize: the analysis, the unit proposals, and the page rendered in headless Chromium."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TEXT, TINY_TRAIN, train_tiny_run

SAMPLE_TEXT = 'First Citizen:\nSpeak, "speak" (all).\n\nAll:\nResolved. resolved.\n' * 3


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("visualize")
    text = TINY_TEXT + 'Speak "(quoted)" speak.\n'
    return train_tiny_run(root, "--layers", "2", "--steps", "10", "--eval-every", "200", text=text)


def test_surprise_matches_eval_of_the_same_text(run):
    from charrnn.checkpoint import load_model
    from charrnn.evaluation import evaluate_text
    from charrnn.visualize import analyze

    loaded = load_model(run / "best.safetensors")
    analysis = analyze(loaded, SAMPLE_TEXT)
    assert analysis.text == SAMPLE_TEXT
    assert analysis.char_bits.sum() == pytest.approx(analysis.token_bits.sum())
    # One stream, one window, fp32: the same conditional probabilities as the step-by-step path.
    score = evaluate_text(loaded, SAMPLE_TEXT, num_streams=1, seq_len=len(SAMPLE_TEXT), precision="fp32")
    assert analysis.bits_per_char == pytest.approx(score.bits_per_char, rel=1e-4)
    assert len(analysis.guesses) == len(SAMPLE_TEXT) and all(len(g) == 5 for g in analysis.guesses)
    probs = [p for _, p in analysis.guesses[0]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-3
    names = [t.name for t in analysis.tracks]
    assert names == ["h", "c"] and analysis.tracks[0].values.shape == (len(SAMPLE_TEXT), 32)


def test_layer_choice_and_range(run):
    from charrnn.checkpoint import load_model
    from charrnn.errors import ConfigError
    from charrnn.visualize import analyze

    loaded = load_model(run / "best.safetensors")
    first, top = analyze(loaded, SAMPLE_TEXT, layer=1), analyze(loaded, SAMPLE_TEXT)
    assert top.layer == 2 and not np.allclose(first.tracks[0].values, top.tracks[0].values)
    with pytest.raises(ConfigError, match="--layer must be between 1 and 2"):
        analyze(loaded, SAMPLE_TEXT, layer=3)


def test_text_features():
    from charrnn.visualize import text_features

    f = text_features('ab "cd" (e)\nxy')
    assert f["inside double quotes"].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert f["inside brackets"].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert f["position in the line"].tolist()[-4:] == [11, 0, 1, 2]


def test_proposals_find_a_planted_quote_unit():
    from charrnn.visualize import Analysis, Track, propose_units, text_features

    text = 'He said "yes, go" and "no" then left. "Why?" she asked, "why not?"\n' * 4
    quote = text_features(text)["inside double quotes"]
    rng = np.random.default_rng(0)
    values = rng.normal(size=(len(text), 16)).astype(np.float32)
    values[:, 11] = quote + 0.3 * rng.normal(size=len(text))  # unit 11 tracks quotes, noisily
    analysis = Analysis(text, np.arange(len(text)), np.zeros(len(text)), [], [Track("h", values)], 1)
    best = [p for p in propose_units(analysis) if p.feature == "inside double quotes"][0]
    assert (best.track, best.unit) == ("h", 11) and best.r > 0.8


def _page_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)
    assert match, "no data block in the page"
    return json.loads(match.group(1))


def test_page_is_self_contained(cli, run, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text(SAMPLE_TEXT, encoding="utf-8")
    out = tmp_path / "page.html"
    result = cli("visualize", run, "--text", text, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and "bits/char" in result.stderr
    html = out.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)\s*=|https?://|@import", html), "the page must not load anything"
    data = _page_data(html)
    assert data["text"] == text.read_text(encoding="utf-8")
    assert len(data["charBits"]) == len(data["charToken"]) == len(data["text"])
    assert data["proposals"] and {"feature", "track", "unit", "r"} <= set(data["proposals"][0])


def test_page_data_cannot_break_out_of_its_script_block():
    from charrnn.visualize import render_page

    text = "x</script><script>alert(1)</script><!--\u2028\u2029&amp;"
    html = render_page({"title": "<b>t</b> & co", "text": text})
    assert "<title>&lt;b&gt;t&lt;/b&gt; &amp; co</title>" in html
    assert _page_data(html)["text"] == text
    assert html.count("</script>") == 2  # the data block's and the page script's own
    block = html[html.index('id="data">') : html.index("</script>")]
    assert not any(c in block[len('id="data">') :] for c in "<>&\u2028\u2029"), block


def test_a_placeholder_inside_a_value_is_not_substituted():
    from charrnn.visualize import render_page

    html = render_page({"title": "run __DATA__ __TITLE__", "text": "__TITLE__ and __DATA__"})
    assert html.count("<h1>run __DATA__ __TITLE__</h1>") == 1
    assert _page_data(html) == {"title": "run __DATA__ __TITLE__", "text": "__TITLE__ and __DATA__"}


def test_visualize_cuts_long_text_and_drops_unknown(cli, run, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("\u00e9" + SAMPLE_TEXT * 20, encoding="utf-8")
    out = tmp_path / "page.html"
    result = cli("visualize", run, "--text", text, "--out", out, "--max-chars", "300")
    assert result.exit_code == 0, result.stderr
    assert "left out" in result.stderr
    assert _page_data(out.read_text(encoding="utf-8"))["text"] == (SAMPLE_TEXT * 20)[:300]


# ----------------------------------------------------------------------------- a real browser


def test_page_renders_colored_text_in_chromium(cli, run, tmp_path, pages):
    image = pytest.importorskip("matplotlib.image", reason="reading the screenshot needs matplotlib (charrnn[plot])")
    text = tmp_path / "in.txt"
    text.write_text(SAMPLE_TEXT, encoding="utf-8")
    page_file = tmp_path / "page.html"
    assert cli("visualize", run, "--text", text, "--out", page_file).exit_code == 0
    page = pages.open(page_file.as_uri(), width=1200, height=800)
    # The script built one span per character in each of the two panels.
    assert page.locator("[data-i]").count() == 2 * len(SAMPLE_TEXT)
    shot = tmp_path / "shot.png"
    page.screenshot(path=shot)
    rgb = image.imread(shot)[..., :3]  # (H, W, 3) floats in [0, 1]
    assert rgb.shape[:2] == (800, 1200)
    saturation = rgb.max(axis=-1) - rgb.min(axis=-1)
    red = (rgb[..., 0] - rgb[..., 2] > 0.15) & (saturation > 0.15)
    blue = (rgb[..., 2] - rgb[..., 0] > 0.15) & (saturation > 0.15)
    # Colored character backgrounds: the surprise panel is red, the unit panel red and/or blue.
    assert red.sum() > 2000, f"only {red.sum()} reddish pixels: the text was not colored"
    lower = slice(rgb.shape[0] // 2, None)  # the unit panel: activations in red and blue
    assert (red[lower] | blue[lower]).sum() > 1000
    # The mouse over a character of either panel outlines it in both and its tooltip lists the guesses.
    page.hover('#units [data-i="7"]')
    assert page.locator('.hover[data-i="7"]').count() == 2
    assert page.locator("#tip").is_visible() and "the model guessed" in page.locator("#tip").inner_text()
    # #hover=N pins the tooltip of character N, for screenshots taken with no mouse.
    pinned = pages.open(page_file.as_uri() + "#hover=3")
    tip = pinned.locator("#tip")
    assert tip.evaluate("t => t.style.display") == "block" and "the model guessed" in tip.inner_html()
    assert tip.inner_html().count("<tr>") == 5


ATTACK = "<img src=x onerror=document.body.dataset.pwned=1>"


def test_crafted_names_and_text_do_not_run_as_script(cli, tmp_path, pages):
    """A run named with a placeholder and a text line that is HTML (both known to the model):
    the page shows them as text, and no script of theirs runs in a real browser."""
    corpus = tmp_path / "attack.txt"
    corpus.write_text(TINY_TEXT + (ATTACK + "\n") * 20, encoding="utf-8")
    run = tmp_path / "__DATA__<img src=x onerror=document.body.dataset.pwned=2> __TITLE__"
    trained = cli("train", corpus, *TINY_TRAIN, "--steps", "2", "--out", run)
    assert trained.exit_code == 0, trained.stderr
    text = tmp_path / "in.txt"
    text.write_text("Speak.\n" + ATTACK + "\n", encoding="utf-8")
    page_file = tmp_path / "page.html"
    assert cli("visualize", run, "--text", text, "--out", page_file).exit_code == 0
    assert _page_data(page_file.read_text(encoding="utf-8"))["text"] == text.read_text(encoding="utf-8")
    # networkidle: an <img src=x> the page made would have failed to load, and its onerror run, by then.
    page = pages.open(page_file.as_uri(), wait_until="networkidle")
    assert page.evaluate("document.body.getAttributeNames()") == []  # no data-pwned
    assert page.locator("img").count() == 0
    # The script did run (one span per character in each panel) and the title is text.
    assert page.locator("[data-i]").count() == 2 * len(text.read_text(encoding="utf-8"))
    titles = page.locator("h1").evaluate_all("hs => hs.map(h => h.innerHTML)")
    assert f"charrnn: {html.escape(run.name, quote=False)}/best.safetensors" in titles
