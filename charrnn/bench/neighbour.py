"""Training beside a busy neighbour: the same run alone and next to a program that keeps every
core busy with matrix products (what a laptop's other work looks like to charrnn).

Two programs that each start one thread per core spin against each other for the same cores
(oversubscription): every parallel op waits for a thread that is not running. charrnn measures
its thread count and re-measures when its steps slow down; this row says what that keeps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..config import ModelConfig, TrainConfig
from ..training.loop import Trainer
from .results import BenchPlan, BusyNeighbour
from .training import VOCAB, _stream_tokens

# The neighbour: a matmul loop on every core, as another PyTorch program would run it.
NEIGHBOUR = (
    "import sys, torch\n"
    "torch.set_num_threads(int(sys.argv[1]))\n"
    "a = torch.randn(512, 512)\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    a = torch.tanh(a @ a)\n"
)


def start_neighbour(threads: int) -> subprocess.Popen[str]:
    """A process spinning `threads` threads on matrix products until it is killed."""
    # The neighbour keeps OpenMP's default (spinning) wait, as another PyTorch program would.
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    process = subprocess.Popen(
        [sys.executable, "-c", NEIGHBOUR, str(threads)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None
    process.stdout.readline()  # "ready": torch imported, the loop starts now
    return process


def _steps_in(plan: BenchPlan, seconds: float, run_dir: Path) -> int:
    """Training steps charrnn's own loop (Trainer.run, automatic threads) makes in `seconds`."""
    data = _stream_tokens(plan.batch_size, plan.seq_len, 256)
    # No dropout, as `charrnn train --time-budget 60s` trains (a run that reads its text a few
    # times at most trains without): that also lets the step be split by rows (training.split).
    model_cfg = ModelConfig(vocab_size=VOCAB, hidden_size=plan.neighbour_hidden, num_layers=plan.layers, dropout=0.0)
    train_cfg = TrainConfig(
        seq_len=plan.seq_len, batch_size=plan.batch_size, precision="fp32", time_budget=seconds, eval_every=10**6
    )
    run_dir.mkdir(parents=True)
    trainer = Trainer(data, model_cfg, train_cfg, run_dir)
    trainer.run()
    return trainer.state.step


def bench_busy_neighbour(plan: BenchPlan, seconds: float, threads: int) -> BusyNeighbour:
    """Steps in `seconds` alone, then beside a `threads`-thread matmul loop; the share kept."""
    with tempfile.TemporaryDirectory() as root:
        quiet = _steps_in(plan, seconds, Path(root) / "quiet")
        neighbour = start_neighbour(threads)
        try:
            time.sleep(0.5)  # the neighbour's threads are up and spinning
            busy = _steps_in(plan, seconds, Path(root) / "busy")
        finally:
            neighbour.kill()
            neighbour.wait()
    return BusyNeighbour(seconds, threads, quiet, busy, busy / max(quiet, 1))
