"""`scripts/soak_serve.py` at a small size: a real `charrnn serve` process takes 300 requests from
8 clients, a third malformed or abandoned, and never answers 5xx (but the documented 503), answers
every malformed request with a one-line 4xx, and keeps its memory (loosely: 300 requests are few).
The latency target is the full soak's alone (no timing in tests)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import REPO

pytest.importorskip("starlette", reason="charrnn serve needs the [serve] extra (starlette, uvicorn)")
pytestmark = pytest.mark.serial  # a real server process under load from many threads: run alone (Makefile)


def _soak(run, requests: int, clients: int, warmup: int, rss_tolerance: str) -> subprocess.CompletedProcess:
    """The soak script on `run`, without its latency target (no timing in tests)."""
    cmd = [sys.executable, str(REPO / "scripts" / "soak_serve.py"), str(run), "--requests", str(requests)]
    cmd += ["--clients", str(clients), "--warmup", str(warmup), "--latency", "0", "--rss-tolerance", rss_tolerance]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_the_server_survives_a_small_soak(tiny_run):
    result = _soak(tiny_run, requests=300, clients=8, warmup=100, rss_tolerance="0.5")
    assert result.returncode == 0, result.stdout + result.stderr
    classes = dict(re.findall(r"(\dxx) (\d+)", re.search(r"by status class: (.*)", result.stdout).group(1)))
    assert set(classes) <= {"2xx", "4xx", "5xx"}, result.stdout
    assert int(classes["2xx"]) > 100 and int(classes["4xx"]) > 30, result.stdout
    assert "soak: all targets met" in result.stderr


def test_the_soak_fails_loudly_when_a_target_is_missed(tiny_run):
    """The same soak with a memory allowance no server meets: exit 1 and the missed target named."""
    result = _soak(tiny_run, requests=120, clients=4, warmup=20, rss_tolerance="-1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "MISSED: memory changed by" in result.stderr
