"""Directories as corpora: files chosen by content in a fixed order, what is skipped said once,
--include/--exclude, and the python-stdlib corpus built from the interpreter's own library."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from charrnn.data import corpora, source_tree
from charrnn.data.tokens import read_corpus_bytes
from charrnn.errors import CorpusError


def _tree(root: Path, files: dict[str, bytes | str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


@pytest.fixture
def project(tmp_path) -> Path:
    root = _tree(
        tmp_path / "project",
        {
            "src/main.c": "int main(void) { return 0; }\n",
            "src/util.h": "#define N 3\n",
            "README": "A project.\r\n",  # no extension: still text
            "b.py": "\ufeffprint('b')\n",  # a byte-order mark, dropped
            "a.py": "print('a')\n",
            "logo.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
            "old.txt": "caf\xe9\n".encode("latin-1"),
            "empty.txt": "",
            ".git/config": "[core]\n",
            "src/__pycache__/util.cpython-311.pyc": b"\x00\x01",
        },
    )
    os.symlink("..", root / "src" / "up")  # a loop back to the root
    return root


def test_a_tree_is_read_in_sorted_order_and_files_are_chosen_by_content(project):
    tree = source_tree.read_tree(project)
    assert tree.paths == ["README", "a.py", "b.py", "src/main.c", "src/util.h"]
    assert (
        tree.data().decode(tree.encoding)
        == "A project.\n\nprint('a')\n\nprint('b')\n\nint main(void) { return 0; }\n\n#define N 3\n"
    )
    assert dict(tree.skipped) == {
        "hidden": [".git"],
        "empty": ["empty.txt"],
        "binary (NUL bytes)": ["logo.png"],
        "not valid utf-8": ["old.txt"],
        "__pycache__ folder{s}": ["src/__pycache__"],
        "symlink loop{s}": ["src/up"],
    }
    (note,) = tree.notes()
    assert note.startswith(f"read 5 files from {project}; skipped 6: ")
    assert "1 binary (NUL bytes) (logo.png)" in note and "1 symlink loop (src/up)" in note


def test_the_encoding_decides_what_is_text(project):
    tree = source_tree.read_tree(project, encoding="latin-1")
    assert "old.txt" in tree.paths and "café" in tree.data().decode(tree.encoding)


def test_a_tree_in_utf16_gives_a_corpus_that_decodes_in_utf16(tmp_path):
    from charrnn.data.tokens import decode_corpus

    root = _tree(tmp_path / "t", {"a.txt": "één\n".encode("utf-16"), "b.txt": "twee\r\n".encode("utf-16")})
    corpus = read_corpus_bytes(root, encoding="utf-16")
    assert decode_corpus(corpus, "utf-16") == "één\n\ntwee\n"


def test_include_and_exclude_globs_pick_files_by_path_or_name(project):
    tree = source_tree.read_tree(project, include=["*.c", "*.h"])
    assert tree.paths == ["src/main.c", "src/util.h"]
    tree = source_tree.read_tree(project, exclude=["src", "*.py"])
    assert tree.paths == ["README"]
    tree = source_tree.read_tree(project, include=["*.py", "*.rs"])
    assert tree.paths == ["a.py", "b.py"]
    assert f"--include '*.rs' matched nothing in {project}" in tree.notes()


def test_a_directory_corpus_says_what_was_skipped(project):
    said = []
    corpus = corpora.resolve_corpus(str(project), log=said.append, include=["*.py"])
    assert corpus.data == b"print('a')\n\nprint('b')\n"
    assert len(said) == 1 and said[0].startswith("note: read 2 files") and "left out by --include" in said[0]


def test_globs_apply_to_directories_only(tiny_corpus):
    with pytest.raises(CorpusError, match="--include/--exclude pick files inside a directory"):
        read_corpus_bytes(tiny_corpus, include=["*.txt"])


def test_python_stdlib_is_the_library_without_tests_or_installed_packages(tmp_path, monkeypatch):
    fake = _tree(
        tmp_path / "lib",
        {
            "os.py": "import sys\n",
            "json/__init__.py": "from .decoder import x\n",
            "json/decoder.py": "x = 1\n",
            "test/test_os.py": "import os\n",
            "unittest/test/test_case.py": "pass\n",
            "site-packages/numpy/__init__.py": "pass\n",
            "encodings/cp1252.py": "decoding_table = ()\n",
            "LICENSE.txt": "license\n",
        },
    )
    monkeypatch.setattr(source_tree, "python_stdlib_root", lambda: fake)
    path = corpora.get_corpus("python-stdlib")
    assert path.read_text() == "from .decoder import x\n\nx = 1\n\nimport sys\n"
    assert corpora.corpus_status("python-stdlib") == "ready"


def test_python_stdlib_size_is_listed_before_it_is_built(cli):
    size = corpora.corpus_size("python-stdlib")
    assert size.startswith("about ") and float(size.split()[1]) > 1.0  # MB of this interpreter's library
    assert "python-stdlib" in cli("corpus", "list").stdout
