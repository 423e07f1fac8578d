"""Ready corpora: catalogue, local mirror with checksum, offline errors."""

from __future__ import annotations

import hashlib

import pytest

from charrnn.data import corpora
from charrnn.errors import CorpusError


def test_catalogue_names_tinyshakespeare_with_its_checksum():
    entry = corpora.catalogue()["tinyshakespeare"]
    assert entry["sha256"] == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert entry["url"].startswith("https://")


def test_get_from_mirror_verifies_and_materialises(shakespeare, cli):
    result = cli("corpus", "get", "tinyshakespeare")
    assert result.exit_code == 0, result.stderr
    path = corpora.corpora_dir() / "tinyshakespeare.txt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == corpora.catalogue()["tinyshakespeare"]["sha256"]
    assert corpora.corpus_status("tinyshakespeare") == "ready"
    assert cli("corpus", "list").stdout.count("ready") >= 1


def test_mirror_with_wrong_content_is_refused(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "tinyshakespeare.txt").write_text("not shakespeare")
    monkeypatch.setenv("CHARRNN_MIRROR", str(mirror))
    with pytest.raises(CorpusError, match="does not match"):
        corpora.get_corpus("tinyshakespeare")
    assert not (corpora.corpora_dir() / "tinyshakespeare.txt").exists()


def test_offline_without_mirror_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_MIRROR", str(tmp_path / "empty"))
    monkeypatch.setitem(corpora.catalogue.__globals__, "DOWNLOAD_TIMEOUT", 2)
    monkeypatch.setattr(corpora.urllib.request, "urlopen", _offline)
    with pytest.raises(CorpusError, match="CHARRNN_MIRROR"):
        corpora.get_corpus("tinyshakespeare")


def _offline(*args, **kwargs):
    raise corpora.urllib.error.URLError("network unreachable")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(CorpusError, match="tinyshakespeare"):
        corpora.resolve_corpus("no-such-corpus")


def test_a_near_miss_of_a_ready_corpus_is_suggested():
    with pytest.raises(CorpusError, match="corpus not found: tinyshakespear: did you mean tinyshakespeare\\?"):
        corpora.resolve_corpus("tinyshakespear")
    with pytest.raises(CorpusError, match="unknown corpus 'folkabc': did you mean folk-abc\\?"):
        corpora.get_corpus("folkabc")
    with pytest.raises(CorpusError) as far:
        corpora.resolve_corpus("zzz")
    assert "did you mean" not in str(far.value)
