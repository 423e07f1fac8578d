"""Data-parallel training with torch.distributed (DDP), launched by torchrun.

`DistContext()` is the single-process default: every collective is a no-op. Under torchrun
(RANK / WORLD_SIZE / LOCAL_RANK in the environment) `DistContext.from_env()` joins the
process group (NCCL on CUDA, gloo on CPU) with a bounded timeout, so a failed rank ends the
run with an error instead of a hang.
"""

from __future__ import annotations

import datetime
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from ..errors import CharRNNError, ConfigError, Interrupted
from ..model import HiddenState, map_state, stream_count

# How long a collective may wait for the other ranks before the run fails instead of hanging.
TIMEOUT = datetime.timedelta(seconds=float(os.environ.get("CHARRNN_DIST_TIMEOUT", "120")))


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None  # set under torchrun: each rank's own device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @staticmethod
    def launched_by_torchrun() -> bool:
        return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1

    @classmethod
    def from_env(cls, device: str = "auto") -> "DistContext":
        import torch.distributed as dist

        if not cls.launched_by_torchrun():
            return cls()
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
        if device == "cuda" and not use_cuda:
            raise ConfigError("--device cuda: no CUDA GPU is available on this node")
        if device == "mps":
            raise ConfigError("--device mps: a run of several processes trains on CUDA GPUs or on the CPU")
        if use_cuda and local >= torch.cuda.device_count():
            raise ConfigError(
                f"process {local} of this node has no GPU of its own ({torch.cuda.device_count()} visible): "
                f"start at most that many processes per node (--nproc-per-node), or train on the CPU (--device cpu)"
            )
        if use_cuda:
            torch.cuda.set_device(local)
            dev = torch.device("cuda", local)
        else:
            dev = torch.device("cpu")
        if not dist.is_initialized():
            try:
                dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=TIMEOUT)
            except dist.DistError as exc:  # a rank that never came, an address nobody listens on
                first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
                raise RankFailed(
                    f"rank {rank}: the {world} processes of this run could not all meet within "
                    f"CHARRNN_DIST_TIMEOUT={TIMEOUT.total_seconds():g}s ({first[:200]}); check the rendezvous "
                    f"address and that every node started"
                ) from None
        return cls(rank=rank, world_size=world, local_rank=local, device=dev)

    # -- collectives (no-ops in a single process)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return value
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def mean_over_ranks(self, value: float) -> float:
        """The mean of a float over all ranks (the loss of the global batch from each rank's)."""
        if not self.active:
            return value
        t = torch.tensor(value, dtype=torch.float64, device=self.device)
        return float(self.all_reduce_sum(t).item()) / self.world_size

    def end_of_step(self, signum: int, *seconds: float) -> tuple[int, list[float]]:
        """One collective per step: the signal any rank received (0: none), so that all stop at
        this step, and the largest of each of `seconds` (the slowest rank's clock and durations),
        so that --time-budget and a time-based learning-rate schedule decide the same on every
        rank (ranks apart would hang)."""
        signum_max, *largest = self._max([float(signum), *seconds])
        return int(signum_max), largest

    def sync_clock(self, elapsed: float) -> float:
        """The slowest rank's clock: every rank then counts the same seconds of the run."""
        return self._max([elapsed])[0]

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when it is true on one (a decision all ranks must take together)."""
        return bool(self._max([float(flag)])[0])

    def _max(self, values: list[float]) -> list[float]:
        if not self.active:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [float(v) for v in t.tolist()]

    def check_same(self, settings: dict[str, Any]) -> None:
        """Refuse ranks launched with different options or corpora (they would train different
        models, or hang in a collective): every rank gets the same error naming the difference."""
        if not self.active:
            return
        everyone = self.all_gather_json(settings)
        for rank, other in enumerate(everyone[1:], start=1):
            diff = _first_difference(everyone[0], other)
            if diff is not None:
                key, ours, theirs = diff
                raise ConfigError(
                    f"the {self.world_size} processes of this run disagree: rank {rank} has {key}={theirs!r} but "
                    f"rank 0 has {ours!r}; launch every rank with the same options and the same corpus"
                )

    def all_gather_json(self, value: Any) -> list[Any]:
        """Every rank's JSON-able `value`, in rank order. JSON bytes in a tensor rather than
        torch's *_object collectives, which pickle (this project never unpickles)."""
        if not self.active:
            return [value]
        import torch.distributed as dist

        blob = torch.frombuffer(bytearray(json.dumps(value, sort_keys=True).encode()), dtype=torch.uint8)
        size = torch.tensor([blob.numel()], dtype=torch.int64, device=self.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros(longest, dtype=torch.uint8, device=self.device)
        padded[: blob.numel()] = blob.to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return [json.loads(p[: int(n.item())].cpu().numpy().tobytes()) for p, n in zip(parts, sizes)]

    def gather_state(self, state: HiddenState | None) -> HiddenState | None:
        """Every rank's carried state, joined along the stream dimension (for the checkpoint)."""
        if state is None or not self.active:
            return state
        import torch.distributed as dist

        def gather(t: torch.Tensor) -> torch.Tensor:
            parts = [torch.empty_like(t) for _ in range(self.world_size)]
            dist.all_gather(parts, t.contiguous())
            return torch.cat(parts, dim=1)

        return map_state(gather, state)

    def scatter_state(self, state: HiddenState, batch_size: int, device: torch.device) -> HiddenState | None:
        """This rank's streams of a saved state. A state saved with another number of streams
        (resuming under a different world size) cannot be split: it is reset to zero."""
        if stream_count(state) != batch_size * self.world_size:
            return None
        lo, hi = self.rank * batch_size, (self.rank + 1) * batch_size
        return map_state(lambda t: t[:, lo:hi].to(device), state)

    @contextmanager
    def failures_as_errors(self) -> Iterator[None]:
        """A broken connection or a collective timing out means another rank died or hangs:
        say so in one line instead of a backend traceback (torchrun names the failed rank)."""
        if not self.active:
            yield
            return
        import torch.distributed as dist

        try:
            yield
        except (dist.DistError, RuntimeError) as exc:
            text = str(exc)
            if not isinstance(exc, dist.DistError) and not any(w in text for w in _COMM_FAILURE_WORDS):
                raise
            first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
            raise RankFailed(
                f"rank {self.rank}: lost contact with the other processes of this run (a rank failed, or did not "
                f"answer for CHARRNN_DIST_TIMEOUT={TIMEOUT.total_seconds():g}s); the backend said: {first[:200]}"
            ) from None

    @contextmanager
    def running(self) -> Iterator[None]:
        """The process group for one run, left when it ends: together (at a barrier) when the run
        finished or was stopped, since every rank then ends at the same step; at once after an error."""
        together = False
        try:
            yield
            together = True
        except Interrupted:
            together = True
            raise
        finally:
            self.close(together=together)

    def close(self, *, together: bool = False) -> None:
        """Leave the process group. `together`: every rank ended the run at the same step, so they
        meet at a barrier first: a rank that tears gloo down while its peer is still finishing its
        last collective was killed by SIGABRT at exit ('terminate called without an active exception')."""
        if self.active:
            import torch.distributed as dist

            if dist.is_initialized():
                if together:
                    try:
                        dist.barrier()
                    except (dist.DistError, RuntimeError):
                        pass  # a peer is gone: leave anyway
                dist.destroy_process_group()


class RankFailed(CharRNNError):
    """Another process of a data-parallel run died or stopped answering."""


# What gloo and NCCL say when a peer is gone or a collective timed out.
_COMM_FAILURE_WORDS = ("gloo", "NCCL", "Connection", "connection", "timed out", "Timeout", "peer")


def _first_difference(a: Any, b: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """(dotted key, a's value, b's value) of the first place two JSON-like values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            found = _first_difference(a.get(k), b.get(k), f"{key}.{k}" if key else str(k))
            if found is not None:
                return found
        return None
    return None if a == b else (key or "settings", a, b)
