"""`charrnn bench`: measure training, sampling, data-path and quality figures on this machine."""

from __future__ import annotations

import json
from dataclasses import replace
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..config import TrainConfig
from .application import app, stderr, stdout
from .bench_tables import floor_table, neighbour_table, shape_grid_table, threads_table
from .bench_tables import new_table as _table
from .options import Choice, choices

if TYPE_CHECKING:  # Typer reads the enum built from config.py; mypy sees a Choice (see options.Choice)
    from rich.table import Table

    from ..bench import BenchPlan, BenchReport, DataPath, QualityRow

    Device = Choice
else:
    Device = choices(TrainConfig, "device", "Device")


class Section(str, Enum):
    training = "training"
    sampling = "sampling"
    data = "data"
    quality = "quality"
    grid = "grid"
    scan = "scan"
    neighbour = "neighbour"


LONG = (Section.grid, Section.scan, Section.neighbour)


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Smaller measurements: about a minute.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON instead of tables.")] = False,
    only: Annotated[Optional[list[Section]], typer.Option("--only", help="Run only this section (repeatable).")] = None,
    device: Annotated[Device, typer.Option(help="Where training is measured.")] = Device("auto"),
    budget: Annotated[
        Optional[list[str]],
        typer.Option(
            "--budget",
            metavar="DURATION",
            help="Training time of each quality, grid and scan row, e.g. 60s or 5m (repeatable). "
            "[default: 60s and 5m; the grid 60s]",
            show_default=False,
        ),
    ] = None,
    corpus: Annotated[
        Optional[list[str]],
        typer.Option(
            "--corpus",
            metavar="NAME",
            help="Ready corpus of the quality, grid and scan rows (repeatable). "
            "[default: tinyshakespeare and python-stdlib]",
            show_default=False,
        ),
    ] = None,
    size: Annotated[
        Optional[list[str]],
        typer.Option(
            "--size",
            metavar="LAYERSxHIDDEN",
            help="A grid size, e.g. 2x256 (repeatable). [default: 2 and 3 layers x hidden 256/384/512/768]",
            show_default=False,
        ),
    ] = None,
    batches: Annotated[
        Optional[str],
        typer.Option(
            "--batches",
            metavar="N,N,...",
            help="The grid varies --batch-size instead of the size, e.g. 16,32,64,128 (the size rule picks the size).",
        ),
    ] = None,
    windows: Annotated[
        Optional[str],
        typer.Option("--windows", metavar="N,N,...", help="The grid varies --seq-len, e.g. 64,128."),
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, max=20, help="Seeds per batch x window cell.")] = 3,
    grid_precision: Annotated[
        str, typer.Option("--grid-precision", help="The grid's --precision: auto (measured), fp32, bf16.")
    ] = "auto",
) -> None:
    """Measure speed and quality here: training vs a plain PyTorch loop, sampling, data path, bpc."""
    from ..bench import BenchPlan, run_bench

    plan = _with_choices(BenchPlan.quick() if quick else BenchPlan.full(), budget, corpus, size)
    plan = replace(plan, grid_batches=_counts("--batches", batches), grid_windows=_counts("--windows", windows))
    if grid_precision not in ("auto", "fp32", "bf16"):
        raise typer.BadParameter(f"must be auto, fp32 or bf16 (got {grid_precision!r})", param_hint="--grid-precision")
    plan = replace(plan, grid_seeds=seeds, grid_precision=grid_precision)
    # The size grid (16 trainings per corpus) and the scan-cell trial are long: they run when named.
    sections = tuple(s.value for s in only) if only else tuple(s.value for s in Section if s not in LONG)
    stderr.print(_duration_note(plan, sections), markup=False)
    if as_json:
        report = run_bench(plan, device=device.value, sections=sections)
        stdout.out(json.dumps(report.to_dict(), indent=2), highlight=False)
        return
    with stderr.status("starting") as status:
        report = run_bench(
            plan, device=device.value, sections=sections, progress=lambda what: status.update(f"measuring {what}")
        )
    _print_report(report)


def _duration_note(plan: BenchPlan, sections: tuple[str, ...]) -> str:
    """'bench: at least 26 min: quality 24 min, data 3 min, ...' from the plan's fixed budgets."""
    import torch

    fixed = plan.fixed_seconds(sections, torch.get_num_threads())
    if not fixed:
        return f"bench: {', '.join(sections)}: short measurements, no fixed training budget"
    parts = ", ".join(f"{name} {_minutes(seconds)}" for name, seconds in fixed.items())
    total = _minutes(sum(fixed.values()))
    return f"bench: at least {total} ({parts} of fixed budgets; evaluations and set-up add to it)"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _with_choices(
    plan: BenchPlan, budgets: list[str] | None, corpora: list[str] | None, sizes: list[str] | None
) -> BenchPlan:
    """The plan with --budget/--corpus/--size in place of its defaults; a bad value is a ConfigError."""
    import dataclasses

    if budgets:
        seconds = tuple(_budget(b) for b in budgets)
        plan = dataclasses.replace(plan, quality_budgets=seconds, grid_budgets=seconds, scan_budgets=seconds)
    if corpora:
        plan = dataclasses.replace(plan, quality_corpora=tuple(dict.fromkeys(corpora)))
    if sizes:
        plan = dataclasses.replace(plan, grid_sizes=tuple(dict.fromkeys(_grid_size(s) for s in sizes)))
    return plan


