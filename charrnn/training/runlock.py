"""One process per run directory: an OS lock on `<run>/.lock`, held for the whole run.

The lock is `flock` on an open file, so the kernel releases it when the holder dies however it
dies (kill -9 included): a stale lock cannot outlive its process. The file holds the holder's
pid, for the message a second process gets. Nothing in the run directory is created, deleted or
rewritten (--force, stale temporaries) before the lock is held.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import RunDirectoryBusy

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not protected against a second process
    fcntl = None  # type: ignore[assignment]

LOCK = ".lock"


class RunLock:
    """The exclusive lock of one run directory (which must exist). `release()` is idempotent."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None
        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                self._take(fd)
            except BaseException:
                os.close(fd)
                raise
            # The file may have been unlinked by a holder releasing between our open and our lock:
            # then we hold a lock on a file nobody else will open. Take the one at the path instead.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
            else:
                os.close(fd)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def _take(self, fd: int) -> None:
        if fcntl is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise RunDirectoryBusy(
                f"run directory {self.path.parent} is in use by another charrnn process (pid {holder}); "
                f"wait for it to finish, stop it, or choose another --out"
            ) from None

    def release(self) -> None:
        """Unlink the lock file while still holding it, then let go: a waiting process never
        keeps a lock on a file that is gone."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
