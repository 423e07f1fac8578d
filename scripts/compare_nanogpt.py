#!/usr/bin/env python3
"""charrnn against nanoGPT's README CPU recipe at equal wall time, both scored on the whole validation split.

    git clone https://github.com/karpathy/nanoGPT /tmp/nanogpt
    python scripts/compare_nanogpt.py --corpus tinyshakespeare --nanogpt /tmp/nanogpt --json cmp.json

1. The corpus is read and split as `charrnn train CORPUS` reads and splits it (a ready corpus's name or
   a path; `--val-frac`/`--val-split` at charrnn's defaults). nanoGPT's data directory is written from
   that same split: train.bin and val.bin (uint16 character ids) and meta.pkl (vocab_size, itos, stoi),
   as nanoGPT's data/shakespeare_char/prepare.py writes them.
2. nanoGPT's train.py runs from the checkout given with --nanogpt (never copied here), with the README's
   CPU recipe: config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
   --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
   --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0, plus --always_save_checkpoint=True so that
   the weights after the last iteration are what is scored. Its wall time (process start to exit) is
   charrnn's budget. Its seed is the one train.py fixes (1337); --seed only reaches charrnn.
3. nanoGPT's checkpoint (loaded with torch.load(weights_only=True)) is scored on every validation
   character in sliding windows of block_size: each window scores its last --stride characters, so each
   character is scored once, with block_size - stride + 1 to block_size characters of context (stride
   block_size/2 by default). The first ones are predicted from the end of the training text, as charrnn
   predicts them.
4. `charrnn train CORPUS --time-budget <nanoGPT's wall>` with no other flag (but --out, and --seed when
   given) trains into the work directory; its best checkpoint is scored as `charrnn eval RUN CORPUS --val`
   scores it, after checking that its settings hold out exactly the text nanoGPT was scored on.
Both are scored in fp32. The table goes to stdout (progress to stderr), and to --json FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import pickle
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.bench.timing import cpu_flags
from charrnn.config import TrainConfig
from charrnn.data.corpora import resolve_corpus
from charrnn.data.tokens import describe_split, split_corpus
from charrnn.errors import CharRNNError
from charrnn.probes.cache import cpu_model

RECIPE = [
    "config/train_shakespeare_char.py",
    "--device=cpu",
    "--compile=False",
    "--eval_iters=20",
    "--log_interval=1",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--dropout=0.0",
]
EVAL_INTERVAL = 250  # config/train_shakespeare_char.py's: a checkpoint is written only at an evaluation
LN2 = math.log(2.0)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_nanogpt_data(train: str, val: str, folder: Path) -> dict[str, Any]:
    """train.bin, val.bin and meta.pkl from charrnn's split, as nanoGPT's shakespeare_char/prepare.py
    writes them (its vocabulary: the sorted characters of the text)."""
    chars = sorted(set(train) | set(val))
    if len(chars) > 65535:
        raise SystemExit(f"the corpus has {len(chars):,} distinct characters: nanoGPT's uint16 ids hold 65,535")
    codes = np.array([ord(c) for c in chars], dtype=np.uint32)

    def encode(text: str) -> np.ndarray:  # every character's index in `chars`, without a Python loop
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        return np.searchsorted(codes, points).astype(np.uint16)

    folder.mkdir(parents=True, exist_ok=True)
    train_ids, val_ids = encode(train), encode(val)
    train_ids.tofile(folder / "train.bin")
    val_ids.tofile(folder / "val.bin")
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": {c: i for i, c in enumerate(chars)}}
    with open(folder / "meta.pkl", "wb") as f:  # written for train.py to read; this script never unpickles
        pickle.dump(meta, f)
    return {"vocab_size": len(chars), "train_ids": train_ids, "val_ids": val_ids}


def run_nanogpt(checkout: Path, data_dir: Path, out_dir: Path, max_iters: int, log_path: Path) -> float:
    """train.py with the README CPU recipe; its wall seconds, process start to exit. Its output goes
    to `log_path`; its evaluations are echoed to stderr."""
    interval = EVAL_INTERVAL if max_iters % EVAL_INTERVAL == 0 else max_iters  # so the last weights are saved
    cmd = [sys.executable, "train.py", *RECIPE, f"--max_iters={max_iters}", f"--lr_decay_iters={max_iters}"]
    cmd += [f"--eval_interval={interval}", "--always_save_checkpoint=True", f"--dataset={data_dir}"]
    cmd += [f"--out_dir={out_dir}"]
    log(f"nanoGPT: {' '.join(cmd)}  (in {checkout}; log: {log_path})")
    started = time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=checkout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if line.startswith(("step ", "saving")):
                log(f"  nanoGPT {line.rstrip()}")
        code = proc.wait()
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"nanoGPT's train.py failed (exit {code}); see {log_path}")
    return wall


def nanogpt_model(checkout: Path) -> ModuleType:
    """nanoGPT's model.py, imported from the checkout under a name of its own."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", checkout / "model.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {checkout / 'model.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_nanogpt(checkout: Path, ckpt_path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything but tensors and plain containers
        raise SystemExit(f"torch.load(weights_only=True) cannot read {ckpt_path}: {exc}") from None
    module = nanogpt_model(checkout)
    with contextlib.redirect_stdout(sys.stderr):  # GPT() prints its size: stdout holds only the table
        model = module.GPT(module.GPTConfig(**ckpt["model_args"]))
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    model.load_state_dict(state)
    model.eval()
    return model, ckpt


@torch.no_grad()
def score_nanogpt(model: torch.nn.Module, context: np.ndarray, val: np.ndarray, block: int, stride: int) -> float:
    """Bits per character of `val` (every id scored once) after `context` (the end of the training
    ids). Window k feeds block ids and scores the targets of its last `stride` positions."""
    full = torch.from_numpy(np.concatenate([context, val]).astype(np.int64))
    first, end = len(context), len(full)
    windows = []  # (start of the input window, first and end offsets of its scored targets)
    for a in range(first, end, stride):
        b = min(a + stride, end)
        w = max(0, b - 1 - block)
        windows.append((w, a - w - 1, b - w - 1))
    length = min(block + 1, end)  # every window holds this many ids: w + block + 1 <= b <= end, or w = 0
    nats = torch.zeros((), dtype=torch.float64)
    for i in range(0, len(windows), 64):
        group = windows[i : i + 64]
        rows = torch.stack([full[w : w + length] for w, _, _ in group])
        x, y = rows[:, :-1], rows[:, 1:]
        logits, _ = model(x, torch.zeros_like(y))  # given targets, nanoGPT returns every position's logits
        lp = F.log_softmax(logits.float(), dim=-1).gather(-1, y[..., None])[..., 0]
        for row, (_, skip, stop) in enumerate(group):
            nats -= lp[row, skip:stop].double().sum()
    return float(nats) / len(val) / LN2


def run_charrnn(corpus: str, budget: float, run_dir: Path, seed: int | None) -> tuple[float, list[str]]:
    """`charrnn train CORPUS --time-budget B` (its output on stderr); wall seconds, start to exit."""
    cmd = [sys.executable, "-m", "charrnn", "train", corpus, "--time-budget", f"{budget:.1f}s", "--out", str(run_dir)]
    cmd += ["--seed", str(seed)] if seed is not None else []
    log(f"charrnn: {' '.join(cmd)}")
    started = time.perf_counter()
    code = subprocess.run(cmd, stdout=sys.stderr).returncode
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"charrnn train failed (exit {code})")
    return wall, cmd


