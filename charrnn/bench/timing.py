"""Timing helpers and the machine's own ceilings: matmul peak and memory read bandwidth."""

from __future__ import annotations

import math
import platform
import time
from typing import Any, Callable

import torch

from ..probes.cache import cpu_model
from ..runtime import resolve_precision
from .results import Machine


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def machine_info(device: torch.device) -> Machine:
    precision, reason = resolve_precision("auto", device)
    cpu = cpu_model()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return Machine(
        torch=torch.__version__,
        python=platform.python_version(),
        cpu=cpu,
        threads=torch.get_num_threads(),
        device=f"{device.type} ({name})",
        auto_precision=precision,
        auto_reason=reason,
    )


def measure_matmul_peak(device: torch.device, precision: str = "fp32", size: int = 1024, seconds: float = 0.5) -> float:
    """FLOP/s of a square matmul: the ceiling training throughput is compared against."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device.type == "cuda":
        size = max(size, 4096)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)  # warm-up: thread pool, kernel selection
    best = math.inf
    deadline = time.perf_counter() + seconds
    while True:
        best = min(best, _timed(lambda: torch.mm(a, b), device))
        if time.perf_counter() > deadline:
            break
    return 2 * size**3 / best


def measure_read_bandwidth(device: torch.device, megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes/s of reading a buffer far larger than the caches (a sum touches every byte once)."""
    x = torch.ones(megabytes * (1 << 20) // 4, device=device)
    x.sum()
    best = min(_timed(lambda: x.sum(), device) for _ in range(repeats))
    return x.numel() * 4 / best
