"""Directories as corpora: a source tree (a project, Python's standard library) read as text.

The tree is walked depth first with names in sorted order, so the same tree always gives the
same corpus. A file is taken for what it holds, not its name: it must decode in the corpus
encoding and hold no NUL character (`--include`/`--exclude` globs narrow the choice by name).
Hidden entries (.git, .env), `__pycache__` and symlinks that lead back into a directory being
walked are not entered. Each file is read once; what was left out, and why, is summed up in
one note (or, when nothing is left, in the error).
"""

from __future__ import annotations

import codecs
import os
import sysconfig
from collections import defaultdict
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import CorpusError

FILE_SEPARATOR = "\n\n"  # between files, as between paragraphs: files stay apart in the corpus
SNIFF_BYTES = 8192  # read first: a NUL byte there marks a binary file (git's rule), skipped unread
SHOWN_EXAMPLES = 3  # names given per reason in a note or an error


@dataclass
class TreeText:
    """The text files of a tree, in walk order, and what was left out."""

    root: Path
    encoding: str = "utf-8"
    # Each file's content: its bytes (less a UTF-8 byte-order mark) in an ASCII-compatible encoding,
    # joined as they are, with no decoding and re-encoding of the whole; else its decoded text.
    contents: list[bytes | str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # relative, with "/"
    # reason ("{s}" stands for a plural's s) -> paths
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    filtered: int = 0  # files left out by --include/--exclude
    unmatched: list[str] = field(default_factory=list)  # globs that matched nothing

    def data(self) -> bytes:
        """The files one after the other, a blank line between them, ending in a newline, in the
        tree's encoding."""
        return self.data_and_starts()[0]

    def data_and_starts(self) -> tuple[bytes, list[int] | None]:
        """`data()` and the byte offset where each file starts in it (the split holds out whole
        files); None for an encoding that is not ASCII-compatible (its files are not cut apart)."""
        raw = [c for c in self.contents if isinstance(c, bytes)]
        if len(raw) == len(self.contents):
            separator = FILE_SEPARATOR.encode(self.encoding)
            parts = [c.rstrip(b"\r\n") for c in raw]
            starts, offset = [], 0
            for part in parts:
                starts.append(offset)
                offset += len(part) + len(separator)
            return separator.join(parts) + b"\n", starts
        texts = [c if isinstance(c, str) else c.decode(self.encoding) for c in self.contents]
        return (FILE_SEPARATOR.join(t.rstrip("\r\n") for t in texts) + "\n").encode(self.encoding), None

    def skipped_summary(self) -> str:
        """'2 binary (a.png, b.bin), 1 hidden (.git)': how many were skipped, why, which."""
        parts = []
        for reason, paths in self.skipped.items():
            names = ", ".join(paths[:SHOWN_EXAMPLES]) + (", ..." if len(paths) > SHOWN_EXAMPLES else "")
            parts.append(f"{len(paths)} {reason.format(s='' if len(paths) == 1 else 's')} ({names})")
        if self.filtered:
            parts.append(f"{self.filtered} left out by --include/--exclude")
        return ", ".join(parts)

    def notes(self) -> list[str]:
        notes = []
        if self.skipped or self.filtered:
            count = sum(map(len, self.skipped.values())) + self.filtered
            notes.append(
                f"read {_count(len(self.paths), 'file')} from {self.root}; skipped {count:,}: {self.skipped_summary()}"
            )
        notes += [f"{glob} matched nothing in {self.root}" for glob in self.unmatched]
        return notes


# python-stdlib leaves out the test suites (more than half the library, and code unlike what a user
# writes), installed packages, and generated tables (codecs' charmaps, pydoc's topics, the build's
# sysconfig data): what is left is the library's own hand-written modules.
STDLIB_EXCLUDE: tuple[str, ...] = ("site-packages", "dist-packages", "test", "tests", "idle_test", "encodings")
STDLIB_EXCLUDE += ("pydoc_data", "_sysconfigdata_*")


def python_stdlib_root() -> Path:
    """The running interpreter's standard library (not its site-packages)."""
    return Path(sysconfig.get_paths()["stdlib"])


def read_python_stdlib() -> TreeText:
    """The .py sources of the running interpreter's standard library, in a fixed order."""
    return read_tree(python_stdlib_root(), include=["*.py"], exclude=STDLIB_EXCLUDE)


def python_stdlib_size() -> int:
    """Bytes of the files python-stdlib is built from, without reading them (for `corpus list`)."""
    total = 0
    globs = _Globs(["*.py"], STDLIB_EXCLUDE)
    for rel, path in _walk(python_stdlib_root(), defaultdict(list), globs):
        if globs.takes(rel):
            try:
                total += path.stat().st_size
            except OSError:
                pass
    return total


def read_tree(
    root: Path, encoding: str = "utf-8", include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> TreeText:
    """Every text file under `root` (see the module's docstring). Raises CorpusError when none is."""
    _check_encoding(encoding)
    tree = TreeText(root, encoding)
    globs = _Globs(include, exclude)
    as_bytes = FILE_SEPARATOR.encode(encoding) == FILE_SEPARATOR.encode("ascii") and "a".encode(encoding) == b"a"
    for rel, path in _walk(root, tree.skipped, globs):
        if not globs.takes(rel):
            tree.filtered += 1
            continue
        reason, content = _read_text(path, encoding, as_bytes)
        if reason:
            tree.skipped[reason].append(rel)
        else:
            tree.contents.append(content)
            tree.paths.append(rel)
    tree.unmatched = globs.unmatched()
    if not tree.paths:
        why = f"skipped {tree.skipped_summary()}" if tree.skipped or tree.filtered else "it is empty"
        unmatched = "; " + ", ".join(f"{g} matched nothing" for g in tree.unmatched) if tree.unmatched else ""
        raise CorpusError(f"no text files in directory {root}: {why}{unmatched}")
    return tree


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _check_encoding(encoding: str) -> None:
    try:
        "".encode(encoding)
    except LookupError:
        raise CorpusError(f"unknown --encoding {encoding!r}") from None


class _Globs:
    """--include/--exclude: a glob matches a file by its path in the tree or by its name;
    an --exclude glob that matches a directory leaves out everything in it."""

    def __init__(self, include: Sequence[str], exclude: Sequence[str]):
        self.include, self.exclude = list(include), list(exclude)
        self.used: set[tuple[str, str]] = set()

    def _first(self, kind: str, globs: list[str], rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        for glob in globs:
            if fnmatchcase(rel, glob) or fnmatchcase(name, glob):
                self.used.add((kind, glob))
                return True
        return False

    def excludes(self, rel: str) -> bool:
        return self._first("--exclude", self.exclude, rel)

    def takes(self, rel: str) -> bool:
        if self.excludes(rel):
            return False
        return not self.include or self._first("--include", self.include, rel)

    def unmatched(self) -> list[str]:
        kinds = [("--include", g) for g in self.include] + [("--exclude", g) for g in self.exclude]
        return [f"{kind} {glob!r}" for kind, glob in kinds if (kind, glob) not in self.used]


def _walk(root: Path, skipped: dict[str, list[str]], globs: _Globs) -> Iterator[tuple[str, Path]]:
    """(path in the tree, path) of each file, depth first, names sorted. An explicit stack, not
    recursion, so a deep tree cannot exhaust Python's stack; `ancestors` (device, inode) of the
    directories being walked catches a symlink that leads back into one of them."""
    stack = [(_entries(root, "", skipped), {_identity(root)})]
    while stack:
        entries, ancestors = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        rel, item = entry
        if item.name.startswith("."):
            skipped["hidden"].append(rel)
            continue
        try:
            is_dir = item.is_dir()  # follows symlinks
            is_file = not is_dir and item.is_file()
        except OSError:
            is_dir = is_file = False
        if is_dir:
            identity = _identity(Path(item.path))
            if item.name == "__pycache__":
                skipped["__pycache__ folder{s}"].append(rel)
            elif identity in ancestors:
                skipped["symlink loop{s}"].append(rel)
            elif globs.excludes(rel):
                continue
            else:
                stack.append((_entries(Path(item.path), rel + "/", skipped), ancestors | {identity}))
        elif is_file:
            yield rel, Path(item.path)
        else:
            skipped["special file{s} (broken link, device)"].append(rel)


def _entries(folder: Path, prefix: str, skipped: dict[str, list[str]]) -> Iterator[tuple[str, os.DirEntry[str]]]:
    try:
        with os.scandir(folder) as it:
            items = sorted(it, key=lambda e: e.name)
    except OSError:
        skipped["unreadable"].append(prefix.rstrip("/") or str(folder))
        return iter(())
    return ((prefix + e.name, e) for e in items)


def _identity(folder: Path) -> tuple[int, int]:
    try:
        stat = folder.stat()
    except OSError:
        return (-1, -1)
    return (stat.st_dev, stat.st_ino)


def _read_text(path: Path, encoding: str, as_bytes: bool) -> tuple[str, bytes | str]:
    """('', content) for a usable file (its bytes when `as_bytes`, else its text), or (why it is
    not, ''). In an ASCII-compatible encoding (`as_bytes`) a NUL byte in the first block marks a
    binary file, and the rest of it is never read."""
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
            if as_bytes and b"\x00" in head:
                return "binary (NUL bytes)", ""
            data = head + f.read()
    except OSError:
        return "unreadable", ""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        return ("binary (NUL bytes)" if b"\x00" in data else f"not valid {encoding}"), ""
    if "\x00" in text:
        return "binary (NUL bytes)", ""
    if not text.removeprefix("\ufeff").strip():
        return "empty", ""
    if not as_bytes:
        return "", text.removeprefix("\ufeff")
    # each file's byte-order mark goes, not only the first one's
    utf8 = codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
    return "", data[len(codecs.BOM_UTF8) :] if utf8 and data.startswith(codecs.BOM_UTF8) else data
