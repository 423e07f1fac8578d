#!/usr/bin/env python3
"""Soak `charrnn serve`: many requests from many clients, a third of them malformed or abandoned.

    python scripts/soak_serve.py [CHECKPOINT] [--requests 10000] [--clients 32] [--bad 0.3]

Starts a real `charrnn serve` process on 127.0.0.1 (a free port) with CHECKPOINT, or with a tiny
model it trains first (a few seconds). `--clients` threads then send `--requests` requests over
loopback; a share `--bad` of them are malformed or abandoned: bad JSON, wrong types, absurd values,
huge bodies, unknown models and paths, sockets closed mid-stream or before the body, slow readers.
Every socket has a timeout, so the soak ends even if the server stops answering.

Checked (exit 1 when one fails): no 5xx answer but the documented 503 (the server is full); every
malformed request answered by a 4xx (or that 503) whose body is one line; resident memory (VmRSS)
of the server after the whole soak within `--rss-tolerance` of what it was after the first
`--warmup` requests; and, with the server otherwise idle, the time from a request to the first
text of its stream at p99 within `--p99-ms` (`--latency 0` skips it). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HOST = "127.0.0.1"
TIMEOUT = 30.0  # seconds any socket waits for the server
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n") * 60


# ---------------------------------------------------------------- the server process


def train_tiny(folder: Path) -> Path:
    """A tiny model (20 steps of a 32-unit LSTM) trained into folder/run; returns the run."""
    corpus = folder / "tiny.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    cmd = [
        sys.executable,
        "-m",
        "charrnn",
        "train",
        str(corpus),
        "--hidden",
        "32",
        "--embed",
        "16",
        "--layers",
        "1",
        "--seq-len",
        "16",
        "--batch-size",
        "4",
        "--steps",
        "20",
        "--eval-every",
        "20",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--out",
        str(folder / "run"),
    ]
    env = {**os.environ, "CHARRNN_CACHE": str(folder / "cache")}
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"soak: training the tiny model failed:\n{done.stderr[-2000:]}")
    return folder / "run"


def start_server(target: Path, extra: list[str]) -> tuple[subprocess.Popen, int]:
    """`charrnn serve target` on a free loopback port, and that port once it listens."""
    cmd = [sys.executable, "-m", "charrnn", "serve", str(target), "--host", HOST, "--port", "0", *extra]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        found = re.search(r"open http://[^:]+:(\d+)/", line)
        if found:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its pipe drained
            return proc, int(found.group(1))
    proc.kill()
    raise SystemExit(f"soak: the server did not start ({proc.stderr.read() if proc.poll() is not None else ''})")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SystemExit("soak: no VmRSS in /proc (Linux only)")


# ---------------------------------------------------------------- one request on a raw socket


def connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


def head(method: str, path: str, length: int | None = None, chunked: bool = False) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", "Connection: close"]
    if length is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {length}"]
    if chunked:
        lines += ["Content-Type: application/json", "Transfer-Encoding: chunked"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_all(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def parse(raw: bytes) -> tuple[int, bytes]:
    """(status, body) of a whole HTTP/1.1 response read to the end of the connection."""
    top, _, body = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    if any(re.fullmatch(r"(?i)transfer-encoding:\s*chunked", line.strip()) for line in lines[1:]):
        out, rest = bytearray(), body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out += rest[:size]
            rest = rest[size + 2 :]
        body = bytes(out)
    return status, body


def exchange(port: int, request: bytes) -> tuple[int, bytes]:
    with connect(port) as sock:
        sock.sendall(request)
        return parse(read_all(sock))


def post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    return exchange(port, head("POST", path, len(body)) + body)


def as_json(value) -> bytes:
    return json.dumps(value).encode()


# ---------------------------------------------------------------- the kinds of request


def good_kinds(model: str) -> dict:
    """Well-formed requests: name -> function(port, rng) -> (status, body or None)."""

    def generate(port, rng):
        body = {"model": model, "length": rng.randrange(1, 80), "seed": rng.randrange(1000), "prime": "All"}
        status, text = post(port, "/api/generate", as_json(body))
        if status == 200 and b"event: done" not in text:
            return 599, b"the stream ended without its done event: " + text[-300:]
        return status, None

    return {
        "generate": generate,
        "models": lambda port, rng: (exchange(port, head("GET", "/api/models"))[0], None),
        "page": lambda port, rng: (exchange(port, head("GET", "/"))[0], None),
        "surprise": lambda port, rng: (post(port, "/api/surprise", as_json({"model": model, "text": "All:"}))[0], None),
    }


def bad_bodies(model: str) -> list[bytes]:
    """JSON bodies of /api/generate the server must refuse with a 4xx."""
    wrong = [
        {"model": 5},
        {"model": model, "length": "long"},
        {"model": model, "temperature": [1]},
        {"model": model, "seed": True},
        {"model": model, "stop": 3},
        {"model": model, "extra": 1},
        {"prime": "x"},
        [model],
        "model",
        None,
    ]
    absurd = [
        {"model": model, "length": 10**12},
        {"model": model, "length": -1},
        {"model": model, "temperature": -5},
        {"model": model, "top_p": 7},
        {"model": model, "top_k": -2},
        {"model": model, "seed": 2**70},
        {"model": model, "length": 1e308},
        {"model": model, "prime": "\u2603\u2603"},
        {"model": "../../etc/passwd"},
        {"model": "no/such/model"},
        {"model": model, "prime": "x" * 20_000},
    ]
    broken = [
        b"{",
        b"{'model': 1}",
        b"\xff\xfe\x00",
        b"",
        b"[" * 100_000,
        b'{"model": "%s", "length": 1%s}' % (model.encode(), b"0" * 5000),
        b'{"model": "%s", "temperature": NaN}' % model.encode(),
    ]
    return [as_json(b) for b in wrong + absurd] + broken


def bad_kinds(model: str) -> dict:
    """Malformed or abandoned requests: name -> function(port, rng) -> (status, body or None).
    A body means the answer must be a one-line 4xx; None means nothing is checked but its status."""
    bodies = bad_bodies(model)

    def huge_declared(port, rng):  # refused from its Content-Length, before the body is read
        with connect(port) as sock:
            sock.sendall(head("POST", "/api/generate", 50_000_000) + b'{"model": "' + b"x" * 60_000)
            return parse(read_all(sock))

    def huge_chunked(port, rng):  # no length declared: refused once the body passes the limit
        with connect(port) as sock:
            sock.sendall(head("POST", "/api/abc/check", chunked=True))
            try:
                for _ in range(40):
                    sock.sendall(b"8000\r\n" + b"x" * 0x8000 + b"\r\n")
                sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the server answered and stopped reading: its answer is still there
            return parse(read_all(sock))

    def abandon_stream(port, rng):
        body = as_json({"model": model, "length": 5000, "seed": rng.randrange(1000)})
        with connect(port) as sock:
            sock.sendall(head("POST", "/api/generate", len(body)) + body)
            first = sock.recv(200)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        return int(first.split()[1]) if first.startswith(b"HTTP/") else 599, None

    def slow_reader(port, rng):  # reads a few bytes at a time for a moment, then goes away
        body = as_json({"model": model, "length": 3000, "seed": rng.randrange(1000)})
        with connect(port) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(head("POST", "/api/generate", len(body)) + body)
            first = sock.recv(16)
            for _ in range(10):
                time.sleep(0.05)
                sock.recv(16)
        return int(first.split()[1]) if first.startswith(b"HTTP/") else 599, None

    def body_cut(port, rng):  # declares 100 bytes, sends 10 and leaves
        with connect(port) as sock:
            sock.sendall(head("POST", "/api/generate", 100) + b'{"model": ')
        return 0, None

    return {
        "bad body": lambda port, rng: post(port, "/api/generate", rng.choice(bodies)),
        "bad tune": lambda port, rng: post(
            port,
            "/api/abc/check",
            rng.choice([as_json({"tune": 5}), as_json({"tune": " "}), as_json({"tune": "X:1\n" * 10_000}), b"{"]),
        ),
        "bad surprise": lambda port, rng: post(
            port, "/api/surprise", as_json({"model": model, "text": rng.choice([7, "x" * 6000])})
        ),
        "garbage": lambda port, rng: exchange(port, b"BLAH / SPDY/9\r\n\x00\x01\r\n\r\n"),
        "wrong method": lambda port, rng: exchange(port, head("GET", "/api/generate")),
        "no such path": lambda port, rng: exchange(port, head("GET", "/api/nothing-here")),
        "huge declared": huge_declared,
        "huge chunked": huge_chunked,
        "abandoned stream": abandon_stream,
        "slow reader": slow_reader,
        "body cut": body_cut,
    }


# ---------------------------------------------------------------- the soak


class Tally:
    """What the clients saw, shared between their threads."""

    def __init__(self, warmup: int, pid: int):
        self.lock = threading.Lock()
        self.classes: Counter = Counter()
        self.kinds: Counter = Counter()
        self.problems: list[str] = []
        self.done, self.warmup, self.pid, self.rss_warm = 0, warmup, pid, 0

    def add(self, kind: str, status: int, body: bytes | None, bad: bool) -> None:
        problem = None
        if status >= 500 and status != 503:
            problem = f"{kind}: answered {status} {(body or b'')[:200]!r}"
        elif body is not None and bad:
            text = body.decode("utf-8", "replace").strip()
            if not (400 <= status < 500 or status == 503):
                problem = f"{kind}: a malformed request answered {status}, not a 4xx"
            elif not text or "\n" in text:
                problem = f"{kind}: the {status} answer is not one line: {text[:200]!r}"
        with self.lock:
            label = "503 (full, documented)" if status == 503 else f"{status // 100}xx"
            self.classes[label if status else "no answer (left before it)"] += 1
            self.kinds[kind] += 1
            if problem:
                self.problems.append(problem)
            self.done += 1
            if self.done == self.warmup:
                self.rss_warm = rss_kib(self.pid)


def client(port: int, jobs: queue.Queue, tally: Tally, model: str, bad_share: float) -> None:
    good, bad = good_kinds(model), bad_kinds(model)
    while True:
        try:
            index = jobs.get_nowait()
        except queue.Empty:
            return
        rng = random.Random(index)
        is_bad = rng.random() < bad_share
        kind = rng.choice(sorted(bad if is_bad else good))
        try:
            status, body = (bad if is_bad else good)[kind](port, rng)
        except (OSError, ValueError, IndexError) as exc:  # reset, timeout, or no HTTP answer at all
            with tally.lock:
                tally.problems.append(f"{kind}: {type(exc).__name__}: {exc}")
            status, body = 0, None
        tally.add(kind, status, body, is_bad)


def first_text_ms(port: int, model: str, seed: int) -> float:
    """Milliseconds from sending a generation request to reading its first text event."""
    body = as_json({"model": model, "length": 200, "seed": seed})
    with connect(port) as sock:
        started = time.perf_counter()
        sock.sendall(head("POST", "/api/generate", len(body)) + body)
        seen = b""
        while b'data: {"text"' not in seen:
            chunk = sock.recv(4096)
            if not chunk:
                raise SystemExit(f"soak: a stream ended before its first text: {seen[:300]!r}")
            seen += chunk
        elapsed = time.perf_counter() - started
        read_all(sock)
    return elapsed * 1000


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def soak(port: int, pid: int, model: str, args: argparse.Namespace) -> tuple[Tally, float]:
    jobs: queue.Queue = queue.Queue()
    for index in range(args.requests):
        jobs.put(index + args.seed * 1_000_003)
    tally = Tally(min(args.warmup, args.requests), pid)
    threads = [
        threading.Thread(target=client, args=(port, jobs, tally, model, args.bad), daemon=True)
        for _ in range(args.clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally, time.perf_counter() - started


def report(tally: Tally, seconds: float, rss_end: int, latencies: list[float], args) -> list[str]:
    """Prints the figures; returns the targets missed."""
    missed = list(tally.problems)
    print(
        f"{args.requests} requests from {args.clients} clients in {seconds:.1f} s "
        f"({args.requests / seconds:.0f}/s), {args.bad:.0%} malformed or abandoned"
    )
    print("by status class: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.classes.items())))
    print("by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.kinds.items())))
    growth = (rss_end - tally.rss_warm) / tally.rss_warm
    print(
        f"server VmRSS: {tally.rss_warm / 1024:.1f} MiB after {tally.warmup} requests, "
        f"{rss_end / 1024:.1f} MiB after all ({growth:+.1%}; allowed ±{args.rss_tolerance:.0%})"
    )
    if abs(growth) > args.rss_tolerance:
        missed.append(f"memory changed by {growth:+.1%} during the soak")
    if latencies:
        p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
        print(
            f"first text of one stream, server idle ({len(latencies)} streams): p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms (target p99 <= {args.p99_ms:g} ms)"
        )
        if p99 > args.p99_ms:
            missed.append(f"first-text p99 {p99:.1f} ms is over {args.p99_ms:g} ms")
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", type=Path, help="a checkpoint or run (default: train a tiny one)")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--bad", type=float, default=0.3, help="share of malformed or abandoned requests")
    parser.add_argument("--warmup", type=int, default=500, help="requests before the first memory reading")
    parser.add_argument("--rss-tolerance", type=float, default=0.10)
    parser.add_argument("--latency", type=int, default=200, help="idle streams timed after the soak (0: none)")
    parser.add_argument("--p99-ms", type=float, default=200.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-serve-") as tmp:
        target = args.checkpoint or train_tiny(Path(tmp))
        proc, port = start_server(target, [])
        try:
            model = json.loads(exchange(port, head("GET", "/api/models"))[1])["models"][0]["name"]
            tally, seconds = soak(port, proc.pid, model, args)
            time.sleep(1.0)  # abandoned generations stop within a step: let the server go idle
            rss_end = rss_kib(proc.pid)
            latencies = [first_text_ms(port, model, seed) for seed in range(args.latency)]
            if proc.poll() is not None:
                tally.problems.append(f"the server exited with {proc.returncode}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    missed = report(tally, seconds, rss_end, latencies, args)
    for line, count in Counter(missed).most_common(20):
        print(f"MISSED: {line}" + (f" ({count} times)" if count > 1 else ""), file=sys.stderr)
    print("soak: all targets met" if not missed else f"soak: {len(missed)} target(s) missed", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
