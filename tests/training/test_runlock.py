"""One process per run directory: a second one is refused naming the holder's pid, and a holder
killed with SIGKILL leaves no stale lock."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_TRAIN, one_error_line

from charrnn.checkpoint import load_checkpoint
from charrnn.errors import RunDirectoryBusy
from charrnn.training.runlock import LOCK, RunLock

HOLDER = """
import sys, time
from charrnn.training.runlock import RunLock
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


def _refused(result, pid: int) -> None:
    line = one_error_line(result)
    assert f"in use by another charrnn process (pid {pid})" in line, line


def test_train_force_and_resume_never_touch_a_held_run(cli, tiny_corpus, tiny_run):
    shutil.copytree(tiny_run, "run")
    in_flight = Path("run/.last.safetensors.abc123.tmp")  # the holder's save, half written
    in_flight.write_bytes(b"half")
    before = {p.name: p.read_bytes() for p in Path("run").iterdir()}
    proc = _holder("run")
    try:
        for extra in (["--force"], ["--resume"], []):
            _refused(cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "4", "--out", "run", *extra), proc.pid)
        assert {p.name: p.read_bytes() for p in Path("run").iterdir() if p.name != LOCK} == before
    finally:
        proc.kill()
        proc.wait(timeout=30)
    done = cli("train", tiny_corpus, "--out", "run", "--resume", "--steps", "4")  # the holder is gone
    assert done.exit_code == 0, done.stderr
    assert not in_flight.exists()  # now a stale temporary, removed by the run that holds the directory


def test_resume_of_a_run_still_training_before_its_first_save_names_the_holder(cli, tiny_corpus):
    Path("young").mkdir()  # a run that started but has saved nothing yet
    proc = _holder("young")
    try:
        _refused(cli("train", tiny_corpus, "--out", "young", "--resume"), proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    alone = cli("train", tiny_corpus, "--out", "young", "--resume")  # nobody holds it: nothing to resume
    assert "no last.safetensors in young to resume from" in one_error_line(alone)
    assert not Path("young", LOCK).exists()


def test_a_second_training_process_is_refused_while_the_first_trains(cli, tiny_corpus):
    args = [*TINY_TRAIN, "--steps", "100000", "--eval-every", "5", "--patience", "100000"]
    args += ["--device", "cpu", "--out", "run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "train", str(tiny_corpus), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stderr.readline()  # its first line: the run directory is held from the start
        second = subprocess.run(
            [sys.executable, "-m", "charrnn", "train", str(tiny_corpus), *args, "--force"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode != 0 and "Traceback" not in second.stderr
        assert second.stderr.strip().splitlines() == [
            f"error: run directory run is in use by another charrnn process (pid {first.pid}); "
            "wait for it to finish, stop it, or choose another --out"
        ]
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 128 + signal.SIGTERM, first.stderr.read()
    finally:
        first.kill()
    assert load_checkpoint(Path("run/last.safetensors"))[1]["step"] >= 1  # the first run's files are whole
