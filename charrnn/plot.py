"""A picture of a training run: a PNG of bits/char from `metrics.jsonl`.

matplotlib is an optional extra (`charrnn[plot]`), imported only when asked for, so a plain
install trains and samples without it. (TensorBoard events: reporting.TensorBoardReporter.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .errors import CheckpointError, ConfigError
from .training.reporting import METRICS

PLOT = "bpc.png"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl (RUN is the run directory or the file itself).
    A line cut short by a killed run is skipped, not fatal."""
    path = Path(run)
    if path.is_dir():
        path = path / METRICS
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise CheckpointError(
            f"no {METRICS} at {path.parent if path.name == METRICS else path}: not a run directory"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    if not rows:
        raise CheckpointError(f"{path} holds no evaluations yet")
    return rows


def _series(rows: list[dict[str, Any]], x: str, y: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        value = row.get(y)
        if isinstance(value, (int, float)) and math.isfinite(value):
            xs.append(float(row[x]))
            ys.append(float(value))
    return xs, ys


def plot_run(run: Path, out: Path | None = None, title: str | None = None) -> Path:
    """Write a PNG with train and validation bits/char against steps and against wall time.
    Default `out`: bpc.png in the run directory."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install 'charrnn[plot]'") from None
    run = Path(run)
    rows = read_metrics(run)
    run_dir = run if run.is_dir() else run.parent
    out = Path(out) if out is not None else run_dir / PLOT
    fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    by_step, by_time = fig.subplots(1, 2, sharey=True)
    for row in rows:
        row["minutes"] = row.get("elapsed", 0.0) / 60.0
    for ax, x, label in ((by_step, "step", "step"), (by_time, "minutes", "wall time (minutes)")):
        for key, name, style in (("train_bpc", "train", "-"), ("val_bpc", "validation", "o-")):
            xs, ys = _series(rows, x, key)
            if xs:
                ax.plot(xs, ys, style, markersize=3, label=name)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    by_step.set_ylabel("bits per character")
    by_step.legend()
    best = min((r["val_bpc"] for r in rows if isinstance(r.get("val_bpc"), (int, float))), default=None)
    heading = title or run_dir.name
    fig.suptitle(heading + (f"  (best validation {best:.3f} bpc)" if best is not None else ""))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png")
    except OSError as exc:
        raise CheckpointError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out
