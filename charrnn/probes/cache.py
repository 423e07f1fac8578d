"""Recent probes per machine, in small JSON files beside the token-id cache.

A probe taken while the machine is busy (a build, a second training) reads a fraction of its
speed, and a cache that kept it would bind every later run to it. So each key keeps a few
recent probes and callers answer from the best of them: a busy probe is outvoted by the next
quiet one, and nothing older than a month (another kernel, another power plan) counts.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from ..atomic import write_atomic
from ..data.tokens import cache_dir

SETTLED_PROBES = 3  # probes (one per run) before a cache answers without probing again
KEPT_PROBES = 5
PROBE_MAX_AGE = 30 * 24 * 3600.0  # seconds

Probe = dict[str, float]  # a probe's figures, and "at": when it was taken (seconds since the epoch)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """The cores this process may run on (a container or `taskset` may give it fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_key(device: torch.device, threads: int | None = None) -> str:
    """What a measurement on `device` depends on: the processor, the cores (or the threads it ran
    on), the torch build."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    cores = f"threads={threads}" if threads is not None else f"cores={usable_cores()}"
    return f"{device.type}|{where}|{cores}|torch={torch.__version__}"


class ProbeCache:
    """The recent probes of one kind (`speed`, `precision`, `threads`), per key, in `<kind>.json`
    next to the token cache ($CHARRNN_CACHE, else ~/.cache/charrnn). A missing, unreadable or
    damaged file is an empty cache; a read-only one only costs the next run its probe again."""

    def __init__(
        self, kind: str, fields: tuple[str, ...], path: Path | None = None, now: Callable[[], float] = time.time
    ):
        self.path = path or cache_dir().parent / f"{kind}.json"
        self.fields = fields  # the figures every probe of this kind has: positive and finite
        self.now = now

    def recent(self, key: str) -> list[Probe]:
        return self._read(self.now()).get(key, [])

    def settled(self, key: str) -> bool:
        return len(self.recent(key)) >= SETTLED_PROBES

    def add(self, key: str, probe: Probe) -> list[Probe]:
        """Keep `probe` (stamped now) under `key`; the recent probes of that key, it included."""
        when = self.now()
        entries = self._read(when)
        entries[key] = [*entries.get(key, []), {**probe, "at": when}][-KEPT_PROBES:]
        self._write(entries)
        return entries[key]

    def discard(self, key: str, drop: Callable[[Probe], bool]) -> int:
        """Forget the probes under `key` that `drop` picks; how many went."""
        entries = self._read(self.now())
        kept = [p for p in entries.get(key, []) if not drop(p)]
        gone = len(entries.get(key, [])) - len(kept)
        if gone:
            entries[key] = kept
            self._write(entries)
        return gone

    def _write(self, entries: dict[str, list[Probe]]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            document = {k: {"probes": v} for k, v in entries.items()}
            write_atomic(self.path, json.dumps(document, indent=1).encode(), durable=False)
        except OSError:
            pass

    def _read(self, now: float) -> dict[str, list[Probe]]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(document, dict):
            return {}
        entries = {}
        for key, entry in document.items():
            probes = entry.get("probes") if isinstance(entry, dict) else None
            if isinstance(key, str) and isinstance(probes, list):
                entries[key] = [p for p in probes if self._sound(p, now)][-KEPT_PROBES:]
        return entries

    def _sound(self, probe: object, now: float) -> bool:
        if not isinstance(probe, dict):
            return False
        if any(name not in probe for name in (*self.fields, "at")):
            return False
        values = list(probe.values())  # every figure a probe keeps is a finite number (and "at" a time)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            return False
        at = float(probe["at"])
        return all(float(v) > 0 for k, v in probe.items() if k != "at") and now - PROBE_MAX_AGE <= at <= now + 60
