"""`charrnn bench`'s tables for the measured-choices rows: the sampler next to its floor, the
busy neighbour, training on each thread layout, and the batch x window grid summarised over its seeds."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

    from ..bench import BusyNeighbour, QualityRow, SamplingFloor, TrainingThreads


def new_table(title: str, columns: tuple[str, ...]) -> Table:
    """A table titled on the left, its columns right-aligned (figures)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="right")
    return table


def floor_table(f: SamplingFloor) -> Table:
    """One line per floor (the step's matmuls on a backend and thread count) with the sampler's
    share of it, then the sampler; its share of the best floor is the figure with a target."""
    table = new_table(
        f"Sampling next to its floor: one stream of a {f.cell} {f.layers}x{f.hidden} through sample.generate",
        ("", "per second", "sampler's share"),
    )
    table.columns[0].justify = "left"
    for label, rate in sorted(f.floor_steps_per_sec.items(), key=lambda item: -item[1]):
        table.add_row(f"floor: {label}", f"{rate:,.0f} steps", f"{f.sampler_chars_per_sec / rate:.2f}")
    choice = f" ({f.sampler_choice})" if f.sampler_choice else ""
    table.add_row(f"sampler{choice}", f"{f.sampler_chars_per_sec:,.0f} chars", f"{f.ratio:.2f} (target >= 0.8)")
    if f.many_samples:
        table.add_row(
            f"{f.many_samples} at once ({f.many_choice})",
            f"{f.many_chars_per_sec:,.0f} chars",
            f"{f.many_chars_per_sec / f.sampler_chars_per_sec:.1f}x; {f.many_cores_busy:.1f} cores busy",
        )
    table.caption = (
        "floor: the step's matrix products alone, timed in the same run; start-up excluded; "
        "N at once: --num-samples N, its speed over the sampler's and the process's CPU seconds per second"
    )
    return table


def threads_table(rows: list[TrainingThreads]) -> Table:
    """Per precision, the training step on each layout the run's thread probe weighs, against one thread."""
    first = rows[0]
    table = new_table(
        f"Training threads: charrnn's step, LSTM {first.layers}x{first.hidden}, batch {first.batch_size} x "
        f"{first.seq_len}, on each layout a run's probe weighs",
        ("precision", "layout", "steps/s", "vs 1 thread"),
    )
    table.columns[1].justify = "left"
    for row in rows:
        one = row.steps_per_sec.get("1 thread")
        best = max(row.steps_per_sec.values())
        for label, rate in row.steps_per_sec.items():
            mark = " (fastest)" if rate == best and len(row.steps_per_sec) > 1 else ""
            table.add_row(row.precision, label + mark, f"{rate:,.1f}", f"{rate / one:.2f}x" if one else "")
    table.caption = "alternating rounds, medians; a run times its own step and picks again when it slows"
    return table


def neighbour_table(n: BusyNeighbour) -> Table:
    table = new_table(
        f"Busy neighbour: a {n.seconds:g} s --time-budget run alone, then beside a {n.neighbour_threads}-thread "
        "matmul loop",
        ("steps alone", "steps beside it", "kept"),
    )
    table.add_row(f"{n.quiet_steps:,}", f"{n.busy_steps:,}", f"{n.kept:.2f} (target >= 0.5)")
    return table


def shape_grid_table(rows: list[QualityRow]) -> list[Table]:
    """The batch x window rows, one table per corpus and budget, one line per cell: the mean over
    seeds and the seeds' spread."""
    groups: dict[tuple[str, float], dict[str, list[QualityRow]]] = {}
    for r in rows:
        if r.label.startswith("batch ") and not r.skipped:
            cell = r.label.rsplit(", seed", 1)[0].removeprefix("batch ").replace(" window ", " ")
            groups.setdefault((r.corpus, r.budget_seconds), {}).setdefault(cell, []).append(r)
    tables = []
    for (corpus, budget), cells in groups.items():
        table = new_table(
            f"Batch x window, {corpus}, {budget:g}s, at the size rule's choice (spread: best to worst seed)",
            ("batch x window", "model", "seeds", "steps", "val bpc", "spread", "ratio"),
        )
        for cell, group in cells.items():
            bpcs = [r.val_bpc for r in group]
            ratios = [r.ratio for r in group if r.ratio is not None]
            table.add_row(
                cell,
                ", ".join(sorted({f"{r.num_layers}x{r.hidden_size}" for r in group})),
                str(len(group)),
                f"{statistics.mean(r.steps for r in group):,.0f}",
                f"{statistics.mean(bpcs):.3f}",
                f"{max(bpcs) - min(bpcs):.3f}",
                f"{statistics.mean(ratios):.3f}" if ratios else "-",
            )
        tables.append(table)
    return tables
