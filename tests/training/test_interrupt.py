"""Interruptions and crashes: Ctrl-C / SIGTERM save and say how to resume, kill -9 never leaves a
broken checkpoint, a failing save keeps the previous one, a diverging run writes nothing non-finite.
That a run stopped by SIGTERM and resumed in new processes ends bit-identical to one never stopped
is test_resume.py's (ten stops in a row, each cell)."""

from __future__ import annotations

import errno
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAIN

from charrnn.checkpoint import load_checkpoint
from charrnn.config import ModelConfig, TrainConfig
from charrnn.data.tokens import CorpusBytes
from charrnn.training.loop import Trainer
from charrnn.training.run import Limits, RunRequest, train

pytestmark = pytest.mark.serial  # real processes timed against each other: run alone (Makefile)

KILLS = 20


def _lines(stream) -> queue.Queue:
    """A pipe's lines, read by a thread: the test waits on a queue with a timeout, never on the pipe."""
    q: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _wait_for(q: queue.Queue, prefix: str, seen: list[str], timeout: float = 120) -> None:
    while True:
        line = q.get(timeout=timeout)
        assert line is not None, "the process ended early:\n" + "".join(seen)
        seen.append(line)
        if line.startswith(prefix):
            return


def _drain(q: queue.Queue, seen: list[str]) -> str:
    while (line := q.get(timeout=120)) is not None:
        seen.append(line)
    return "".join(seen)


def _signal_after_first_eval(args: list[str], signum: int) -> tuple[int, str, str]:
    """Run `charrnn train *args` in a real process, send `signum` once its first progress line
    shows training is under way; (exit code, all of stderr, all of stdout)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    try:
        q = _lines(proc.stderr)
        _wait_for(q, "step ", seen)
        proc.send_signal(signum)
        err = _drain(q, seen)
        return proc.wait(timeout=120), err, proc.stdout.read()
    finally:
        proc.kill()


def _check_interrupted(cli, stderr: str, out: str) -> None:
    """The last stderr line says where the checkpoint is and how to resume; that command works."""
    assert "Traceback" not in stderr
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("stopped: "), last_line  # the user's own stop is not an error
    assert f"{out}/last.safetensors" in last_line and "resume with: charrnn train" in last_line
    _, meta = load_checkpoint(Path(out, "last.safetensors"))
    stopped = meta["step"]
    assert f"interrupted at step {stopped}" in last_line

    command = shlex.split(last_line.split("resume with: ", 1)[1])
    assert command[:2] == ["charrnn", "train"] and "--resume" in command
    resumed = cli(*command[1:], "--steps", str(stopped + 2))
    assert resumed.exit_code == 0, resumed.stderr
    assert f"resuming at step {stopped}" in resumed.stderr
    assert load_checkpoint(Path(out, "last.safetensors"))[1]["step"] == stopped + 2


def test_ctrl_c_in_a_real_process(cli, tiny_corpus):
    args = [*TINY_TRAIN, "--steps", "100000", "--eval-every", "3", "--precision", "fp32", "--out", "run"]
    code, err, out = _signal_after_first_eval([str(tiny_corpus), *args], signal.SIGINT)
    assert code == 130, err
    assert out == ""  # stdout carries products only
    _check_interrupted(cli, err, "run")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_a_step_saves_and_exits_128_plus_signal(cli, tiny_corpus, monkeypatch, signum):
    """The real handler, in this process: the signal arrives in the middle of step 5."""
    real_step = Trainer.step

    def step_with_signal(self, *window):
        if self.state.step == 4:
            os.kill(os.getpid(), signum)
        return real_step(self, *window)

    monkeypatch.setattr(Trainer, "step", step_with_signal)
    args = [*TINY_TRAIN, "--steps", "100000", "--eval-every", "3", "--precision", "fp32", "--out", "run"]
    before = signal.getsignal(signum)  # SIG_IGN for SIGINT when the suite runs in the background
    done = cli("train", tiny_corpus, *args)
    assert done.exit_code == 128 + signum
    assert "interrupted at step 5" in done.stderr  # the step under way was finished, no more
    assert done.stdout == ""
    assert signal.getsignal(signum) == before  # the handler is restored
    _check_interrupted(cli, done.stderr, "run")


SECOND_SIGNAL = """
import os, signal, sys, time
from charrnn.runtime import stop_on_signals
with stop_on_signals() as flag:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)  # the handler runs between bytecodes
    assert flag.requested and flag.signum == signal.SIGINT
    print("first: flag set", flush=True)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
    print("still running after the second Ctrl-C", flush=True)
