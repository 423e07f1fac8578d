"""Timing helpers and the machine's own ceilings: matmul peak and memory read bandwidth."""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path

import torch

from ..probes.cache import cpu_model
from ..runtime import timed
from .results import Machine

SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "bf16", "asimd", "sve")


def cpu_flags() -> str:
    """The CPU features speed depends on, as /proc/cpuinfo names them ("" where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return " ".join(flag for flag in SPEED_FLAGS if flag in have)
    except OSError:
        pass
    return ""


def machine_info(device: torch.device) -> Machine:
    cpu = cpu_model()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return Machine(
        torch=torch.__version__,
        python=platform.python_version(),
        cpu=cpu,
        threads=torch.get_num_threads(),
        device=f"{device.type} ({name})",
        cpu_flags=cpu_flags(),
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
        best = min(best, timed(lambda: torch.mm(a, b), device))
        if time.perf_counter() > deadline:
            break
    return 2 * size**3 / best


def measure_read_bandwidth(device: torch.device, megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes/s of reading a buffer far larger than the caches (a sum touches every byte once)."""
    x = torch.ones(megabytes * (1 << 20) // 4, device=device)
    x.sum()
    best = min(timed(lambda: x.sum(), device) for _ in range(repeats))
    return x.numel() * 4 / best
