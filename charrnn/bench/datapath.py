"""The data path at scale: a 100 MB corpus of real text (python-stdlib repeated, its files shuffled),
a first run's and a second run's start (time, peak memory), and a --time-budget run on it: how
long it really took, start to exit, and what share of it validation took."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ModelConfig, TrainConfig
from ..training.loop import Trainer
from .results import DataPath


def generate_corpus(path: Path, megabytes: float, seed: int = 0) -> None:
    """Write `megabytes` of English-like text (a few non-ASCII characters included, as real text has)."""
    words = (
        "the and of to a in that is was he for it with as his on be at by had not are but from or have an "
        "they which one you were her all she there would their we him been has when who will more no if out "
        "so said what up its about into than them can only other new some could time these two may then do "
        "first any my now such like our over man me even most made after also did many before must through "
        "back years where much your way well down should because each just those people how too little state "
        "good very make world still own see men work long get here between both life being under never day "
        "same another know while last might us great old year off come since thou thee hath doth lord king’s "
        "café naïve — “indeed”"
    ).split()
    rng = np.random.default_rng(seed)
    target = int(megabytes * 1_000_000)
    written = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        while written < target:
            picks = rng.integers(0, len(words), 100_000)
            cuts = np.cumsum(rng.integers(4, 14, 12_000))
            cuts = cuts[cuts < len(picks)]
            ends = rng.choice(["\n", "\n", "\n", "\n", "\n\n"], len(cuts))  # paragraphs of a few lines
            block = "".join(
                " ".join(words[i] for i in picks[a:b]).capitalize() + "." + end
                for a, b, end in zip(cuts[:-1], cuts[1:], ends)
            )
            data = block.encode("utf-8")[: target - written]
            text = data.decode("utf-8", errors="ignore")  # never end inside a multi-byte character
            f.write(text)
            written += len(text.encode("utf-8"))
            if len(text) == 0:
                break


def stdlib_corpus(path: Path, megabytes: float, seed: int = 0) -> None:
    """Write about `megabytes` of python-stdlib's modules (built offline, as the ready corpus is),
    repeated in a new random order each time: real text, with the variety of many files."""
    from ..data.source_tree import FILE_SEPARATOR, read_python_stdlib

    tree = read_python_stdlib()
    files = [(c if isinstance(c, bytes) else c.encode("utf-8")).rstrip(b"\r\n") for c in tree.contents]
    separator, target, written = FILE_SEPARATOR.encode(), int(megabytes * 1_000_000), 0
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        while written < target:
            for i in rng.permutation(len(files)):
                f.write(files[i] + separator)
                written += len(files[i]) + len(separator)
                if written >= target:
                    break


def _budget_run(corpus: Path, cache: Path, run_dir: Path, seconds: float) -> dict[str, Any]:
    """`charrnn train CORPUS --time-budget` with default settings in a fresh process: its time from
    launch to exit, and the validations' share of it (from metrics.jsonl)."""
    env = {**os.environ, "CHARRNN_CACHE": str(cache)}
    command = [sys.executable, "-m", "charrnn", "train", str(corpus), "--time-budget", f"{seconds:g}s"]
    began = time.perf_counter()
    done = subprocess.run([*command, "--out", str(run_dir)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the --time-budget run failed: {tail}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    eval_seconds = sum(r["eval_seconds"] for r in rows)
    return {
        "budget_seconds": seconds,
        "budget_wall_seconds": wall,
        "budget_eval_seconds": eval_seconds,
        "budget_eval_share": eval_seconds / wall,
        "budget_steps": rows[-1]["step"],
        "budget_val_tokens": rows[0]["val_tokens"],
        "budget_whole_scored": any(r.get("val_scope") == "whole" for r in rows),
    }


def _data_child(mode: str, corpus_path: str, out_path: str, hidden: int = 512) -> None:
    """Runs in a fresh interpreter (see `bench_data`) so that peak memory is this work's alone.
    Writes its figures as JSON to `out_path`."""
    import resource

    from ..data.tokens import load_tokens, read_corpus_bytes

    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    result: dict[str, Any] = {"baseline_rss_mb": rss_mb()}
    start = time.perf_counter()
    data = load_tokens(read_corpus_bytes(Path(corpus_path)))
    result["load_seconds"] = time.perf_counter() - start
    result["cached"] = data.cached
    result["dtype"] = str(data.train.dtype)
    if mode == "first-step":
        cfg = TrainConfig(device="cpu", precision="fp32", steps=1)
        model_cfg = ModelConfig(vocab_size=data.tokenizer.vocab_size, hidden_size=hidden)
        with tempfile.TemporaryDirectory() as run_dir:
            trainer = Trainer(data, model_cfg, cfg, Path(run_dir))
            x, y = trainer.batcher.window(0)
            result["ready_seconds"] = time.perf_counter() - start
            trainer.step(x, y)
        result["first_step_seconds"] = time.perf_counter() - start
    result["peak_rss_mb"] = rss_mb()
    Path(out_path).write_text(json.dumps(result))


def _run_child(mode: str, corpus: Path, cache: Path, out: Path, hidden: int) -> dict[str, Any]:
    env = {**os.environ, "CHARRNN_CACHE": str(cache)}
    code = f"from charrnn.bench.datapath import _data_child; _data_child({mode!r}, {str(corpus)!r}, {str(out)!r}, {hidden})"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"data benchmark child failed: {tail}")
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


def bench_data(
    megabytes: float, workdir: Path | None = None, hidden: int = 512, source: str = "python-stdlib", budget: float = 0
) -> DataPath:
    """A first run on a corpus in a fresh process (encoding: time, peak RSS, ready to train), then a
    second run's start on the same corpus (the ids come memory-mapped from the cache), then, when
    `budget` > 0, a `--time-budget budget` run of `charrnn train` with default settings."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folder = Path(tmp)
        corpus = folder / f"{source}.txt"
        (stdlib_corpus if source == "python-stdlib" else generate_corpus)(corpus, megabytes)
        first = _run_child("first-step", corpus, folder / "cache", folder / "first.json", hidden)
        second = _run_child("first-step", corpus, folder / "cache", folder / "second.json", hidden)
        budget_run = _budget_run(corpus, folder / "cache", folder / "run", budget) if budget > 0 else {}
        size = corpus.stat().st_size
    return DataPath(
        corpus_mb=size / 1e6,
        source=source,
        first_run_ready_seconds=first["ready_seconds"],
        encode_seconds=first["load_seconds"],
        peak_rss_mb=first["peak_rss_mb"],
        baseline_rss_mb=first["baseline_rss_mb"],
        ids_dtype=first["dtype"],
        second_run_load_seconds=second["load_seconds"],
        second_run_ready_seconds=second["ready_seconds"],
        second_run_first_step_seconds=second["first_step_seconds"],
        cached=bool(second["cached"]),
        **budget_run,
    )
