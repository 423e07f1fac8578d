"""The one exception family that means "the user can fix this".

Library code raises these; `cli.py` turns each into one line on stderr and a non-zero exit
code. Anything else escaping to the CLI is a bug and keeps its traceback.
"""

from __future__ import annotations

import os


class CharRNNError(Exception):
    """A problem the user can fix (bad input, missing file, bad option value)."""

    exit_code = 1


class ConfigError(CharRNNError, ValueError):
    """An option value out of range or inconsistent with another."""

    exit_code = 2


class CorpusError(CharRNNError):
    """A corpus that cannot be read or used for training."""


class CheckpointError(CharRNNError):
    """A file that is not a loadable charrnn checkpoint, or a save that failed."""


class WriteError(CharRNNError, OSError):
    """A file that could not be written (full disk, read-only or missing directory).

    Also an OSError, with the original errno and strerror, so code that handles OSError
    (a checkpoint save naming the intact previous file, a best-effort cache) still does.
    """

    def __init__(self, path: str | os.PathLike[str], exc: OSError) -> None:
        reason = exc.strerror or str(exc) or type(exc).__name__
        OSError.__init__(self, exc.errno, reason, str(path))
        self.message = f"cannot write {path}: {reason}"

    def __str__(self) -> str:
        return self.message


class TrainingDiverged(CharRNNError):
    """The loss became NaN or infinite."""


class Interrupted(CharRNNError):
    """Training stopped by a signal after writing its checkpoint (exit 128 + signal number)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class RunDirectoryBusy(CharRNNError):
    """The run directory is held by another live process (its lock names the pid)."""