def _counts(flag: str, text: str | None) -> tuple[int, ...]:
    """'16,32,64' -> (16, 32, 64); a bad value is a ConfigError naming the flag."""
    from ..errors import ConfigError

    if not text:
        return ()
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() and 1 <= int(p) <= 4096 for p in parts):
        raise ConfigError(f"{flag}: cannot read {text!r} as whole numbers from 1 to 4096, e.g. 16,32,64")
    return tuple(dict.fromkeys(int(p) for p in parts))


def _budget(text: str) -> float:
    from ..config import parse_duration
    from ..errors import ConfigError

    try:
        seconds = parse_duration(text)
    except ConfigError:
        seconds = 0.0
    if not 0 < seconds <= 24 * 3600:
        raise ConfigError(f"--budget: {text!r} is not a duration above 0 and at most 24h (try 60s or 5m)")
    return seconds


def _grid_size(text: str) -> tuple[int, int]:
    """'2x256' -> (hidden 256, layers 2), as `charrnn info` writes a model's shape."""
    from ..errors import ConfigError

    layers, _, hidden = text.strip().lower().partition("x")
    if not (layers.isdigit() and hidden.isdigit() and 1 <= int(layers) <= 8 and 1 <= int(hidden) <= 8192):
        raise ConfigError(f"--size: cannot read {text!r} as LAYERSxHIDDEN, e.g. 2x256 (1-8 layers, hidden 1-8192)")
    return int(hidden), int(layers)


def _rate(x: float) -> str:
    return f"{x:,.0f}"


def _print_report(report: BenchReport) -> None:
    from rich.text import Text

    m = report.machine
    stdout.print(
        Text.assemble(
            ("charrnn bench", "bold"),
            f"{' --quick' if report.quick else ''}: {m.device}, {m.threads} threads, torch {m.torch}",
        )
    )
    stdout.print(f"CPU {m.cpu}; flags: {m.cpu_flags or 'none of those speed depends on'}")
    if report.precision_probe:
        p = report.precision_probe
        stdout.print(
            f"precision probe: fp32 step {p.fp32_step_seconds * 1e3:.1f} ms, {p.candidate} "
            f"{p.candidate_step_seconds * 1e3:.1f} ms ({p.speedup:.2f}x), loss ratio {p.loss_ratio:.4f}"
        )
    if m.auto_precision:
        stdout.print(Text.assemble("--precision auto picks ", (m.auto_precision, "bold"), f" here ({m.auto_reason})"))
    if report.training:
        stdout.print(_training_table(report))
    if report.bf16_shapes:
        stdout.print(_bf16_table(report))
    if report.training_threads:
        stdout.print(threads_table(report.training_threads))
    if report.sampling:
        stdout.print(_sampling_table(report))
    if report.sampling_floor:
        stdout.print(floor_table(report.sampling_floor))
    if report.data is not None:
        stdout.print(_data_table(report.data))
    if report.busy_neighbour is not None:
        stdout.print(neighbour_table(report.busy_neighbour))
    _print_quality(report)
    for grid in shape_grid_table(report.quality_rows):
        stdout.print(grid)
    stdout.print(f"{report.seconds:.0f}s in all", style="dim")


def _training_table(report: BenchReport) -> Table:
    cfg = report.config
    table = _table(
        f"Training: LSTM {cfg['layers']}x{cfg['hidden']}, seq {cfg['seq_len']}, batch {cfg['batch_size']}",
        ("precision", "charrnn chars/s", "reference chars/s", "ratio", "GFLOP/s", "matmul peak", "util."),
    )
    for t in report.training:
        peak = report.matmul_peak.get(t.precision)
        table.add_row(
            t.precision,
            _rate(t.charrnn_chars_per_sec),
            _rate(t.reference_chars_per_sec),
            f"{t.ratio:.2f}x",
            f"{t.flops_per_sec / 1e9:.1f}",
            f"{peak / 1e9:.0f}" if peak else "-",
            f"{t.utilization:.1%}" if t.utilization is not None else "-",
        )
    speeds = {t.precision: t.charrnn_chars_per_sec for t in report.training}
    if "fp32" in speeds and "bf16" in speeds:
        table.caption = f"bf16 / fp32 training speed: {speeds['bf16'] / speeds['fp32']:.2f}x"
    return table


def _bf16_table(report: BenchReport) -> Table:
    table = _table(
        "Where bf16 pays off: charrnn's training step by shape",
        ("batch", "seq", "fp32 chars/s", "bf16 chars/s", "bf16 / fp32"),
    )
    for b in report.bf16_shapes:
        table.add_row(
            str(b.batch_size),
            str(b.seq_len),
            _rate(b.fp32_chars_per_sec),
            _rate(b.bf16_chars_per_sec),
            f"{b.speedup:.2f}x",
        )
    return table


