"""Every command once with unpickling made impossible: pickle.load, pickle.loads, pickle.Unpickler
and torch.load all raise. A command that unpickled anything, itself or through a library looking
them up on those modules (torch, music21, sentencepiece...), would fail here. `bench` is left out:
it trains for minutes; it loads no file a user gives it."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import pytest
import torch
from conftest import TINY_TEXT, TINY_TRAIN

LOADS: list[str] = []

TUNE = "X:1\nT:Reel\nM:4/4\nL:1/8\nK:D\n|:d2fd cdec|d2fd e2dc:|\n"


def _refuse(name: str):
    def refused(*args, **kwargs):
        LOADS.append(name)
        raise AssertionError(f"{name} called: charrnn never unpickles")

    return refused


@pytest.fixture
def no_pickle(monkeypatch):
    LOADS.clear()
    for name in ("load", "loads"):
        monkeypatch.setattr(pickle, name, _refuse(f"pickle.{name}"))

    class RefusingUnpickler(pickle.Unpickler):  # a class still: libraries subclass it at import time
        def __init__(self, *args, **kwargs):
            _refuse("pickle.Unpickler")()

    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    monkeypatch.setattr(torch, "load", _refuse("torch.load"))
    yield LOADS


def _ok(result) -> None:
    assert result.exit_code == 0, result.stderr
    assert LOADS == []


def test_every_command_runs_without_unpickling(cli, tiny_corpus, no_pickle, local_mirror):
    for unpickle in (lambda: pickle.loads(pickle.dumps(1)), lambda: torch.load("x.pt")):
        with pytest.raises(AssertionError, match="charrnn never unpickles"):  # the trap is live
            unpickle()
    LOADS.clear()
    _ok(cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "2", "--eval-every", "2", "--out", "run"))
    _ok(cli("train", tiny_corpus, "--resume", "--out", "run", "--steps", "3"))
    _ok(cli("train", tiny_corpus, "--init-from", "run", "--steps", "1", "--out", "tuned"))
    _ok(cli("sample", "run", "--length", "20", "--seed", "1"))
    _ok(cli("info", "run"))
    _ok(cli("eval", "run", str(tiny_corpus)))
    _ok(cli("plot", "run"))
    _ok(cli("visualize", "run", "--text", str(tiny_corpus), "--out", "page.html"))
    _ok(cli("corpus", "list"))
    _ok(cli("corpus", "get", local_mirror))
    assert Path("corpora", f"{local_mirror}.txt").read_text(encoding="utf-8") == TINY_TEXT
    Path("tunes.abc").write_text("\n".join([TUNE] * 3))  # three tunes, a blank line apart
    pytest.importorskip("music21", reason="abc commands need the [music] extra")
    _ok(cli("abc", "check", "tunes.abc", "--midi", "midi"))
    _ok(cli("abc", "calibrate", "tunes.abc", "--sample", "2"))
    pytest.importorskip("onnx", reason="export needs the [export] extra")
    _ok(cli("export", "run", "--format", "web", "--out", "exported"))
    pytest.importorskip("httpx", reason="the serve check uses Starlette's TestClient (the [test] extra)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from charrnn.serve.app import create_app
    from charrnn.serve.generation import Limits, WorkerPool
    from charrnn.serve.registry import ModelRegistry

    with TestClient(create_app(ModelRegistry(Path("run")), WorkerPool(1, 1), Limits())) as client:
        assert client.get("/api/models").status_code == 200
        body = client.post("/api/generate", json={"model": "run", "length": 20, "seed": 1}).text
        assert "event: done" in body, body
    assert LOADS == []
