#!/usr/bin/env python3
"""How fast `charrnn serve` streams, against `charrnn sample` on the same machine (a benchmark, not a test).

    python scripts/bench_serve.py CHECKPOINT [--length 2000] [--rounds 3] [--streams 8]

A: `charrnn sample --length N --seed S` run as a process; its speed counts the generation only
   (the time from its first character to its last, read from its stdout as it streams), so that
   starting Python and loading the model are left out, as they are for the server (loaded once).
B: one POST /api/generate to `charrnn serve CHECKPOINT` (a process on a free loopback port), timed
   by this client from the request to the `done` event.
A and B alternate, `--rounds` times each (the machine may be shared: the medians are reported).
Then `--streams` generations at once: the total characters over the wall time of all of them.
Needs the [serve] extra and httpx.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx


def sample_rate(checkpoint: Path, length: int, seed: int) -> float:
    """chars/s of `charrnn sample` from its first streamed character to its last."""
    cmd = [sys.executable, "-m", "charrnn", "sample", str(checkpoint), "--length", str(length), "--seed", str(seed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
    first = proc.stdout.read(1)
    started = time.perf_counter()
    rest = proc.stdout.read()
    ended = time.perf_counter()
    proc.wait()
    chars = len((first + rest).decode("utf-8").rstrip("\n"))
    return (chars - 1) / (ended - started)


def stream_rate(client: httpx.Client, model: str, length: int, seed: int) -> float:
    """chars/s of one streamed generation, from the request to the `done` event."""
    started = time.perf_counter()
    chars = 0
    body = {"model": model, "length": length, "seed": seed}
    with client.stream("POST", "api/generate", json=body) as res:
        res.raise_for_status()
        for line in res.iter_lines():
            if line.startswith("data: ") and '"text"' in line:
                chars += len(json.loads(line[6:])["text"])
    return chars / (time.perf_counter() - started)


def concurrent_total(url: str, model: str, length: int, streams: int) -> tuple[float, float]:
    """(total chars/s, slowest stream's chars/s) of `streams` generations at once."""
    rates: list[float] = []

    def one(seed: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            rates.append(stream_rate(client, model, length, seed))

    threads = [threading.Thread(target=one, args=(seed,)) for seed in range(streams)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return streams * length / (time.perf_counter() - started), min(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=8)
    args = parser.parse_args()
    checkpoint = args.checkpoint.resolve()
    cmd = [sys.executable, "-m", "charrnn", "serve", str(checkpoint), "--port", "0"]
    server = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=os.environ)
    try:
        url = None
        while url is None:
            line = server.stderr.readline()
            if not line:
                raise SystemExit("charrnn serve did not start")
            found = re.search(r"open (http://\S+/)", line)
            url = found.group(1) if found else None
        with httpx.Client(base_url=url, timeout=600) as client:
            model = client.get("api/models").json()["models"][0]["name"]
            stream_rate(client, model, 50, 0)  # load the model once, as a running server has
            sample, served = [], []
            for r in range(args.rounds):
                sample.append(sample_rate(checkpoint, args.length, r))
                served.append(stream_rate(client, model, args.length, r))
        total, slowest = concurrent_total(url, model, args.length, args.streams)
    finally:
        server.terminate()
        server.wait(timeout=30)
    a, b = statistics.median(sample), statistics.median(served)
    print(
        f"charrnn sample          : {a:8.0f} chars/s  (median of {args.rounds}: {', '.join(f'{x:.0f}' for x in sample)})"
    )
    print(
        f"one stream over HTTP    : {b:8.0f} chars/s  (median of {args.rounds}: {', '.join(f'{x:.0f}' for x in served)})"
    )
    print(f"ratio HTTP / sample     : {b / a:8.2f}x")
    print(f"{args.streams} streams at once total: {total:8.0f} chars/s  (slowest stream {slowest:.0f} chars/s)")
    print(f"threads: {os.cpu_count()} CPUs, torch threads per process: default")


if __name__ == "__main__":
    main()
