"""`charrnn serve` tells each sample's longest copy from the model's training text: in the `done`
event, as `charrnn copies --json` reports it, the index built once per model off the event loop,
and a one-line note (the sample still streams) when the run's corpus cannot be found."""

from __future__ import annotations

import json
import threading
import time
import warnings
from pathlib import Path

import pytest
from conftest import TINY_TEXT, TINY_TRAIN

pytest.importorskip("starlette", reason="charrnn serve needs the [serve] extra (starlette, uvicorn)")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the [test] extra)")

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 for its TestClient; httpx still works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

import charrnn.copies  # noqa: E402
from charrnn.checkpoint import load_model  # noqa: E402
from charrnn.serve.app import create_app  # noqa: E402
from charrnn.serve.copies import CopyIndexes  # noqa: E402
from charrnn.serve.registry import ModelRegistry  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

FIELDS = {"chars", "longest", "longest_at", "copied_share", "min_span", "longest_text"}


def _generate(client: TestClient, model: str, **settings) -> tuple[str, dict]:
    """The streamed text and the `done` event's data."""
    res = client.post("/api/generate", json={"model": model, **settings})
    assert res.status_code == 200, res.text
    text, done = "", None
    for block in res.text.split("\n\n"):
        if block.startswith("event: done\n"):
            done = json.loads(block.split("data: ", 1)[1])
        elif block.startswith("data: "):
            text += json.loads(block[len("data: ") :])["text"]
    assert done is not None, res.text
    return text, done


@pytest.fixture
def mirrored_run(cli, local_mirror, tmp_path) -> Path:
    """A run trained on a ready corpus that `charrnn copies` finds by name (see local_mirror)."""
    args = ["train", local_mirror, *TINY_TRAIN, "--steps", "2", "--eval-every", "2", "--device", "cpu"]
    assert cli(*args, "--precision", "fp32", "--out", tmp_path / "served" / "run").exit_code == 0
    return tmp_path / "served" / "run"


def test_done_tells_the_longest_copy_as_charrnn_copies_does(cli, mirrored_run, tmp_path):
    with TestClient(create_app(ModelRegistry(mirrored_run.parent))) as client:
        text, done = _generate(client, "run", prime="First", length=400, seed=3, temperature=0.5)
    copies = done["copies"]
    assert set(copies) == FIELDS and copies["min_span"] == 20
    new = text[len("First") :]
    (tmp_path / "new.txt").write_text(new, encoding="utf-8")
    result = cli("copies", mirrored_run, tmp_path / "new.txt", "--json")
    assert result.exit_code == 0, result.stderr
    (reported,) = json.loads(result.stdout)["texts"]
    assert {k: copies[k] for k in FIELDS - {"min_span", "longest_text"}} == {
        k: reported[k] for k in FIELDS - {"min_span", "longest_text"}
    }
    assert copies["chars"] == 400 and copies["longest"] >= 2  # a 2-step model still repeats letter pairs
    span, at = copies["longest_text"], copies["longest_at"]
    assert len(span) == copies["longest"] and span in new
    assert TINY_TEXT[at["offset"] : at["offset"] + len(span)] == span
    assert at["line"] == TINY_TEXT[: at["offset"]].count("\n") + 1


def test_a_copied_prime_is_left_out_and_a_copy_in_the_new_text_is_found(cli, mirrored_run):
    passage = TINY_TEXT[40:240]
    with TestClient(create_app(ModelRegistry(mirrored_run.parent))) as client:
        _, primed = _generate(client, "run", prime=passage, length=30, seed=1)
        _, greedy = _generate(client, "run", prime="", length=0)
    assert primed["copies"]["chars"] == 30 and primed["copies"]["longest"] < 30
    assert greedy["copies"] == {**greedy["copies"], "chars": 0, "longest": 0, "longest_at": None, "longest_text": ""}


def test_the_index_is_built_once_per_model_and_cached_on_disk(mirrored_run, monkeypatch):
    built = []
    real = charrnn.copies.build_index
    monkeypatch.setattr(charrnn.copies, "build_index", lambda text: built.append(1) or real(text))
    app = create_app(ModelRegistry(mirrored_run.parent))
    with TestClient(app) as client:
        for seed in range(3):
            _generate(client, "run", length=20, seed=seed)
    assert len(built) == 1 and app.state.copies.built_count() == 1
    assert list(charrnn.copies.index_dir().glob("*.sa.npy"))  # a restarted server reads it back
    with TestClient(create_app(ModelRegistry(mirrored_run.parent))) as client:
        _, done = _generate(client, "run", length=20, seed=0)
    assert len(built) == 1 and done["copies"]["chars"] == 20


def test_first_requests_at_once_build_the_index_once(mirrored_run, monkeypatch):
    built = []
    real = charrnn.copies.build_index

    def slow(text):
        built.append(threading.get_ident())
        time.sleep(0.3)  # long enough for every thread to ask before it is done
        return real(text)

    monkeypatch.setattr(charrnn.copies, "build_index", slow)
    loaded = load_model(mirrored_run / "best.safetensors")
    indexes = CopyIndexes()
    got = []
    threads = [threading.Thread(target=lambda: got.append(indexes.index(loaded))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and len(got) == 4 and all(g is got[0] for g in got)


def test_a_run_whose_corpus_is_gone_still_streams_and_says_where_it_looked(tmp_path, tiny_run):
    """tiny_run's corpus ('tiny') is a file it no longer finds by name."""
    import shutil

    shutil.copytree(tiny_run, tmp_path / "served" / "run")
    with TestClient(create_app(ModelRegistry(tmp_path / "served"))) as client:
        text, done = _generate(client, "run", length=50, seed=2)
    assert len(text) == 50 and done["characters"] == 50
    (note,) = done["copies"].values()
    assert note.startswith("not checked for copies of the training text: ") and "\n" not in note
    assert "cannot find its training corpus 'tiny' (looked in " in note and str(tmp_path / "tiny") in note
    assert note.endswith("put it back there, or check a saved sample with `charrnn copies RUN FILE --corpus PATH`")


def test_the_page_shows_copies_through_text_only():
    """The page's script puts every server string into text nodes (the browser test checks the page)."""
    from importlib import resources

    script = resources.files("charrnn.serve").joinpath("static/app.js").read_text(encoding="utf-8")
    page = resources.files("charrnn.serve").joinpath("page.html").read_text(encoding="utf-8")
    assert 'class="copies' in page and "showCopies(" in script
    assert "innerHTML" not in script.replace("never innerHTML", "") and "insertAdjacentHTML" not in script
