"""Resume and fine-tune: a stopped-and-resumed run is bit-identical to one that never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_TEXT, TINY_TRAIN, metrics_of, needs_native_bf16

from charrnn.checkpoint import load_checkpoint
from charrnn.config import ModelConfig, TrainConfig
from charrnn.data.tokens import CorpusBytes
from charrnn.errors import Interrupted
from charrnn.runtime import StopFlag
from charrnn.training.reporting import Reporter
from charrnn.training.run import Limits, RunHooks, RunRequest, train

TOTAL, EVAL_EVERY = 16, 5


class Recorder(Reporter):
    """Collects every step's loss and every evaluation; raises the stop flag after step `stop_at`."""

    def __init__(self, stop: StopFlag | None = None, stop_at: int | None = None):
        self.losses: list[float] = []
        self.val_losses: list[float] = []
        self.stop, self.stop_at = stop, stop_at

    def on_step(self, report) -> None:
        self.losses.append(report.loss)
        if self.stop is not None and report.step == self.stop_at:
            self.stop.signum = 2  # what the SIGINT handler does

    def on_eval(self, report) -> None:
        self.val_losses.append(report.val_loss)


def _configs(cell: str, precision: str) -> tuple[ModelConfig, TrainConfig]:
    # Two layers with dropout: the RNG state matters, and so does the carried state of every layer.
    model = ModelConfig(cell=cell, embed_size=8, hidden_size=16, num_layers=2, dropout=0.1)
    cfg = TrainConfig(
        seq_len=8,
        batch_size=4,
        chunk_windows=4,  # the streams jump (state reset) at steps 4, 8, 12: before and after each resume
        steps=TOTAL,
        eval_every=EVAL_EVERY,
        warmup_steps=3,
        device="cpu",
        precision=precision,
        patience=None,
    )
    return model, cfg


@pytest.mark.parametrize(
    "cell, precision, stop_at",
    [
        ("lstm", "fp32", 7),
        ("gru", "fp32", 7),
        ("rnn", "fp32", 7),
        ("rnn-relu", "fp32", 7),
        pytest.param("lstm", "bf16", 7, marks=needs_native_bf16),
        # One of these two stops right after an evaluation wrote its checkpoints (whether the flag
        # raised during step N's report stops the run at N or N + 1 is the loop's business).
        ("gru", "fp32", EVAL_EVERY * 2 - 1),
        ("gru", "fp32", EVAL_EVERY * 2),
    ],
)
def test_stop_and_resume_is_bit_identical(tmp_path, cell, precision, stop_at):
    corpus = CorpusBytes("tiny", "tiny", TINY_TEXT.encode())
    model_cfg, train_cfg = _configs(cell, precision)

    straight = Recorder()
    train(corpus, model_cfg, train_cfg, tmp_path / "straight", hooks=RunHooks(reporter=straight))

    stop = StopFlag()
    first = Recorder(stop, stop_at)
    with pytest.raises(Interrupted) as info:
        train(corpus, model_cfg, train_cfg, tmp_path / "split", hooks=RunHooks(reporter=first, stop=stop))
    assert info.value.exit_code == 130
    _, meta = load_checkpoint(tmp_path / "split" / "last.safetensors")
    stopped_at = meta["step"]
    assert stopped_at in (stop_at, stop_at + 1) and f"step {stopped_at}" in str(info.value)
    second = Recorder()
    # The settings given here are ignored on resume (they come from the checkpoint), except limits.
    request = RunRequest(resume=True, limits=Limits(steps=TOTAL))
    result = train(corpus, ModelConfig(), TrainConfig(), tmp_path / "split", request, RunHooks(reporter=second))

    assert result.steps == TOTAL
    assert len(first.losses) == stopped_at
    assert first.losses + second.losses == straight.losses  # exact float equality, every step
    assert first.val_losses + second.val_losses == straight.val_losses
    a, meta_a = load_checkpoint(tmp_path / "straight" / "last.safetensors")
    b, meta_b = load_checkpoint(tmp_path / "split" / "last.safetensors")
    assert a.keys() == b.keys()
    for name in a:  # weights, optimizer moments, RNG state, carried hidden state
        assert torch.equal(a[name], b[name]), name
    assert meta_a["step"] == meta_b["step"] == TOTAL
    assert meta_a["optimizer"] == meta_b["optimizer"]
    best_a, _ = load_checkpoint(tmp_path / "straight" / "best.safetensors")
    best_b, _ = load_checkpoint(tmp_path / "split" / "best.safetensors")
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)


