"""`charrnn serve`'s API in-process (Starlette's TestClient): listing, streaming, bad requests,
path safety, the model cache, surprise colouring, tunes and the page."""

from __future__ import annotations

import json
import os
import shutil
import threading
import warnings
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="charrnn serve needs the [serve] extra (starlette, uvicorn)")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the [test] extra)")

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 for its TestClient; httpx still works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

from charrnn.serve.app import create_app  # noqa: E402
from charrnn.serve.generation import Limits, WorkerPool  # noqa: E402
from charrnn.serve.registry import ModelRegistry  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


def events(body: str) -> list[tuple[str, dict]]:
    """(event name, data) of each server-sent event in a complete response body."""
    out = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
        out.append((name, data))
    return out


@pytest.fixture
def served(tmp_path, tiny_run) -> Path:
    """A served directory: run `a`, run `nested/b`, a loose checkpoint; and a run outside it."""
    root = tmp_path / "served"
    shutil.copytree(tiny_run, root / "a", ignore=shutil.ignore_patterns("*.png", "*.jsonl"))
    shutil.copytree(tiny_run, root / "nested" / "b", ignore=shutil.ignore_patterns("*.png", "*.jsonl"))
    shutil.copy(tiny_run / "best.safetensors", root / "loose.safetensors")
    shutil.copytree(tiny_run, tmp_path / "outside", ignore=shutil.ignore_patterns("*.png", "*.jsonl"))
    return root


@pytest.fixture
def client(served):
    app = create_app(ModelRegistry(served), WorkerPool(2, 2), Limits(max_length=2000))
    with TestClient(app) as c:
        yield c


def test_models_are_named_by_path_inside_the_served_directory(client):
    listed = client.get("/api/models").json()["models"]
    assert [m["name"] for m in listed] == ["a", "loose.safetensors", "nested/b"]
    info = listed[0]
    assert (info["cell"], info["size"], info["corpus"]) == ("gru", "1x16", "tiny")
    assert info["bpc"] > 0 and info["parameters"] > 0 and info["abc"] is False


def test_a_run_or_a_checkpoint_is_served_alone(served):
    assert list(ModelRegistry(served / "a").scan()) == ["a"]
    assert list(ModelRegistry(served / "loose.safetensors").scan()) == ["loose.safetensors"]


def test_same_seed_gives_the_text_of_charrnn_sample(client, served, cli):
    settings = {"prime": "All:\n", "temperature": 0.9, "top_k": 5, "top_p": 0.95, "length": 120, "seed": 7}
    res = client.post("/api/generate", json={"model": "a", **settings})
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream")
    got = events(res.text)
    text = "".join(d["text"] for name, d in got if name == "message")
    out = cli(
        "sample", served / "a", "--prime", "All:\n", "--temp", "0.9", "--top-k", "5", "--top-p", "0.95",
        "--length", "120", "--seed", "7",
    )  # fmt: skip
    assert out.exit_code == 0
    assert text + "\n" == out.stdout
    name, done = got[-1]
    assert name == "done" and done["characters"] == 120 and done["seed"] == 7 and done["seconds"] > 0
    assert all(set(d) == {"text"} for name, d in got[:-1])


def test_a_stop_string_ends_the_stream(client):
    got = events(client.post("/api/generate", json={"model": "a", "length": 2000, "seed": 1, "stop": ":"}).text)
    text = "".join(d["text"] for name, d in got if name == "message")
    assert text.endswith(":") and text.count(":") == 1 and got[-1][0] == "done"


def test_done_says_whether_the_length_limit_cut_the_text(client):
    """cut: the text reached `length`; a stop string that ends it (even on its last character) is no cut."""
    by_length = events(client.post("/api/generate", json={"model": "a", "length": 30, "seed": 1}).text)
    assert by_length[-1][0] == "done" and by_length[-1][1]["cut"] is True
    by_stop = events(client.post("/api/generate", json={"model": "a", "length": 2000, "seed": 1, "stop": ":"}).text)
    assert by_stop[-1][1]["cut"] is False
    text = "".join(d["text"] for name, d in by_stop if name == "message")
    exactly = {"model": "a", "length": len(text), "seed": 1, "stop": ":"}  # the stop string is the last character
    assert events(client.post("/api/generate", json=exactly).text)[-1][1]["cut"] is False
    short = {**exactly, "length": len(text) - 1}  # one character before the stop string: cut
    assert events(client.post("/api/generate", json=short).text)[-1][1]["cut"] is True
    assert events(client.post("/api/generate", json={"model": "a", "length": 0}).text)[-1][1]["cut"] is False


