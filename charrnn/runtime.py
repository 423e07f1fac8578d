"""Where and how a run executes: device, numeric precision, and stopping on signals."""

from __future__ import annotations

import os
import signal
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator

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


def cpu_has_fast_bf16() -> bool:
    """AVX-512 BF16 / AMX (x86) or the ARM BF16 extension: where bf16 matmuls run natively."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """(precision, why) for the device: auto = bf16 where the hardware runs it natively,
    fp16 with loss scaling on GPUs without bf16, fp32 otherwise."""
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if requested == "auto":
            return ("bf16", "the GPU supports bf16") if bf16 else ("fp16", "the GPU lacks bf16: fp16 with loss scaling")
        if requested == "bf16" and not bf16:
            raise ConfigError("--precision bf16: this GPU does not support bf16 (use fp16 or auto)")
        return requested, "as asked"
    if requested == "fp16":
        raise ConfigError(f"--precision fp16 needs a CUDA GPU (this run is on {device.type}); use bf16 or fp32")
    if requested == "auto":
        if device.type == "cpu" and cpu_has_fast_bf16():
            return "bf16", "this CPU runs bf16 natively"
        return "fp32", f"no native bf16 on this {device.type}"
    if requested == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        # oneDNN's bf16 LSTM needs AVX-512 (or ARM BF16): elsewhere it fails deep inside the first step.
        raise ConfigError(
            "--precision bf16: this CPU has no native bf16 (AVX-512 BF16, AMX or ARM BF16); use fp32 or auto"
        )
    return requested, "as asked"


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

    @classmethod
    def decide(cls, device: str, precision: str, given: torch.device | None = None) -> "Placement":
        """--device, then --precision for that device; `given`: the device a launcher assigned."""
        target = given if given is not None else resolve_device(device)
        chosen, why = resolve_precision(precision, target)
        return cls(target, chosen, why)