"""


def test_second_ctrl_c_exits_at_once():
    done = subprocess.run([sys.executable, "-c", SECOND_SIGNAL], capture_output=True, text=True, timeout=120)
    assert done.stdout == "first: flag set\n", done.stderr
    assert done.returncode == 130


# The driver imports torch once, then forks a training child per round, kills it with SIGKILL at a
# random moment and reports; the test checks the run directory before letting the next round start.
# Each child resumes the run the previous one left (or starts it, when nothing was saved yet).
KILL_DRIVER = """
import json, os, random, signal, sys, time
from pathlib import Path
from charrnn.config import ModelConfig, TrainConfig
from charrnn.data.tokens import read_corpus_bytes
from charrnn.training.reporting import Reporter
from charrnn.training.run import RunHooks, RunRequest, train

import safetensors.torch, torch
torch.set_num_threads(1)  # one thread: nothing of OpenMP's pool to break in the forked children
torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # imports torch._dynamo (seconds) once, not per child
corpus_path, run_dir, kills, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
for round_ in range(kills):
    log = run_dir.parent / f"saves-{round_}.log"
    resume = (run_dir / "last.safetensors").exists()
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

            import charrnn.tensorfile as container
            real_write, mid = container.write_atomic, run_dir.parent / f"mid-{round_}"

            def pausing_write(path, payload, **kwargs):
                def halves(f):  # half the file, a pause the driver may kill in, then the rest
                    f.write(payload[: len(payload) // 2])
                    f.flush()
                    mid.touch()
                    time.sleep(0.1)
                    f.write(payload[len(payload) // 2 :])
                real_write(path, halves, **kwargs)

            container.write_atomic = pausing_write

            class Log(Reporter):
                def on_checkpoint(self, kind, path, step):
                    os.write(fd, f"{kind} {step}\\n".encode())

            model = ModelConfig(cell="lstm", embed_size=8, hidden_size=24, num_layers=1)
            cfg = TrainConfig(seq_len=16, batch_size=4, steps=10**6, eval_every=4, patience=None,
                              device="cpu", precision="fp32")
            request = RunRequest(resume=resume, force=not resume, save_every=1)
            train(read_corpus_bytes(corpus_path), model, cfg, run_dir, request, RunHooks(reporter=Log()))
        finally:
            os._exit(3)
    when, deadline = rng.random(), time.monotonic() + 60
    if when < 0.4:  # inside a save, while the checkpoint is half written
        while not (run_dir.parent / f"mid-{round_}").exists() and time.monotonic() < deadline:
            time.sleep(0.002)
    elif when < 0.85:  # mostly mid-training; sometimes during start-up or the resume's load
        while (not log.exists() or not log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.25))
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"round": round_, "log": str(log), "resumed": resume,
                      "killed": os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL}), flush=True)
    sys.stdin.readline()  # the test has checked the files