def test_no_seed_reports_the_seed_it_drew(client):
    first = events(client.post("/api/generate", json={"model": "a", "length": 40}).text)
    seed = first[-1][1]["seed"]
    again = events(client.post("/api/generate", json={"model": "a", "length": 40, "seed": seed}).text)
    assert "".join(d["text"] for n, d in first[:-1]) == "".join(d["text"] for n, d in again[:-1])
    assert len("".join(d["text"] for n, d in first[:-1])) == 40


BAD_REQUESTS = [
    ({"model": "nope"}, 404, "unknown model 'nope'"),
    ('{"model": "a", "temperature": NaN}', 400, "temperature must be a finite number"),
    ({"model": "a", "temperature": -0.5}, 400, "temperature must be >= 0"),
    ({"model": "a", "temperature": "hot"}, 400, "temperature must be a number"),
    ({"model": "a", "prime": "Zebra é"}, 400, "prime has 3 characters the model never saw"),
    ({"model": "a", "length": 2001}, 400, "length must be between 0 and 2000"),
    ({"model": "a", "length": 1.5}, 400, "length must be a whole number"),
    ({"model": "a", "top_p": 0}, 400, "top_p must be in (0, 1]"),
    ({"model": "a", "top_k": -1}, 400, "top_k must be >= 0"),
    ({"model": "a", "seed": 2**64}, 400, "seed must fit in 64 bits"),
    ({"model": "a", "temprature": 1}, 400, "unknown field 'temprature'"),
    ({"prime": "x"}, 400, "missing field 'model'"),
    ("[1, 2]", 400, "must be a JSON object"),
    ('{"model": "a",', 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    ("[" * 100_000, 400, "nested too deeply"),  # json.loads raised RecursionError: a 500
    ('{"model": "a", "length": 1' + "0" * 5000 + "}", 400, "too many digits"),  # int() refused it: a 500
]


@pytest.mark.parametrize("body,status,message", BAD_REQUESTS)
def test_a_bad_request_gets_one_clear_message_and_the_server_goes_on(client, body, status, message):
    if isinstance(body, dict):
        res = client.post("/api/generate", json=body)
    else:
        res = client.post("/api/generate", content=body if isinstance(body, bytes) else body.encode())
    assert res.status_code == status
    error = res.json()["error"]
    assert message in error and "\n" not in error
    assert client.post("/api/generate", json={"model": "a", "length": 5, "seed": 1}).status_code == 200
    assert client.app.state.pool.taken == 0  # a refused request gives its place back


def test_an_unknown_model_is_a_404_even_when_the_server_is_full(client):
    pool = client.app.state.pool
    for _ in range(pool.workers + pool.queue):
        pool.reserve()
    try:
        assert client.post("/api/generate", json={"model": "nope"}).status_code == 404
        assert client.post("/api/generate", json={"model": "a"}).status_code == 503
    finally:
        for _ in range(pool.workers + pool.queue):
            pool.release()


def test_a_body_over_the_limit_is_refused(client):
    res = client.post("/api/generate", content=b'{"model": "a", "prime": "' + b"a" * 1_100_000 + b'"}')
    assert res.status_code == 400 and "over 1000000 bytes" in res.json()["error"]


# ----------------------------------------------------------------------------- path safety


@pytest.fixture
def spy_loads(monkeypatch):
    """Every path the server hands to load_model."""
    import charrnn.serve.registry as registry

    seen: list[Path] = []
    real = registry.load_model

    def spy(path, *args, **kwargs):
        seen.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(registry, "load_model", spy)
    return seen


def test_no_name_reaches_outside_the_served_directory(client, served, spy_loads):
    outside = served.parent / "outside"
    os.symlink(outside, served / "linked-run")
    os.symlink(outside / "best.safetensors", served / "linked.safetensors")
    (served / "c").mkdir()
    os.symlink(outside / "best.safetensors", served / "c" / "best.safetensors")
    names = [
        "../outside",
        "nested/../../outside",
        str(outside),
        str(outside / "best.safetensors"),
        "a/best.safetensors",
        "linked-run",
        "linked.safetensors",
        "c",
        "",
        ".",
    ]
    for name in names:
        res = client.post("/api/generate", json={"model": name, "length": 5})
        assert res.status_code == 404, name
        assert "unknown model" in res.json()["error"]
    listed = {m["name"] for m in client.get("/api/models").json()["models"]}
    assert listed == {"a", "loose.safetensors", "nested/b"}  # no link is listed
    assert spy_loads == []
    assert client.post("/api/generate", json={"model": "nested/b", "length": 5}).status_code == 200
    assert [p.relative_to(served.resolve()) for p in spy_loads] == [Path("nested/b/best.safetensors")]


def test_a_file_swapped_for_a_link_after_listing_is_not_read(served, spy_loads):
    registry = ModelRegistry(served)
    target = served / "a" / "best.safetensors"
    target.unlink()
    os.symlink(served.parent / "outside" / "best.safetensors", target)
    with pytest.raises(Exception, match="no longer a plain file inside the served directory"):
        registry.load("a")
    assert spy_loads == []


def test_models_are_loaded_once_and_the_cache_is_bounded(served, spy_loads):
    registry = ModelRegistry(served, max_loaded=2)
    threads = [threading.Thread(target=registry.load, args=("a",)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(spy_loads) == 1  # four first requests at once: one load
    registry.load("nested/b")
    registry.load("loose.safetensors")  # the third model pushes out the least recently used ("a")
    assert registry.loaded_count() == 2
    registry.load("loose.safetensors")
    assert len(spy_loads) == 3
    registry.load("a")
    assert len(spy_loads) == 4


def test_a_damaged_checkpoint_is_listed_as_unusable_and_refused(client, served):
    (served / "broken.safetensors").write_bytes(b"PK\x03\x04 not a checkpoint")
    listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert "error" in listed["broken.safetensors"]
    res = client.post("/api/generate", json={"model": "broken.safetensors"})
    assert res.status_code == 422 and "never unpickles" in res.json()["error"]


# ----------------------------------------------------------------------------- surprise, tunes, page


def test_surprise_gives_each_character_its_bits_as_visualize_does(client, served):
    from charrnn.checkpoint import load_model
    from charrnn.visualize import analyze

    text = "All:\nSpeak, speak."
    res = client.post("/api/surprise", json={"model": "a", "text": text}).json()
    assert res["text"] == text and len(res["bits"]) == len(text)
    expected = analyze(load_model(served / "a" / "best.safetensors"), text).char_bits
    assert res["bits"] == pytest.approx(list(expected), abs=1e-3)
    too_long = client.post("/api/surprise", json={"model": "a", "text": "a" * 5001})
    assert too_long.status_code == 400 and "5001 characters" in too_long.json()["error"]


def test_surprise_leaves_the_shared_model_as_it_is(client):
    """Generations on other threads read the same model: scoring must not rebuild its weights
    (model.cpu() did, and a generation running then failed: 'zip() argument 2 is longer')."""
    rnn = client.app.state.registry.load("a").model.rnn
    flat = rnn._flat_weights
    assert client.post("/api/surprise", json={"model": "a", "text": "All:"}).status_code == 200
    assert rnn._flat_weights is flat


TUNE = "X:1\nT:Test tune\nM:4/4\nL:1/8\nK:G\nGABc dedB|dedB dedB|c2ec B2dB|c2A2 A4|]\n"


def test_a_tune_gets_the_checker_verdict_and_its_midi_file(client):
    pytest.importorskip("music21", reason="the ABC checker needs the [music] extra (music21)")
    verdict = client.post("/api/abc/check", json={"tune": TUNE}).json()
    assert verdict["valid"] is True and verdict["title"] == "Test tune"
    midi = client.post("/api/abc/midi", json={"tune": TUNE})
    assert midi.status_code == 200 and midi.content[:4] == b"MThd"
    broken = client.post("/api/abc/midi", json={"tune": "X:1\nT:x\nK:G\n"})
    assert broken.status_code == 422 and "no MIDI file for this tune" in broken.json()["error"]
    assert client.post("/api/abc/check", json={"tune": ""}).status_code == 400


def test_note_sounds_are_served_locally(client):
    res = client.get("/soundfont/acoustic_grand_piano-mp3/Bb3.mp3")
    assert res.status_code == 200 and res.content[:4] == b"RIFF"
    assert client.get("/soundfont/acoustic_grand_piano-mp3/H9.mp3").status_code == 404


def test_the_page_escapes_what_it_shows_and_loads_only_its_own_scripts(tmp_path, tiny_run):
    root = tmp_path / 'odd <b>&"name'
    shutil.copytree(tiny_run, root / "run")
    with TestClient(create_app(ModelRegistry(root))) as c:
        page = c.get("/")
        assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
        assert "odd &lt;b&gt;&amp;&quot;name" in page.text and "<b>" not in page.text
        assert 'src="http' not in page.text and "//cdn" not in page.text
        assert c.get("/static/vendor/abcjs/abcjs-basic-min.js").status_code == 200
        assert c.get("/static/app.js").status_code == 200


# ----------------------------------------------------------------------------- the command


def test_the_command_refuses_what_it_cannot_serve_in_one_line(cli, served):
    import socket

    from charrnn.serve.server import is_loopback

    out = cli("serve", served / "missing")
    assert out.exit_code == 2 and "nothing to serve at" in out.stderr and "Traceback" not in out.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        out = cli("serve", served, "--port", taken.getsockname()[1])
    assert out.exit_code == 2 and "cannot listen on 127.0.0.1" in out.stderr
    out = cli("serve", served, "--workers", "0")
    assert out.exit_code == 2 and "--workers must be between 1 and 256" in out.stderr
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "192.168.1.5", "example.org")] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]
