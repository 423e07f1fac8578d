"""Atomic file writes: a crash at any moment leaves the old file or the new one, never a mix.

Checkpoints, materialised corpora, MIDI files and the token-id cache are all written this way:
to a temporary file in the same directory, flushed to disk, then renamed over the target. Logs
(metrics.jsonl, samples.txt) are appended a whole record at a time. A write that fails (full
disk, read-only directory) raises `WriteError` naming the file, and leaves what was there.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Union

from .errors import WriteError

Content = Union[bytes, Callable[[BinaryIO], object]]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, content: Content, *, durable: bool = True) -> None:
    """Write `content` (bytes, or a function that writes to the open file) to `path`.

    `durable` also fsyncs the file and its directory, so the rename survives a power cut.
    Raises WriteError (an OSError); the temporary file is removed whatever happens.
    """
    path = Path(path)
    try:
        _write_and_rename(path, content, durable)
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(path, exc) from None


def _write_and_rename(path: Path, content: Content, durable: bool) -> None:
    tmp: str | None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would follow the umask
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, (bytes, bytearray, memoryview)):
                f.write(content)
            else:
                content(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        if durable:
            _fsync_dir(path.parent)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def append_text(path: Path, text: str) -> None:
    """Append `text` (one whole record, e.g. a JSON line) to `path`, creating it if needed.

    A write that fails part-way is cut back off, so the file never ends in half a record.
    Raises WriteError.
    """
    data = text.encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise WriteError(path, exc) from None
    try:
        size = os.fstat(fd).st_size
        done = 0
        try:
            while done < len(data):
                written = os.write(fd, data[done:])
                if written == 0:  # no progress: treat as a full disk rather than spin
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                done += written
        except OSError as exc:
            if done:
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    pass
            raise WriteError(path, exc) from None
    finally:
        os.close(fd)


def make_dirs(folder: Path) -> None:
    """mkdir -p, raising WriteError (a path under a file, a read-only parent...)."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(folder, exc) from None