"""


def test_kill_9_never_breaks_the_checkpoint(tmp_path, tiny_corpus):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_DRIVER, str(tiny_corpus), str(run_dir), str(KILLS), "7"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    survived, mid_write, total_saves = 0, 0, 0
    disk_step = 0
    try:
        for _ in range(KILLS):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            report = json.loads(line)
            assert report["killed"], "the child ended before the kill"
            logged = Path(report["log"]).read_text().split() if Path(report["log"]).exists() else []
            saves = [(logged[i], int(logged[i + 1])) for i in range(0, len(logged), 2)]
            total_saves += len(saves)
            last_saves = [step for kind, step in saves if kind == "last"]
            # The last save this child reported complete; a save can also complete between the
            # rename and the report, so the file may be one step newer, never older, never broken.
            floor = last_saves[-1] if last_saves else disk_step
            if (run_dir / "last.safetensors").exists():
                _, meta = load_checkpoint(run_dir / "last.safetensors")  # raises if damaged
                assert floor <= meta["step"] <= floor + 1, (floor, meta["step"])
                assert meta["step"] >= disk_step
                disk_step = meta["step"]
            else:
                assert not last_saves and disk_step == 0
            if (run_dir / "best.safetensors").exists():
                load_checkpoint(run_dir / "best.safetensors")
            mid_write += bool(list(run_dir.glob(".*.tmp")))  # killed inside a save: its half-written file
            survived += 1
            proc.stdin.write("next\n")
            proc.stdin.flush()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill()
    assert survived == KILLS
    assert mid_write >= 5  # kills known to have landed inside a save, between write and rename
    assert total_saves >= 5  # and many after complete saves, in the middle of training
    assert disk_step > 0

    # The run resumes after all that, and the resume clears temporaries left by saves killed mid-write.
    corpus = CorpusBytes("tiny", str(tiny_corpus), tiny_corpus.read_bytes())
    request = RunRequest(resume=True, limits=Limits(steps=disk_step + 2))
    result = train(corpus, ModelConfig(), TrainConfig(), run_dir, request)
    assert result.steps == disk_step + 2
    assert list(run_dir.glob(".*.tmp")) == []


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("failing", ["replace", "fsync", "mkstemp"])
def test_failed_save_keeps_the_previous_checkpoint(cli, tiny_corpus, monkeypatch, failing):
    first = cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "4", "--eval-every", "4", "--out", "run")
    assert first.exit_code == 0, first.stderr
    before = {name: Path("run", name).read_bytes() for name in ("best.safetensors", "last.safetensors")}

    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(".safetensors"):
            _enospc()
        return real_replace(src, dst, *args, **kwargs)

    def unwritable(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    if failing == "replace":  # the disk filled up: the rename fails (the write could, too)
        monkeypatch.setattr(os, "replace", replace)
    elif failing == "fsync":
        monkeypatch.setattr(os, "fsync", _enospc)
    else:  # the directory became unwritable: no temporary file can be made
        monkeypatch.setattr(tempfile, "mkstemp", unwritable)
    resumed = cli("train", tiny_corpus, "--steps", "8", "--out", "run", "--resume")
    assert resumed.exit_code == 1
    assert "Traceback" not in resumed.stderr
    error_lines = [line for line in resumed.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    reason = "Permission denied" if failing == "mkstemp" else "No space left on device"
    assert "could not write checkpoint" in error_lines[0] and reason in error_lines[0]
    assert "previous checkpoint there is intact" in error_lines[0]
    for name, data in before.items():
        assert Path("run", name).read_bytes() == data
    assert list(Path("run").glob(".*.tmp")) == []


def test_non_finite_loss_stops_and_keeps_best(cli, tiny_corpus):
    # Plain SGD at an absurd rate without clipping blows up within a few steps.
    args = ["--optimizer", "sgd", "--lr", "1e12", "--grad-clip", "0", "--warmup", "0", "--precision", "fp32"]
    done = cli("train", tiny_corpus, *TINY_TRAIN, *args, "--steps", "50", "--eval-every", "2", "--out", "run")
    assert done.exit_code == 1
    assert "Traceback" not in done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "step" in error[0] and "--lr" in error[0] and "--grad-clip" in error[0]
    assert "became" in error[0]
    for name in ("best.safetensors", "last.safetensors"):
        tensors, meta = load_checkpoint(Path("run", name))
        assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model."))
    assert meta["step"] >= 2
