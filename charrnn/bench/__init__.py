"""`charrnn bench`: speed and quality figures measured on this machine, as plain data.

Every measurement is a function returning a dataclass; nothing here prints (the CLI draws the
table). The timed loops alternate the two things they compare in short rounds and keep the
median round, so a neighbour's burst of work on a shared machine hurts both sides alike
instead of deciding the ratio.

The figures: training throughput of charrnn's own `Trainer.step` next to a plain
reference loop (embedding -> nn.LSTM -> linear, AdamW) at the same config and precision;
utilisation = achieved training FLOP/s over the measured matmul peak; sampling speed of the
fast one-step path next to its memory-bandwidth limit; the data path on a generated corpus
(encode time, peak memory, time to the first step of a second run); and validation bits per
character on tinyshakespeare after a fixed wall-clock budget.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from ..data.corpora import find_corpus
from ..footprint import training_flops_per_token
from ..probes.cache import usable_cores
from ..probes.threads import thread_counts
from ..runtime import cpu_can_run_bf16, resolve_device
from .datapath import bench_data, generate_corpus
from .neighbour import bench_busy_neighbour
from .quality import bench_quality_rows, shape_rows
from .results import (
    BenchPlan,
    BenchReport,
    BusyNeighbour,
    DataPath,
    Machine,
    PrecisionQuality,
    PrecisionShape,
    QualityRow,
    SampleSpeed,
    SamplingFloor,
    TrainingThreads,
    TrainSpeed,
)
from .sampling import bench_floor, bench_sampling, floor_label, stepper_weight_bytes
from .scan_cell import scan_rows
from .threads import bench_training_threads
from .timing import machine_info, measure_matmul_peak, measure_read_bandwidth
from .training import (
    VOCAB,
    ReferenceLoop,
    _synthetic_tokens,
    bench_bf16_shape,
    bench_precision_probe,
    bench_precision_quality,
    bench_training,
)

__all__ = [
    "VOCAB",
    "BenchPlan",
    "BenchReport",
    "BusyNeighbour",
    "DataPath",
    "Machine",
    "PrecisionQuality",
    "PrecisionShape",
    "QualityRow",
    "ReferenceLoop",
    "SampleSpeed",
    "SamplingFloor",
    "TrainSpeed",
    "TrainingThreads",
    "_synthetic_tokens",
    "bench_bf16_shape",
    "bench_data",
    "bench_precision_quality",
    "bench_quality_rows",
    "find_corpus",
    "floor_label",
    "bench_sampling",
    "bench_training",
    "bench_training_threads",
    "generate_corpus",
    "machine_info",
    "measure_matmul_peak",
    "measure_read_bandwidth",
    "run_bench",
    "stepper_weight_bytes",
    "training_flops_per_token",
]


def run_bench(
    plan: BenchPlan,
    *,
    device: str = "auto",
    sections: tuple[str, ...] = ("training", "sampling", "data", "quality"),  # also grid, scan, neighbour
    progress: Callable[[str], None] = lambda _: None,
    workdir: Path | None = None,
) -> BenchReport:
    """All measurements in one process; `progress` hears what is running (for a status line)."""
    began = time.perf_counter()
    dev = resolve_device(device)
    report = BenchReport(
        quick=plan == BenchPlan.quick(),
        machine=machine_info(dev),
        config={"hidden": plan.hidden, "layers": plan.layers, "seq_len": plan.seq_len, "batch_size": plan.batch_size},
    )
    # bf16 on a CPU without native support fails inside oneDNN: time only what this machine runs.
    bf16_here = dev.type != "cpu" or cpu_can_run_bf16()
    if "training" in sections:
        progress("precision probe (fp32 vs bf16 at the bench's shape)")
        report.precision_probe = bench_precision_probe(plan, dev)
        probe = report.precision_probe
        report.machine.auto_precision, report.machine.auto_reason = (
            (probe.choice, probe.reason) if probe else ("fp32", f"this {dev.type} has no bf16 kernels in this torch")
        )
        for precision in plan.precisions:
            if dev.type == "cpu" and (precision == "fp16" or (precision == "bf16" and not bf16_here)):
                continue
            progress(f"matmul peak ({precision})")
            report.matmul_peak[precision] = measure_matmul_peak(dev, precision)
            progress(f"training throughput ({precision})")
            report.training.append(bench_training(plan, precision, dev, report.matmul_peak[precision], workdir))
            if dev.type == "cpu":
                progress(f"training threads ({precision}): one, every core, split by rows")
                report.training_threads.append(bench_training_threads(plan, precision, dev))
        for batch_size, seq_len in plan.bf16_shapes if bf16_here else ():
            progress(f"bf16 vs fp32 at batch {batch_size}, seq {seq_len}")
            report.bf16_shapes.append(bench_bf16_shape(plan, batch_size, seq_len, dev))
    if "sampling" in sections:
        _sampling_rows(report, plan, dev, progress)
    if "neighbour" in sections:
        busy = usable_cores()
        progress(f"training {plan.neighbour_seconds:g} s alone, then beside a {busy}-thread matmul loop")
        report.busy_neighbour = bench_busy_neighbour(plan, plan.neighbour_seconds, busy)
    if "data" in sections:
        progress(f"data path ({plan.data_mb:g} MB corpus)")
        report.data = bench_data(plan.data_mb, workdir, plan.data_hidden, plan.data_source, plan.data_budget_seconds)
    report.quality_rows += _quality_rows(plan, dev, sections, progress)
    if "quality" in sections:
        if plan.precision_steps:
            progress(f"fp32 vs bf16 validation loss after {plan.precision_steps} steps")
            report.precision_quality = (
                bench_precision_quality(plan, dev)
                if bf16_here
                else PrecisionQuality(plan.precision_steps, skipped="no bf16 kernels on this CPU")
            )
    report.seconds = time.perf_counter() - began
    return report


def _sampling_rows(report: BenchReport, plan: BenchPlan, dev: torch.device, progress: Callable[[str], None]) -> None:
    """Sampling at each thread count next to its limits, and the sampler next to its floor."""
    progress("memory bandwidth")
    report.read_bandwidth = measure_read_bandwidth(torch.device("cpu"))
    cpu_peak = report.matmul_peak.get("fp32") if dev.type == "cpu" else None
    report.cpu_matmul_peak = cpu_peak or measure_matmul_peak(torch.device("cpu"), "fp32")
    counts: tuple[int | None, ...] = thread_counts() if plan.sample_each_thread_count else (None,)
    for cell, hidden in plan.sample_models:
        for streams in plan.sample_streams:
            for threads in counts:
                on = f"{threads} thread(s)" if threads else "the measured thread count"
                progress(f"sampling {cell} {plan.layers}x{hidden}, {streams} stream(s), {on}")
                report.sampling.append(
                    bench_sampling(
                        cell,
                        hidden,
                        plan.layers,
                        streams,
                        plan.sample_seconds,
                        report.read_bandwidth,
                        report.cpu_matmul_peak,
                        threads=threads,
                    )
                )
    if plan.floor_model:
        cell, hidden, layers = plan.floor_model
        progress(f"sampling {cell} {layers}x{hidden} through sample.generate, next to its matmuls alone")
        report.sampling_floor = bench_floor(cell, hidden, layers, 2 * plan.sample_seconds)


def _quality_rows(
    plan: BenchPlan, dev: torch.device, sections: tuple[str, ...], progress: Callable[[str], None]
) -> list[QualityRow]:
    """quality: no flags at each budget; grid: the fixed sizes; scan: the scan cells' rows."""
    rows = []
    if "quality" in sections:
        rows += bench_quality_rows(plan, dev, progress=progress)
    if "grid" in sections:
        # The no-flags row is what the grid judges; it is already there when quality ran too.
        with_defaults = "quality" not in sections or plan.grid_budgets != plan.quality_budgets
        shapes = plan.grid_batches or plan.grid_windows  # batch x window at the size rule's choice, else sizes
        rows += bench_quality_rows(
            plan,
            dev,
            () if shapes else plan.grid_sizes,
            plan.grid_budgets,
            with_defaults=with_defaults,
            extra=shape_rows(plan) if shapes else None,
            progress=progress,
        )
    if "scan" in sections:
        extra = scan_rows(plan, progress)
        rows += bench_quality_rows(plan, dev, budgets=plan.scan_budgets, extra=extra, progress=progress)
    return rows