def score_charrnn(run_dir: Path, corpus: str, val_text: str) -> dict[str, Any]:
    """The run's best checkpoint on the validation split, as `charrnn eval RUN CORPUS --val` scores
    it (in fp32), once its own settings are seen to hold out exactly `val_text`."""
    from charrnn.checkpoint import load_model
    from charrnn.evaluation import evaluate_files, read_validation_text, train_settings
    from charrnn.tensorfile import checkpoint_info, resolve_checkpoint

    path = resolve_checkpoint(run_dir)
    loaded = load_model(path, "cpu")
    if read_validation_text(corpus, train_settings(loaded))[1] != val_text:
        raise SystemExit(f"{path} holds out other text than nanoGPT was scored on: not comparable")
    _, total = evaluate_files(loaded, [Path(corpus)], validation_only=True, device="cpu", precision="fp32")
    if total.chars != len(val_text):
        raise SystemExit(f"charrnn scored {total.chars:,} characters of {len(val_text):,}")
    info = checkpoint_info(path)
    arch = info["architecture"]
    return {
        "checkpoint": str(path),
        "val_bpc": total.bits_per_char,
        "model": f"{arch['layers']}x{arch['hidden']} {arch['cell']}",
        "parameters": info["parameters"],
        "steps": info["step"],
        "training_precision": info["precision"],
    }


