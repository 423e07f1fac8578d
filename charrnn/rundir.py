"""The run directory: created for a fresh run, checked for a resumed one, never overwritten
by accident, and left as it was found when a run fails before writing anything."""

from __future__ import annotations

from pathlib import Path

from .checkpoint import BEST, LAST
from .errors import CheckpointError, ConfigError
from .reporting import METRICS, SAMPLES


def prepare_run_dir(run_dir: Path, *, resume: bool, force: bool) -> list[Path]:
    """Create the run directory; refuse to overwrite an existing run unless asked.
    Returns the directories it created, outermost first (removed again if the run fails early)."""
    existing = [n for n in (BEST, LAST, METRICS) if (run_dir / n).exists()]
    if resume:
        if not (run_dir / LAST).exists():
            raise CheckpointError(f"--resume: no {LAST} in {run_dir} to resume from")
        _remove_stale_temporaries(run_dir)
        return []
    if existing and not force:
        raise ConfigError(
            f"run directory {run_dir} already holds a run ({', '.join(existing)}): "
            f"add --resume to continue it, --force to start over, or choose another --out"
        )
    created = [p for p in reversed([run_dir, *run_dir.parents]) if not p.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CheckpointError(f"cannot write to {run_dir}: {exc.strerror or exc}") from None
    if force:
        for name in existing + [SAMPLES]:
            (run_dir / name).unlink(missing_ok=True)
    _remove_stale_temporaries(run_dir)
    return created


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
