"""Where and how a run executes: device, numeric precision, and stopping on signals."""

from __future__ import annotations

import os
import signal
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from .errors import ConfigError

# ----------------------------------------------------------------------------- threads


def set_cpu_threads(threads: int | None) -> None:
    """--threads N: torch's intra-op threads in this process; None leaves torch's choice (one per
    core). Fewer threads beside a busy neighbour: both sides then stop waiting on each other."""
    if threads is None:
        return
    most = 4 * (os.cpu_count() or 1)
    if not 1 <= threads <= most:
        raise ConfigError(f"--threads must be between 1 and {most} (4 per core of this machine), got {threads}")
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- signals


class StopFlag:
    """Set by a signal handler; the loop checks it between steps and stops cleanly."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """First SIGINT/SIGTERM: finish the step, save, stop. Second: exit at once (the last
    complete checkpoint is intact because every save is an atomic rename)."""
    flag = StopFlag()

    def handler(signum: int, frame: Any) -> None:
        if flag.signum is not None:
            os._exit(128 + signum)
        flag.signum = signum

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: no signal handling, nothing to restore
        pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ----------------------------------------------------------------------------- devices


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available (use --device cpu or auto)")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device mps: Apple MPS is not available here (use --device cpu or auto)")
    return torch.device(requested)


def cpu_can_run_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU: AVX-512 (emulated where the CPU has no
    AVX-512 BF16 or AMX), or ARM BF16. Whether they are faster than fp32 is measured
    (probes.precision), never read from this."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


AutoPrecision = Callable[[torch.device], tuple[str, str]]  # device -> (precision, why): --precision auto


def resolve_precision(requested: str, device: torch.device, auto: AutoPrecision | None = None) -> tuple[str, str]:
    """(precision, why) for the device. auto: what `auto` measures (probes.precision for a
    training run); without it, fp32 on a CPU and bf16 (else fp16 with loss scaling) on a GPU."""
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if requested == "bf16" and not bf16:
            raise ConfigError("--precision bf16: this GPU does not support bf16 (use fp16 or auto)")
    if requested == "fp16" and device.type != "cuda":
        raise ConfigError(f"--precision fp16 needs a CUDA GPU (this run is on {device.type}); use bf16 or fp32")
    if requested == "bf16" and device.type == "cpu" and not cpu_can_run_bf16():
        # oneDNN's bf16 LSTM needs AVX-512 (or ARM BF16): elsewhere it fails deep inside the first step.
        raise ConfigError("--precision bf16: this CPU has no bf16 kernels (they need AVX-512 or ARM BF16); use fp32")
    if requested != "auto":
        return requested, "as asked"
    if auto is not None:
        return auto(device)
    if device.type == "cuda":
        return ("bf16", "the GPU supports bf16") if bf16 else ("fp16", "the GPU lacks bf16: fp16 with loss scaling")
    return "fp32", "not measured for this use: fp32"


def timed(work: Callable[[], object], device: torch.device) -> float:
    """Seconds `work()` takes on `device`, a GPU's queued work included (it is waited for)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - began


def autocast_for(device: torch.device, precision: str) -> AbstractContextManager[None]:
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class Placement:
    """Where a run executes and in what arithmetic: decided once, before anything is sized or built."""

    device: torch.device
    precision: str  # fp32, bf16 or fp16
    precision_reason: str  # for the user: why that precision
    threads: int | None = None  # --threads: a fixed count; None: measured as the run goes (probes.threads)

    @classmethod
    def decide(
        cls,
        device: str,
        precision: str,
        given: torch.device | None = None,
        auto: AutoPrecision | None = None,
        threads: int | None = None,
    ) -> "Placement":
        """--device, then --precision for that device (`auto`: how --precision auto measures it),
        on --threads threads; `given`: the device a launcher assigned."""
        set_cpu_threads(threads)
        target = given if given is not None else resolve_device(device)
        chosen, why = resolve_precision(precision, target, auto)
        return cls(target, chosen, why, threads)