def _sampling_table(report: BenchReport) -> Table:
    table = _table(
        f"Sampling (fast path, CPU; read bandwidth {report.read_bandwidth / 1e9:.1f} GB/s, "
        f"fp32 matmul peak {report.cpu_matmul_peak / 1e9:.0f} GFLOP/s)",
        ("model", "streams", "step on", "chars/s", "bandwidth limit", "compute limit", "of the lower"),
    )
    for s in report.sampling:
        limits = [x for x in (s.limit_chars_per_sec, s.compute_limit_chars_per_sec) if x]
        table.add_row(
            f"{s.cell} {s.layers}x{s.hidden}",
            str(s.streams),
            f"{s.backend}, {s.threads}",
            _rate(s.chars_per_sec),
            _rate(s.limit_chars_per_sec),
            _rate(s.compute_limit_chars_per_sec) if s.compute_limit_chars_per_sec else "-",
            f"{s.chars_per_sec / min(limits):.1%}",
        )
    weights = sorted({f"{s.cell} {s.layers}x{s.hidden} {s.weight_bytes / 1e6:.1f} MB" for s in report.sampling})
    table.caption = (
        "weights: " + ", ".join(weights) + "; weights that fit in the CPU cache can beat the (DRAM) bandwidth limit"
    )
    return table


def _data_table(d: DataPath) -> Table:
    from rich.table import Table

    what = "python-stdlib repeated, files shuffled" if d.source == "python-stdlib" else "generated words"
    table = Table(title=f"Data path: {d.corpus_mb:.0f} MB corpus ({what})", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("first run: decode + fit + encode + cache", f"{d.encode_seconds:.2f} s")
    table.add_row("first run: ready to train (target <= 10 s)", f"{d.first_run_ready_seconds:.2f} s")
    table.add_row("peak RSS (process, torch included)", f"{d.peak_rss_mb:,.0f} MB")
    table.add_row("RSS after imports", f"{d.baseline_rss_mb:,.0f} MB")
    table.add_row("cached ids dtype", d.ids_dtype)
    table.add_row("second run: corpus read, cached ids mapped", f"{d.second_run_load_seconds:.2f} s")
    table.add_row("second run: ready to train (target <= 2 s)", f"{d.second_run_ready_seconds:.2f} s")
    table.add_row("second run: first step done", f"{d.second_run_first_step_seconds:.2f} s")
    if d.budget_seconds:
        table.add_row(
            f"--time-budget {d.budget_seconds:g}s run: launch to exit (target <= {d.budget_seconds + 5:g} s)",
            f"{d.budget_wall_seconds:.1f} s",
        )
        table.add_row(
            f"  validating ({d.budget_val_tokens:,} tokens each; target <= 10%)",
            f"{d.budget_eval_seconds:.1f} s = {d.budget_eval_share:.1%}",
        )
        table.add_row(
            "  steps; whole split scored at the end", f"{d.budget_steps:,}; {'yes' if d.budget_whole_scored else 'no'}"
        )
    if not d.cached:
        table.caption = "warning: the second run did not read the cache"
    return table


def _print_quality(report: BenchReport) -> None:
    _print_quality_rows(report)
    pq = report.precision_quality
    if pq is not None:
        stdout.print(
            f"fp32 vs bf16 at equal steps: skipped: {pq.skipped}"
            if pq.skipped
            else f"fp32 vs bf16 at equal steps ({pq.steps} steps, tinyshakespeare): val loss "
            f"{pq.fp32_val_loss:.4f} vs {pq.bf16_val_loss:.4f} nats/token ({pq.relative_difference:+.2%})"
        )


def _ratio(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "-"


def _print_quality_rows(report: BenchReport) -> None:
    """One table per corpus and budget: the rows measured side by side in the same stretch of time."""
    groups: dict[tuple[str, float], list[QualityRow]] = {}
    for r in report.quality_rows:
        if r.skipped:
            stdout.print(f"Quality, {r.corpus}: skipped: {r.skipped}")
        else:
            groups.setdefault((r.corpus, r.budget_seconds), []).append(r)
    for (corpus, budget), rows in groups.items():
        with_grid = any(r.grid_ratio is not None for r in rows)
        columns = ("trained", "model", "params", "steps", "chars/s", "val bpc", "ratio") + ("vs grid best",) * with_grid
        table = _table(
            f"Quality: {corpus}, validation after {budget:g}s of training (ratio: to the reference loop)", columns
        )
        for column in table.columns[:2]:
            column.justify = "left"
        for r in rows:
            cells = [
                r.label + (" (= that fixed size)" if r.grid_size else ""),
                f"{r.cell} {r.num_layers}x{r.hidden_size}",
                f"{r.parameters / 1e6:.2f}M",
                str(r.steps),
                _rate(r.chars_per_sec),
                f"{r.val_bpc:.3f}",
                _ratio(r.ratio),
            ]
            if with_grid:
                cells.append(_ratio(r.grid_ratio))
            table.add_row(*cells)
        # Each seed of a grid cell sizes its run alike: one line per distinct note, not one per row.
        table.caption = "\n".join(dict.fromkeys(r.note for r in rows if r.note)) or None
        stdout.print(table)
