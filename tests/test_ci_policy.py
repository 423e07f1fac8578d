"""CI cannot pass with part of the suite skipped for want of setup (tests/ci_policy.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

PLANTED = """
import pytest

missing = pytest.importorskip("no_such_module_for_charrnn", reason="needs no_such_module (the [x] extra)")
"""
TESTS = """
import pytest

def test_no_chromium():
    pytest.skip("no chromium on PATH: `make browser` sets it up")

def test_no_gpu():
    pytest.skip("needs a CUDA GPU")

def test_runs():
    assert True
"""


def _pytest(target, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci is not None else {})
    env["PYTHONPATH"] = str(REPO / "tests")
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "ci_policy", "-p", "no:cacheprovider", str(target)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=target.parent)


@pytest.fixture
def planted(tmp_path):
    (tmp_path / "test_module_skip.py").write_text(PLANTED)
    (tmp_path / "test_skips.py").write_text(TESTS)
    return tmp_path


def test_in_ci_a_skip_for_want_of_setup_fails_naming_what_is_missing(planted):
    done = _pytest(planted / "test_skips.py", "true")
    assert done.returncode == 1, done.stdout
    assert "1 failed" in done.stdout and "1 passed" in done.stdout and "1 skipped" in done.stdout, done.stdout
    assert "CI must run this, but it was skipped for want of setup: no chromium on PATH" in done.stdout
    assert "needs a CUDA GPU" in done.stdout  # what the machine lacks by nature stays a skip


def test_in_ci_a_module_skipped_for_a_missing_extra_stops_the_run(planted):
    done = _pytest(planted / "test_module_skip.py", "1")
    assert done.returncode != 0, done.stdout
    assert "CI must run this, but it was skipped for want of setup: needs no_such_module" in done.stdout


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_outside_ci_they_skip_saying_why(planted, ci):
    done = _pytest(planted, ci)
    assert done.returncode == 0, done.stdout
    assert "3 skipped" in done.stdout and "no chromium on PATH" in done.stdout, done.stdout
