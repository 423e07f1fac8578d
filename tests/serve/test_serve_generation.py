"""`charrnn serve` as users start it (a subprocess on a free loopback port), under load: eight
generations at once, a bounded queue answered 503, a client that leaves frees its worker."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import charrnn

pytest.importorskip("uvicorn", reason="charrnn serve needs the [serve] extra (starlette, uvicorn)")
httpx = pytest.importorskip("httpx", reason="the streaming tests need httpx (the [test] extra)")

LONG = 1_000_000  # characters: far more than a test waits for, so only a stop ends these early
WORKERS, QUEUE = 8, 2


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    """The URL of `charrnn serve` on 127.0.0.1 (any free port), serving the tiny run as `tiny`."""
    root = tmp_path_factory.mktemp("served")
    shutil.copytree(tiny_run, root / "tiny", ignore=shutil.ignore_patterns("*.png", "*.jsonl"))
    command = [sys.executable, "-m", "charrnn", "serve", str(root), "--port", "0"]
    command += ["--workers", str(WORKERS), "--queue", str(QUEUE), "--max-length", str(LONG)]
    package_root = str(Path(charrnn.__file__).resolve().parent.parent)  # this checkout's charrnn, not another
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    url, seen = None, []
    deadline = time.monotonic() + 90
    while url is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(r"open (http://127\.0\.0\.1:\d+/)", line)
        url = match.group(1) if match else None
    if url is None:
        proc.kill()
        pytest.fail(f"charrnn serve did not print its URL: {''.join(seen)}")
    yield url, seen
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_it_says_where_it_listens_and_listens_on_loopback(server):
    url, seen = server
    assert "serving 1 model from" in "".join(seen) and "warning" not in "".join(seen)
    assert url.startswith("http://127.0.0.1:")


async def _first_text(stream) -> str:
    """Read one stream until its first text event. (The line iterator is kept on the stream: an
    abandoned iterator closes its connection, which is a client leaving.)"""
    while True:
        line = await stream.lines.__anext__()
        if line.startswith("data: "):
            return line


async def _open(stack: AsyncExitStack, client, length: int = LONG):
    body = {"model": "tiny", "length": length, "seed": 1}
    stream = await stack.enter_async_context(client.stream("POST", "api/generate", json=body))
    stream.lines = stream.aiter_lines()
    return stream


async def _accepted_within(client, seconds: float) -> bool:
    """Whether a new generation is taken (not 503) before `seconds` pass (it may wait for a worker:
    only its answer's status is read, then it leaves)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        async with client.stream("POST", "api/generate", json={"model": "tiny", "length": 1, "seed": 1}) as res:
            if res.status_code == 200:
                return True
        await asyncio.sleep(0.1)
    return False


def test_eight_at_once_a_bounded_queue_and_a_client_that_leaves(server):
    url, _ = server

    async def scenario():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            async with AsyncExitStack() as stack:
                running = [await _open(stack, client) for _ in range(WORKERS)]
                # Every one of the eight streams text while all eight are still running: none waits for another.
                firsts = await asyncio.gather(*(_first_text(s) for s in running))
                assert all(f and f.startswith('data: {"text":') for f in firsts)
                queued = [await _open(stack, client) for _ in range(QUEUE)]
                assert [s.status_code for s in running + queued] == [200] * (WORKERS + QUEUE)
                refused = await client.post("api/generate", json={"model": "tiny", "length": 10})
                assert refused.status_code == 503
                assert "busy" in refused.json()["error"] and "try again" in refused.json()["error"]
                # One client leaves: its generation (a million characters) stops, and a place opens.
                await running[0].aclose()
                assert await _accepted_within(client, 10)
                for s in running[1:] + queued:
                    await s.aclose()
            # All gone: every place is free again.
            results = await asyncio.gather(*(_accepted_within(client, 10) for _ in range(WORKERS + QUEUE)))
            assert all(results)

    asyncio.run(scenario())


def test_a_generation_nobody_reads_gives_its_place_back_when_cancelled():
    """A client gone before the first event: the response cancels the generation it never read."""
    import itertools

    from charrnn.serve.generation import Busy, WorkerPool

    pool = WorkerPool(workers=1, queue=0)

    async def scenario():
        pool.reserve()
        with pytest.raises(Busy):
            pool.reserve()
        generation = pool.start(lambda: itertools.repeat("x"))  # endless
        await asyncio.sleep(0.05)
        generation.cancel()
        deadline = time.monotonic() + 10
        while pool.taken and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert pool.taken == 0
    pool.shutdown()
