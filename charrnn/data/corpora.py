"""Ready corpora: a catalogue of names, a local mirror, download with a checksum, builders.

The catalogue (`catalogue.json`, package data read with importlib.resources, so it travels
with any install) names each corpus with its source (a URL and SHA-256, or an offline builder). `get_corpus(name)` materialises `corpora/NAME.txt` once: from the file already
there, else from the mirror directory named by CHARRNN_MIRROR, else from the network, and
the checksum is verified every time a copy is made. Corpora are never part of the repository.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

from ..atomic import write_atomic
from ..errors import CorpusError
from .tokens import CorpusBytes, read_corpus_bytes

CATALOGUE = "catalogue.json"  # package data of charrnn.data
DOWNLOAD_TIMEOUT = 30


def catalogue() -> dict[str, dict[str, Any]]:
    source = resources.files("charrnn.data").joinpath(CATALOGUE)
    try:
        entries: dict[str, dict[str, Any]] = json.loads(source.read_text(encoding="utf-8"))
        return entries
    except (OSError, json.JSONDecodeError) as exc:
        raise CorpusError(f"cannot read the corpus catalogue {source}: {exc}") from None


def corpora_dir() -> Path:
    """Where ready corpora are materialised: $CHARRNN_CORPORA, else ./corpora."""
    return Path(os.environ.get("CHARRNN_CORPORA", "corpora"))


def mirror_dirs() -> list[Path]:
    raw = os.environ.get("CHARRNN_MIRROR", "")
    return [Path(p) for p in raw.split(os.pathsep) if p]


def find_corpus(name: str) -> Path | None:
    """A ready corpus where it already is (./corpora or the mirror), never downloaded (the benchmark's way)."""
    for folder in [corpora_dir(), *mirror_dirs()]:
        path = folder / f"{name}.txt"
        if path.is_file():
            return path
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def corpus_status(name: str) -> str:
    """'ready', or how `get_corpus` would obtain it."""
    entry = catalogue()[name]
    if (corpora_dir() / f"{name}.txt").exists():
        return "ready"
    if "builder" in entry:
        return "built on demand (offline)"
    if any((m / f"{name}.txt").exists() for m in mirror_dirs()):
        return "in the local mirror"
    return "downloaded on demand"


def get_corpus(name: str, log: Callable[[str], None] = lambda _: None) -> Path:
    """Path of corpora/NAME.txt, materialising it first when needed."""
    entries = catalogue()
    if name not in entries:
        raise CorpusError(
            f"unknown corpus {name!r}{_did_you_mean(name, entries)} (ready corpora: {', '.join(sorted(entries))})"
        )
    entry = entries[name]
    target = corpora_dir() / f"{name}.txt"
    expected = entry.get("sha256")
    if target.exists() and (expected is None or _sha256(target) == expected):
        if entry.get("builder") != "python-stdlib" or _file_starts(target) is not None:
            return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusError(f"cannot create {target.parent}: {exc.strerror or exc}") from None
    if "builder" in entry:
        data, starts = _build(entry["builder"], name, log)
        if starts is not None:  # where each file starts: the split holds out whole files
            index = {"sha256": hashlib.sha256(data).hexdigest(), "starts": starts}
            write_atomic(_starts_path(target), json.dumps(index).encode(), durable=False)
        write_atomic(target, data, durable=False)
        return target
    for mirror in mirror_dirs():
        candidate = mirror / f"{name}.txt"
        if candidate.exists():
            if expected and _sha256(candidate) != expected:
                raise CorpusError(f"{candidate} (from CHARRNN_MIRROR) does not match the catalogue's sha256 for {name}")
            log(f"copying {name} from the mirror {mirror}")
            write_atomic(target, candidate.read_bytes(), durable=False)
            return target
    log(f"downloading {name} from {entry['url']}")
    try:
        with urllib.request.urlopen(entry["url"], timeout=DOWNLOAD_TIMEOUT) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CorpusError(
            f"cannot download {name} ({reason}); offline? put the file at {target} "
            f"or set CHARRNN_MIRROR to a directory holding {name}.txt"
        ) from None
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise CorpusError(f"the download of {name} does not match its sha256; nothing was written")
    write_atomic(target, data, durable=False)
    return target


def _starts_path(target: Path) -> Path:
    return target.with_name(target.stem + ".files.json")


def _file_starts(target: Path) -> list[int] | None:
    """Where each file of a corpus built from a tree starts, when the index beside it matches it."""
    try:
        index = json.loads(_starts_path(target).read_text())
        starts: list[int] = index["starts"]
        if index["sha256"] != _sha256(target) or not all(isinstance(s, int) for s in starts):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return starts


def _build(builder: str, name: str, log: Callable[[str], None]) -> tuple[bytes, list[int] | None]:
    """The UTF-8 text of a corpus built offline, from what this machine already has, and where
    each of its files starts (for a corpus built from a tree)."""
    if builder == "music21-abc":
        from ..music.folk import build_folk_abc  # needs the [music] extra

        log(f"building {name} from music21's bundled tunes (offline, about a minute)")
        return build_folk_abc().encode("utf-8"), None
    if builder == "python-stdlib":
        from .source_tree import python_stdlib_root, read_python_stdlib

        log(f"building {name} from {python_stdlib_root()} (offline, a few seconds)")
        tree = read_python_stdlib()
        log(f"{name}: {len(tree.paths):,} modules")
        return tree.data_and_starts()
    raise CorpusError(f"the catalogue names an unknown builder {builder!r} for {name}")


def corpus_size(name: str) -> str:
    """Its size in MB: the file's when it is here, else the expected size ("about ...")."""
    path = corpora_dir() / f"{name}.txt"
    if path.exists():
        return f"{path.stat().st_size / 1e6:.1f} MB"
    entry = catalogue()[name]
    if entry.get("builder") == "python-stdlib":
        from .source_tree import python_stdlib_size

        expected = python_stdlib_size()
    else:
        expected = entry.get("bytes", 0)
    return f"about {expected / 1e6:.1f} MB" if expected else "unknown"


def resolve_corpus(
    arg: str,
    log: Callable[[str], None] = lambda _: None,
    *,
    encoding: str = "utf-8",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> CorpusBytes:
    """A path to a file or directory, or the name of a ready corpus. What reading a directory
    left out is told through `log`."""
    path = Path(arg)
    if path.exists():
        corpus = read_corpus_bytes(path, encoding=encoding, include=include, exclude=exclude)
        for note in corpus.notes:
            log(f"note: {note}")
        return corpus
    entries = catalogue()
    if arg in entries:
        if include or exclude:
            raise CorpusError(f"--include/--exclude pick files inside a directory, and {arg} is a ready corpus")
        path = get_corpus(arg, log)
        corpus = read_corpus_bytes(path, name=arg)
        corpus.file_starts = _file_starts(path)
        return corpus
    raise CorpusError(
        f"corpus not found: {arg}{_did_you_mean(arg, entries)} "
        f"(not a file or directory, nor a ready corpus: {', '.join(sorted(entries))})"
    )


def _did_you_mean(name: str, entries: dict[str, Any]) -> str:
    """': did you mean tinyshakespeare?' for a near miss of a ready corpus's name, else ''."""
    close = difflib.get_close_matches(name.lower(), list(entries), n=1, cutoff=0.75)
    return f": did you mean {close[0]}?" if close else ""
