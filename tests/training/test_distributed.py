"""Data-parallel training under torchrun: two CPU processes (gloo, loopback), a tiny model.

The two-process run is launched once per module (each launch costs seconds of interpreter
start-up) and several tests read it. Equivalence is checked against a single process with
the whole batch: DDP averages the ranks' gradients, which is the gradient of the global batch.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TEXT

from charrnn.checkpoint import load_checkpoint
from charrnn.training.distributed import DistContext, _first_difference

pytestmark = pytest.mark.serial  # real processes timed against each other: run alone (Makefile)

# Per-rank batch 2; the single-process twin uses 4. fp32: bf16 would hide real differences.
FLAGS = ["--hidden", "32", "--embed", "16", "--layers", "1", "--seq-len", "16", "--precision", "fp32", "--dropout", "0"]
FLAGS += ["--lr", "0.01", "--warmup", "0", "--seed", "3", "--eval-every", "3", "--device", "cpu"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """In-process runs on one thread, like each torchrun worker: a tiny model gains nothing from
    more, and on a busy machine its threads wait for each other (several times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(CHARRNN_CACHE=str(cache), OMP_NUM_THREADS="1", CHARRNN_DIST_TIMEOUT="30", PYTHONUNBUFFERED="1")
    return env


def torchrun(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "charrnn", "train", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(cwd / ".cache"), capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """A 6-step run by 2 processes x 2 streams: (work dir, run dir, finished process)."""
    work = tmp_path_factory.mktemp("ddp")
    (work / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    done = torchrun(work, "tiny.txt", *FLAGS, "--batch-size", "2", "--steps", "6", "--out", "run")
    assert done.returncode == 0, done.stderr[-3000:]
    return work, work / "run", done


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(path)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = model_weights(a), model_weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5, msg=f"{name} differs")


def single(corpus: Path, out: str, steps: int, resume: bool = False) -> Path:
    """FLAGS in one process with the whole batch (4 streams), through the library: no CLI start-up."""
    from charrnn.config import ModelConfig, TrainConfig
    from charrnn.data.tokens import read_corpus_bytes
    from charrnn.training.run import Limits, RunRequest, train

    model = ModelConfig(embed_size=16, hidden_size=32, num_layers=1, dropout=0.0)
    cfg = TrainConfig(seq_len=16, batch_size=4, lr=0.01, warmup_steps=0, seed=3, eval_every=3, steps=steps)
    cfg = replace(cfg, device="cpu", precision="fp32")
    train(read_corpus_bytes(corpus), model, cfg, Path(out), RunRequest(resume=resume, limits=Limits(steps=steps)))
    return Path(out) / "last.safetensors"


@pytest.fixture(scope="module")
def twin(ddp_run, tmp_path_factory):
    """One process with the whole batch: its last checkpoint after 6 steps, and after resuming
    to 12 (the learning-rate schedule follows --steps, so the DDP run resumed the same way is
    compared with this, not with 12 uninterrupted steps)."""
    work, _, _ = ddp_run
    out = tmp_path_factory.mktemp("twin")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARRNN_CACHE", str(out / ".cache"))
        shutil.copy(single(work / "tiny.txt", str(out / "run"), 6), out / "step6.safetensors")
        shutil.copy(out / "run" / "metrics.jsonl", out / "metrics6.jsonl")
        shutil.copy(single(work / "tiny.txt", str(out / "run"), 12, resume=True), out / "step12.safetensors")
    return {6: out / "step6.safetensors", 12: out / "step12.safetensors", "metrics": out / "metrics6.jsonl"}


def test_two_processes_write_one_ordinary_checkpoint_that_samples(ddp_run, cli):
    _, run, done = ddp_run
    assert sorted(p.name for p in run.glob("*.safetensors")) == ["best.safetensors", "last.safetensors"]
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no leftover temporary files
    assert done.stderr.count("done (reached --steps 6)") == 1  # only rank 0 reports
    assert "batch 2 x 2 processes" in done.stderr
    assert [line.count('"step"') for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 1]
    tensors, meta = load_checkpoint(run / "last.safetensors")
    assert meta["step"] == 6 and meta["world_size"] == 2
    assert not any("module." in name for name in tensors)  # the model, not its DDP wrapper
    assert tensors["hidden.0"].shape[1] == 4  # both ranks' streams
    result = cli("sample", run, "--length", "40", "--seed", "1")
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout) >= 40


def test_two_processes_reach_the_weights_of_one_process_with_the_whole_batch(ddp_run, twin):
    assert_same_weights(ddp_run[1] / "last.safetensors", twin[6])
    # The reported losses are those of the global batch and of the whole validation split
    # (which the ranks cut into slightly different streams: close, not equal).
    ours = [json.loads(line) for line in (ddp_run[1] / "metrics.jsonl").open()]
    theirs = [json.loads(line) for line in twin["metrics"].open()]
    assert [r["step"] for r in ours] == [r["step"] for r in theirs] == [3, 6]
    for a, b in zip(ours, theirs):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)


