"""One process per run directory: a second one is refused naming the holder's pid, and a holder
killed with SIGKILL leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from charrnn.errors import RunDirectoryBusy
from charrnn.runlock import LOCK, RunLock

HOLDER = """
import sys, time
from charrnn.runlock import RunLock
lock = RunLock(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def _holder(run_dir) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunDirectoryBusy, match=f"in use by another charrnn process \\(pid {os.getpid()}\\)"):
            RunLock(tmp_path)
    with RunLock(tmp_path):  # released: taken again
        pass
    assert not (tmp_path / LOCK).exists()  # the lock file goes with its holder


def test_another_process_holds_it_until_killed(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(RunDirectoryBusy, match=f"pid {proc.pid}\\)"):
            RunLock(tmp_path)
        os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up: the kernel drops the lock
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert (tmp_path / LOCK).exists()  # the dead holder's file is still there, and harmless
    with RunLock(tmp_path) as lock:
        assert (tmp_path / LOCK).read_text() == f"{os.getpid()}\n"
        lock.release()
        lock.release()  # idempotent