def test_cli_resume_counts_steps_in_total(cli, tiny_corpus):
    out = Path("run")
    first = cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "20", "--eval-every", "10", "--out", out)
    assert first.exit_code == 0, first.stderr
    assert load_checkpoint(out / "last.safetensors")[1]["step"] == 20

    again = cli("train", tiny_corpus, "--steps", "40", "--out", out)  # no --resume: refused, nothing touched
    assert again.exit_code != 0 and "--resume" in again.stderr

    resumed = cli("train", tiny_corpus, "--steps", "40", "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert "resuming at step 20" in resumed.stderr
    assert "after 40 steps" in resumed.stderr
    assert load_checkpoint(out / "last.safetensors")[1]["step"] == 40
    steps = [line for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [int(s.split('"step": ')[1].split(",")[0]) for s in steps] == [10, 20, 30, 40]

    before = (out / "last.safetensors").read_bytes()
    finished = cli("train", tiny_corpus, "--out", out, "--resume")  # its own limit, --steps 40, is reached
    assert finished.exit_code == 2 and "is at step 40 and has reached --steps 40" in finished.stderr
    assert (out / "last.safetensors").read_bytes() == before

    other = Path("other.txt")
    other.write_text(TINY_TEXT.replace("a", "A"), encoding="utf-8")
    wrong = cli("train", other, "--steps", "60", "--out", out, "--resume")
    assert wrong.exit_code != 0 and "different corpus" in wrong.stderr


def test_init_from_extends_the_vocabulary(cli, tiny_corpus):
    base = cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "4", "--eval-every", "4", "--out", "base")
    assert base.exit_code == 0, base.stderr
    old, old_meta = load_checkpoint(Path("base/best.safetensors"))
    old_chars = old_meta["tokenizer"]["chars"]

    new_corpus = Path("new.txt")
    new_corpus.write_text(TINY_TEXT + "Zqx! ¿Qué? ZZZ\n" * 10, encoding="utf-8")
    added = sorted(set("Zqx!¿QuéZ") - set(old_chars))
    # An lr so small that one step leaves the weights bit-for-bit as loaded: the copy is observable.
    tuned = cli("train", new_corpus, "--init-from", "base", "--steps", "1", "--lr", "1e-30", "--out", "tuned")
    assert tuned.exit_code == 0, tuned.stderr
    assert f"vocabulary extended by {len(added)} new characters" in tuned.stderr

    new, new_meta = load_checkpoint(Path("tuned/last.safetensors"))
    new_chars = new_meta["tokenizer"]["chars"]
    assert new_chars == old_chars + "".join(added)  # old ids kept, new ones appended
    assert new_meta["model"]["hidden_size"] == old_meta["model"]["hidden_size"] == 32  # the old architecture
    n_old = len(old_chars)
    for name in ("model.embedding.weight", "model.head.weight", "model.head.bias"):
        assert new[name].shape[0] == n_old + len(added)
        assert torch.equal(new[name][:n_old], old[name])
    assert torch.equal(new["model.rnn.weight_hh_l0"], old["model.rnn.weight_hh_l0"])

    same = cli("train", tiny_corpus, "--init-from", "base/best.safetensors", "--steps", "1", "--out", "same")
    assert same.exit_code == 0 and "uses no new characters" in same.stderr

    both = cli("train", tiny_corpus, "--init-from", "base", "--resume", "--out", "base")
    assert both.exit_code != 0 and both.stderr.count("\n") == 1


# Interruptions in a row. One driver per cell imports torch once (seconds on a small machine) and
# forks each `charrnn train` process of that cell from this state, in which nothing has trained;
# the chain's first and last processes are exec'd, brand-new interpreters. A child's stderr is a
# pipe the driver reads: once a progress line (the first step's, then every evaluation's) shows the
# run at or past a stop step, a drawn pause later it sends SIGTERM; the process finishes its step,
# saves and exits, and the driver runs the resume command that process printed, in a new process.
# Where exactly a run stops is a race between the signal and the steps (a few steps at most; the
# last stop is drawn 80 steps before the end); the result must not depend on it. The driver
# reports, the test judges.
CHAIN_DRIVER = r"""
import json, os, random, re, shlex, signal, sys, time, traceback
import torch

torch.set_num_threads(1)  # and so in every child: one thread, the same float reductions everywhere
torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # imports torch._dynamo once, not per child
import charrnn.cli.train, charrnn.data.corpora, charrnn.training.run, charrnn.training.validation  # noqa: what train imports late
from charrnn.cli import app

first, straight, seed, stops, last_target = json.loads(sys.argv[1])
PROGRESS_LINE = re.compile(r"step (\d+) \| epoch ")
STOPPED = re.compile(r"stopped: interrupted at step (\d+); .*; resume with: (.*)$")


def start(args, fresh=False):
    # `charrnn *args` in a child process: (pid, its stderr as a pipe); stdout goes to a file
    r, w = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid:
        os.close(w)
        return pid, os.fdopen(r, encoding="utf-8")
    code = 3
    try:
        os.close(r)
        os.dup2(w, 2)
        os.dup2(os.open("children-stdout.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND), 1)
        if fresh:
            os.execv(sys.executable, [sys.executable, "-m", "charrnn", *args])
        app(args=args, prog_name="charrnn")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def finish(pid, pipe, seen):
    seen += pipe.readlines()
    pipe.close()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def run_to_end(args, fresh=False):
    pid, pipe = start(args, fresh)
    seen = []
    return {"args": args, "code": finish(pid, pipe, seen), "stderr": "".join(seen)}


def stop_after(args, target, resumed_at, delay):
    # SIGTERM `delay` seconds after the run reports a step at or past `target` (and past where it resumed)
    pid, pipe = start(args, fresh=not resumed_at)
    seen, signalled = [], None
    for line in pipe:
        seen.append(line)
        found = PROGRESS_LINE.match(line)
        if found and int(found.group(1)) >= max(target, resumed_at + 1):
            signalled = int(found.group(1))
            time.sleep(delay)
            os.kill(pid, signal.SIGTERM)
            break
    code = finish(pid, pipe, seen)
    return {"args": args, "target": target, "signalled_after": signalled, "code": code, "stderr": "".join(seen)}


report = {"straight": run_to_end(straight), "chain": []}
args, resumed_at = first, 0
draw = random.Random(seed)
for target in sorted(draw.sample(range(1, last_target + 1), stops)):
    # A pause of up to a few steps moves the stop off the step after the evaluation, now and then onto the next
    entry = stop_after(args, target, resumed_at, draw.uniform(0.0, 0.02))
    report["chain"].append(entry)
    found = STOPPED.match((entry["stderr"].strip().splitlines() or [""])[-1])
    if entry["code"] != 128 + signal.SIGTERM or not found:
        break  # the test says what went wrong
    resumed_at = entry["stopped_at"] = int(found.group(1))
    entry["resume_command"] = shlex.split(found.group(2))
    args = entry["resume_command"][1:]  # the command less "charrnn"
else:
    report["final"] = run_to_end(args, fresh=True)
print(json.dumps(report))
"""

CHAIN_STEPS, CHAIN_EVAL_EVERY, CHAIN_STOPS, CHAIN_SEED = 200, 4, 10, 26
CELLS = ("lstm", "gru", "rnn")
RUNS = ("straight", "run")


@pytest.mark.serial  # real processes and signals, timed against each other: run alone (Makefile)
def test_ten_sigterms_in_a_row_each_resumed_in_a_new_process_is_bit_identical(tiny_corpus):
    """A run stopped by SIGTERM at ten random steps, each time resumed by a new process, ends with
    every tensor (weights, optimiser moments, generator, carried state) equal to a run never
    stopped, for each cell. The three cells' chains run at once."""
    settings = [str(tiny_corpus), "--embed", "8", "--hidden", "16", "--layers", "2", "--dropout", "0.1"]
    settings += ["--seq-len", "16", "--batch-size", "4", "--steps", str(CHAIN_STEPS), "--warmup", "5"]
    settings += ["--eval-every", str(CHAIN_EVAL_EVERY), "--patience", "1000", "--device", "cpu", "--precision", "fp32"]
    drivers = {}
    for cell in CELLS:  # 200 steps of 4 x 16 tokens: the streams wrap around an epoch of ~98 windows twice
        folder = Path(cell).resolve()
        folder.mkdir()
        args = ["train", *settings, "--model", cell]
        # The last stop is drawn 80 steps before the end: the run is still training when the signal lands.
        plan = [
            [*args, "--out", "run"],
            [*args, "--out", "straight"],
            f"{CHAIN_SEED}:{cell}",
            CHAIN_STOPS,
            CHAIN_STEPS - 80,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "CHARRNN_CACHE": str(folder / "cache")}
        drivers[cell] = subprocess.Popen(
            [sys.executable, "-c", CHAIN_DRIVER, json.dumps(plan)],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its children too are ended if it overruns
        )
    reports, deadline = {}, time.monotonic() + 300
    try:
        for cell, driver in drivers.items():
            out, err = driver.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert driver.returncode == 0, err
            reports[cell] = json.loads(out)
    finally:
        for driver in drivers.values():
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
    for cell in CELLS:
        _check_chain(cell, Path(cell).resolve(), reports[cell])


def _check_chain(cell: str, folder: Path, report: dict) -> None:
    """The chain of `cell` in `folder` stopped and resumed as planned and ended where the straight run did."""
    chain = report["chain"]
    asked, made = [e["target"] for e in chain], [e.get("stopped_at") for e in chain]
    context = f"{cell}, stop steps drawn with seed {CHAIN_SEED}:{cell}: asked at {asked}, stopped at {made}"
    resumed_at = 0
    for entry in chain:
        assert entry["code"] == 128 + signal.SIGTERM and "stopped_at" in entry, (context, entry["stderr"])
        assert "Traceback" not in entry["stderr"]
        if resumed_at:
            assert f"resuming at step {resumed_at}:" in entry["stderr"], (context, entry["stderr"])
        # The signal came after the run reported a step: the step then under way is finished too.
        assert resumed_at < entry["signalled_after"] < entry["stopped_at"] < CHAIN_STEPS, context
        command = entry["resume_command"]
        assert command[:2] == ["charrnn", "train"] and command[-3:] == ["--out", "run", "--resume"], command
        resumed_at = entry["stopped_at"]
    assert len(chain) == CHAIN_STOPS, context
    for whole in (report["straight"], report["final"]):  # the straight run; the chain's last process
        assert whole["code"] == 0 and "Traceback" not in whole["stderr"], (context, whole["stderr"])
    final = report["final"]
    assert f"resuming at step {resumed_at}:" in final["stderr"], (context, final["stderr"])
    assert f"done (reached --steps {CHAIN_STEPS})" in final["stderr"], final["stderr"]
    assert (folder / "children-stdout.txt").read_text() == ""  # stdout carries products only

    for name in ("last.safetensors", "best.safetensors"):
        a, meta_a = load_checkpoint(folder / "straight" / name)
        b, meta_b = load_checkpoint(folder / "run" / name)
        assert sorted(a) == sorted(b), (context, name)
        for key in a:  # weights, optimiser moments, generator state, every layer's carried state
            assert torch.equal(a[key], b[key]), (context, name, key)
        same = ("step", "optimizer", "train_loss_sum", "train_loss_count", "best_val_loss", "bad_evals", "val_loss")
        assert {k: meta_a.get(k) for k in same} == {k: meta_b.get(k) for k in same}, (context, name)
        if name == "last.safetensors":  # what a resume needs was compared too
            assert meta_a["step"] == CHAIN_STEPS and "rng.torch" in a and "optim.0.exp_avg_sq" in a
            carried = {k for k in a if k.startswith("hidden.")}
            assert carried == ({"hidden.0", "hidden.1"} if cell == "lstm" else {"hidden.0"})  # (h, c) or h
    # Every evaluation on the way, too: the same losses at the same steps.
    curves = [[(r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in metrics_of(folder / run)] for run in RUNS]
    assert curves[0] == curves[1], context