def test_resume_under_ddp_continues_the_steps_and_the_loss_curve(ddp_run, twin):
    work, run, _ = ddp_run
    shutil.copytree(run, work / "resumed")
    done = torchrun(work, "tiny.txt", "--out", "resumed", "--resume", "--steps", "12")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming at step 6" in done.stderr
    steps = [line.split('"step": ')[1].split(",")[0] for line in (work / "resumed" / "metrics.jsonl").open()]
    assert steps == ["3", "6", "9", "12"]
    # Hidden state and data cursor kept: the same weights as one process resumed the same way.
    assert_same_weights(work / "resumed" / "last.safetensors", twin[12])


def test_a_ddp_run_resumes_in_one_process_with_the_same_global_batch(ddp_run, twin, cli):
    work, run, _ = ddp_run
    shutil.copytree(run, "from-ddp")
    result = cli("train", work / "tiny.txt", "--out", "from-ddp", "--resume", "--steps", "12")
    assert result.exit_code == 0, result.stderr
    assert "1 x 4 streams" in result.stderr  # the note: 2 x 2 became 1 x 4, hidden state kept
    assert_same_weights(Path("from-ddp") / "last.safetensors", twin[12])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_launched_with_different_options_fail_with_one_line(tiny_corpus):
    port = str(_free_port())
    procs = []
    for rank, lr in ((0, "0.01"), (1, "0.02")):
        env = _env(tiny_corpus.parent / ".cache")
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        cmd = [sys.executable, "-m", "charrnn", "train", tiny_corpus, *FLAGS, "--lr", lr, "--steps", "2", "--out", "r"]
        procs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert "Traceback" not in err
        assert "rank 1 has train.lr=0.02 but rank 0 has 0.01" in err.strip().splitlines()[-1]
    assert not Path("r", "last.safetensors").exists()


def test_sigterm_to_one_rank_stops_both_at_the_same_step_with_one_checkpoint(tiny_corpus):
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = _env(tiny_corpus.parent / ".cache")
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        cmd = [sys.executable, "-m", "charrnn", "train", tiny_corpus, *FLAGS, "--batch-size", "2", "--out", "r"]
        procs.append(subprocess.Popen([*cmd, "--steps", "100000"], env=env, stderr=subprocess.PIPE, text=True))
    for line in procs[0].stderr:  # rank 0 is training once it names its device
        if line.startswith("device "):
            break
    time.sleep(0.5)
    procs[1].send_signal(signal.SIGTERM)  # rank 1 only: rank 0 must learn it at the next step
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [128 + signal.SIGTERM] * 2, errors
    assert errors[1].strip() == ""  # rank 1 stays quiet; rank 0 says it once
    said = [line for line in errors[0].splitlines() if line.startswith("stopped:")]
    assert len(said) == 1 and "resume with: torchrun" in said[0], errors[0]
    step = int(said[0].split("interrupted at step ")[1].split(";")[0])
    _, meta = load_checkpoint(Path("r", "last.safetensors"))
    assert meta["step"] == step > 0 and meta["world_size"] == 2
    assert not [p for p in Path("r").iterdir() if p.name.startswith(".")]


def test_a_rank_that_never_comes_ends_the_run_with_one_line_not_a_hang(tiny_corpus):
    env = _env(tiny_corpus.parent / ".cache")
    env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    env["CHARRNN_DIST_TIMEOUT"] = "1"
    cmd = [sys.executable, "-m", "charrnn", "train", tiny_corpus, *FLAGS, "--steps", "2", "--out", "r"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        next(line for line in done.stderr.splitlines() if line.startswith("error: rank 0: the 2 processes"))
    ]
    assert "CHARRNN_DIST_TIMEOUT=1s" in done.stderr


def test_more_processes_than_the_corpus_has_streams_for_is_refused(tiny_corpus):
    from charrnn.config import ModelConfig, TrainConfig
    from charrnn.data.tokens import load_tokens, read_corpus_bytes
    from charrnn.errors import CorpusError
    from charrnn.training.loop import Trainer

    # A world size without a process group: the check must come before any collective.
    data = load_tokens(read_corpus_bytes(tiny_corpus))
    many = DistContext(rank=0, world_size=1000)
    with pytest.raises(CorpusError, match="fewer than 1000 processes"):
        Trainer(data, ModelConfig(hidden_size=8), TrainConfig(seq_len=16, batch_size=4, steps=1), Path("r"), dist=many)


def test_first_difference_names_the_key():
    assert _first_difference({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == ("a.c", 2, 3)
    assert _first_difference({"a": 1}, {"a": 1}) is None


@pytest.mark.parametrize("n", [1, 5, 100, 1003])
def test_validation_is_split_across_ranks_and_every_target_is_scored_once(n):
    from charrnn.data.streams import validation_windows

    ids = np.arange(1, n + 1)  # distinct ids: each target says which position it is
    for world in (1, 2, 3):
        targets = []
        for rank in range(world):
            for _, y, _ in validation_windows(ids, 0, 8, 16, rank, world):
                targets += [t for t in y.reshape(-1).tolist() if t >= 0]
        assert sorted(targets) == sorted(ids.tolist()), world


def test_more_processes_on_a_node_than_gpus_or_mps_are_refused_before_joining(monkeypatch):
    from charrnn.errors import ConfigError

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"process 1 of this node has no GPU of its own \(1 visible\)"):
        DistContext.from_env("auto")
    with pytest.raises(ConfigError, match="--device mps"):
        DistContext.from_env("mps")
