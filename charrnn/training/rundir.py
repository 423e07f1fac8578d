"""The run directory: created for a fresh run, checked for a resumed one, never overwritten
by accident, and left as it was found when a run fails before writing anything."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import BEST, LAST
from ..errors import CheckpointError, ConfigError
from .reporting import METRICS, SAMPLES
from .runlock import RunLock


def prepare_run_dir(run_dir: Path, *, resume: bool, force: bool) -> tuple[list[Path], RunLock]:
    """Create the run directory and hold it (RunDirectoryBusy names the live process that already
    does); refuse to overwrite an existing run unless asked. Returns the directories it created,
    outermost first (removed again if the run fails early), and the lock, held until released."""
    if resume and not (run_dir / LAST).exists():
        if run_dir.is_dir():  # a run still training there may not have saved yet: name it first
            RunLock(run_dir).release()
        raise CheckpointError(f"--resume: no {LAST} in {run_dir} to resume from")
    created = [p for p in reversed([run_dir, *run_dir.parents]) if not p.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir)  # nothing is deleted below unless this process holds the directory
    except OSError as exc:
        remove_if_empty(created)
        raise CheckpointError(f"cannot write to {run_dir}: {exc.strerror or exc}") from None
    except BaseException:
        remove_if_empty(created)
        raise
    try:
        _clear(run_dir, resume=resume, force=force)
    except BaseException:
        lock.release()
        remove_if_empty(created)
        raise
    return created, lock


def _clear(run_dir: Path, *, resume: bool, force: bool) -> None:
    existing = [n for n in (BEST, LAST, METRICS) if (run_dir / n).exists()]
    if existing and not force and not resume:
        raise ConfigError(
            f"run directory {run_dir} already holds a run ({', '.join(existing)}): "
            f"add --resume to continue it, --force to start over, or choose another --out"
        )
    if force and not resume:
        for name in existing + [SAMPLES]:
            (run_dir / name).unlink(missing_ok=True)
    _remove_stale_temporaries(run_dir)


def _remove_stale_temporaries(run_dir: Path) -> None:
    for stale in run_dir.glob(".*.tmp"):  # left by a save killed mid-write
        stale.unlink(missing_ok=True)


def remove_if_empty(created: list[Path]) -> None:
    """A run that failed before writing anything leaves no empty directories behind."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): keep it and its parents
            return