def table(result: dict[str, Any]) -> str:
    n, c = result["nanogpt"], result["charrnn"]
    head = (
        f"{'corpus':<18} {'nanoGPT wall s':>14} {'nanoGPT val bpc':>15} {'charrnn val bpc':>15} {'charrnn/nanoGPT':>15}"
    )
    row = f"{result['corpus']:<18} {n['wall_s']:>14.1f} {n['val_bpc']:>15.4f} {c['val_bpc']:>15.4f} "
    row += f"{result['ratio']:>15.3f}"
    return "\n".join(
        [
            head,
            row,
            f"lower is better; target <= 0.75. CPU: {result['cpu']}; torch {result['torch']}",
            f"validation: {result['val_chars']:,} characters ({result['split']})",
            f"nanoGPT: {n['iters']} iterations, {n['parameters']:,} parameters, scored {n['scoring']}",
            f"charrnn: {c['model']}, {c['parameters']:,} parameters, {c['steps']} steps in {c['wall_s']:.1f} s "
            f"(budget {n['wall_s']:.1f} s), trained in {c['training_precision']}",
        ]
    )


def compare(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cfg = TrainConfig()
    corpus = resolve_corpus(args.corpus, log)
    split = split_corpus(corpus, cfg.val_frac, cfg.val_split)
    log(f"{args.corpus}: {describe_split(split, len(split.train) + len(split.val))}")
    data = write_nanogpt_data(split.train, split.val, work / "nanogpt-data")
    out_dir = work / "nanogpt-out"
    wall = run_nanogpt(args.nanogpt, work / "nanogpt-data", out_dir, args.max_iters, work / "nanogpt.log")
    model, ckpt = load_nanogpt(args.nanogpt, out_dir / "ckpt.pt")
    block = int(ckpt["model_args"]["block_size"])
    stride = args.stride or block // 2
    if not 1 <= stride <= block:
        raise SystemExit(f"--stride must be between 1 and the block size {block}")
    log(f"scoring nanoGPT on {len(split.val):,} validation characters (windows of {block}, stride {stride})")
    nano_bpc = score_nanogpt(model, data["train_ids"][-block:], data["val_ids"], block, stride)
    nanogpt = {
        "wall_s": wall,
        "iters": int(ckpt["iter_num"]),
        "parameters": sum(p.numel() for p in model.parameters()),
        "val_bpc": nano_bpc,
        "scoring": f"in windows of {block}, stride {stride}: each character once, "
        f"with {block - stride + 1}-{block} characters of context",
        "model_args": ckpt["model_args"],
    }
    c_wall, c_cmd = run_charrnn(args.corpus, wall, work / "charrnn-run", args.seed)
    charrnn = {"wall_s": c_wall, "command": c_cmd[1:], **score_charrnn(work / "charrnn-run", args.corpus, split.val)}
    return {
        "corpus": args.corpus,
        "cpu": cpu_description(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "nanogpt_commit": git_head(args.nanogpt),
        "val_chars": len(split.val),
        "split": describe_split(split, len(split.train) + len(split.val)),
        "nanogpt": nanogpt,
        "charrnn": charrnn,
        "ratio": charrnn["val_bpc"] / nano_bpc,
    }


def cpu_description() -> str:
    """The CPU's model name, with its family and model numbers where /proc/cpuinfo gives them (a
    virtual machine may name only the vendor), and the flags speed depends on."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    numbers = f" (family {fields['cpu family']} model {fields['model']})" if "cpu family" in fields else ""
    flags = cpu_flags()
    return f"{cpu_model()}{numbers}" + (f", {flags}" if flags else "")


def git_head(checkout: Path) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="a ready corpus's name or a path, as `charrnn train` takes")
    parser.add_argument(
        "--nanogpt", required=True, type=Path, help="a nanoGPT checkout (git clone of karpathy/nanoGPT)"
    )
    parser.add_argument("--max-iters", type=int, default=2000, help="nanoGPT's iterations (the recipe's: 2000)")
    parser.add_argument("--seed", type=int, default=None, help="charrnn's --seed [default: charrnn's]")
    parser.add_argument("--stride", type=int, default=None, help="nanoGPT scoring stride [default: block_size/2]")
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON to this file")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the data, logs and runs here [default: a temp dir]"
    )
    args = parser.parse_args()
    args.nanogpt = args.nanogpt.resolve()
    if not (args.nanogpt / "train.py").is_file() or not (args.nanogpt / "model.py").is_file():
        raise SystemExit(f"{args.nanogpt} is not a nanoGPT checkout (git clone https://github.com/karpathy/nanoGPT)")
    if args.max_iters < 1:
        raise SystemExit("--max-iters must be at least 1")
    if args.workdir is not None:
        if args.workdir.exists() and any(args.workdir.iterdir()):
            raise SystemExit(f"--workdir {args.workdir} is not empty")
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = compare(args, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="compare-nanogpt-") as tmp:
            result = compare(args, Path(tmp))
    result["command"] = [Path(sys.argv[0]).name, *sys.argv[1:]]
    print(table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except CharRNNError as exc:  # an unknown corpus, an unreadable checkpoint: one line, as charrnn says it
        raise SystemExit(f"error: {exc}") from None
