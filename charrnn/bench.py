"""`charrnn bench`: speed and quality figures measured on this machine, as plain data.

Every measurement is a function returning a dataclass; nothing here prints (the CLI draws the
table). The timed loops alternate the two things they compare in short rounds and keep the
median round, so a neighbour's burst of work on a shared machine hurts both sides alike
instead of deciding the ratio.

The figures: training throughput of charrnn's own `Trainer.train_step` next to a plain
reference loop (embedding -> nn.LSTM -> linear, AdamW) at the same config and precision;
utilisation = achieved training FLOP/s over the measured matmul peak; sampling speed of the
fast one-step path next to its memory-bandwidth limit; the data path on a generated corpus
(encode time, peak memory, time to the first step of a second run); and validation bits per
character on tinyshakespeare after a fixed wall-clock budget.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig, TrainConfig
from .data import TokenData
from .model import ONE_THREAD_MAX_STREAMS, FastStepper, RNNLanguageModel
from .sample import choose_next
from .tokenizers import CharTokenizer
from .train import Trainer, resolve_device, resolve_precision

VOCAB = 65  # tinyshakespeare's character count: the head size every figure assumes


# ----------------------------------------------------------------------------- results


@dataclass
class Machine:
    torch: str
    python: str
    cpu: str
    threads: int
    device: str
    auto_precision: str  # what --precision auto picks here
    auto_reason: str


@dataclass
class TrainSpeed:
    precision: str
    charrnn_chars_per_sec: float
    reference_chars_per_sec: float
    ratio: float  # charrnn / reference: the target is >= 0.95
    flops_per_sec: float  # charrnn's achieved training FLOP/s
    utilization: float | None  # flops_per_sec / the matmul peak of that precision


@dataclass
class PrecisionShape:
    """charrnn's training step in fp32 and in bf16 at one batch/sequence shape."""

    batch_size: int
    seq_len: int
    fp32_chars_per_sec: float
    bf16_chars_per_sec: float
    speedup: float  # bf16 / fp32


@dataclass
class PrecisionQuality:
    """Validation loss after the same steps from the same start in fp32 and in bf16."""

    steps: int
    fp32_val_loss: float | None = None  # nats per token
    bf16_val_loss: float | None = None
    relative_difference: float | None = None  # (bf16 - fp32) / fp32; the target is within 1%
    skipped: str | None = None


@dataclass
class SampleSpeed:
    cell: str
    hidden: int
    layers: int
    streams: int
    chars_per_sec: float
    threads: int  # torch intra-op threads it ran with
    weight_bytes: int  # bytes of weights read per step (all streams share one read)
    limit_chars_per_sec: float  # streams * bandwidth / weight_bytes: the memory-bound ceiling
    # fp32 matmul peak / (2 FLOPs per weight per character): the ceiling once many streams share a read
    compute_limit_chars_per_sec: float | None = None


@dataclass
class DataPath:
    corpus_mb: float
    encode_seconds: float  # decode + fit + encode + cache write, first run
    peak_rss_mb: float  # whole process, torch included
    baseline_rss_mb: float  # the same process after imports, before reading the corpus
    ids_dtype: str
    second_run_load_seconds: float  # read + hash the corpus, memory-map the cached ids
    second_run_ready_seconds: float  # ... + model and optimiser built: training starts
    second_run_first_step_seconds: float  # ... and the first training step done (default 2x512 model)
    cached: bool  # the second run really read the cache


@dataclass
class Quality:
    budget_seconds: float
    steps: int | None = None
    val_bpc: float | None = None
    skipped: str | None = None  # why, when it did not run


@dataclass
class BenchReport:
    quick: bool
    machine: Machine
    config: dict[str, Any]
    matmul_peak: dict[str, float] = field(default_factory=dict)  # precision -> FLOP/s
    read_bandwidth: float = 0.0  # bytes/s
    cpu_matmul_peak: float = 0.0  # fp32 FLOP/s on the CPU, where sampling runs
    training: list[TrainSpeed] = field(default_factory=list)
    bf16_shapes: list[PrecisionShape] = field(default_factory=list)
    sampling: list[SampleSpeed] = field(default_factory=list)
    data: DataPath | None = None
    quality: Quality | None = None
    precision_quality: PrecisionQuality | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BenchPlan:
    """How much of each measurement to run: `full()` for the README figures, `quick()` ~1 minute."""

    hidden: int = 512
    layers: int = 2
    seq_len: int = 64
    batch_size: int = 32
    precisions: tuple[str, ...] = ("fp32", "bf16")
    train_rounds: int = 5
    train_steps_per_round: int = 4
    # Where does bf16 pay off? (batch, seq_len) shapes timed in fp32 and bf16.
    bf16_shapes: tuple[tuple[int, int], ...] = ((32, 64), (32, 128), (64, 64), (128, 64), (128, 128))
    precision_steps: int = 300  # fp32 vs bf16 validation loss at equal steps; 0 skips
    sample_models: tuple[tuple[str, int], ...] = (("lstm", 256), ("lstm", 512), ("gru", 256), ("gru", 512))
    sample_streams: tuple[int, ...] = (1, 32)
    # Also sample many streams on one thread (few streams always run on one, see model.py): two
    # threads of a busy machine wait on each other at every op (measured: 32 streams 5-10x slower).
    sample_one_thread_too: bool = True
    sample_seconds: float = 2.0
    data_mb: float = 100.0
    data_hidden: int = 512  # the second run's model: the default 2x512 LSTM
    quality_seconds: float = 300.0

    @classmethod
    def full(cls) -> "BenchPlan":
        return cls()

    @classmethod
    def quick(cls) -> "BenchPlan":
        return cls(
            train_rounds=3,
            train_steps_per_round=2,
            sample_models=(("lstm", 256), ("lstm", 512)),
            sample_seconds=0.7,
            data_mb=20.0,
            quality_seconds=15.0,
            bf16_shapes=(),
            precision_steps=0,
        )


# ----------------------------------------------------------------------------- timing helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def machine_info(device: torch.device) -> Machine:
    precision, reason = resolve_precision("auto", device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return Machine(
        torch=torch.__version__,
        python=platform.python_version(),
        cpu=cpu,
        threads=torch.get_num_threads(),
        device=f"{device.type} ({name})",
        auto_precision=precision,
        auto_reason=reason,
    )


def measure_matmul_peak(device: torch.device, precision: str = "fp32", size: int = 1024, seconds: float = 0.5) -> float:
    """FLOP/s of a square matmul: the ceiling training throughput is compared against."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device.type == "cuda":
        size = max(size, 4096)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)  # warm-up: thread pool, kernel selection
    best = math.inf
    deadline = time.perf_counter() + seconds
    while True:
        best = min(best, _timed(lambda: torch.mm(a, b), device))
        if time.perf_counter() > deadline:
            break
    return 2 * size**3 / best


def measure_read_bandwidth(device: torch.device, megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes/s of reading a buffer far larger than the caches (a sum touches every byte once)."""
    x = torch.ones(megabytes * (1 << 20) // 4, device=device)
    x.sum()
    best = min(_timed(lambda: x.sum(), device) for _ in range(repeats))
    return x.numel() * 4 / best


# ----------------------------------------------------------------------------- training


def training_flops_per_token(cell: str, embed: int, hidden: int, layers: int, vocab: int) -> float:
    """Matmul FLOPs of one training token: forward 2*in*out per weight, backward twice that."""
    gates = {"lstm": 4, "gru": 3}.get(cell, 1)
    forward = 0
    for layer in range(layers):
        inputs = embed if layer == 0 else hidden
        forward += 2 * (inputs + hidden) * gates * hidden
    forward += 2 * hidden * vocab
    return 3.0 * forward


def _synthetic_tokens(n: int, seed: int = 0) -> TokenData:
    rng = np.random.default_rng(seed)
    chars = [chr(c) for c in range(32, 32 + VOCAB)]
    ids = rng.integers(0, VOCAB, n, dtype=np.uint8)
    cut = n * 9 // 10
    return TokenData("bench", CharTokenizer(chars), ids[:cut], ids[cut:], n - cut, cut)


class ReferenceLoop:
    """What a user would write by hand: embedding -> nn.LSTM -> linear, AdamW, clip, carry state."""

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int, device: torch.device, precision: str):
        torch.manual_seed(0)
        self.embedding = nn.Embedding(vocab, embed).to(device)
        self.lstm = nn.LSTM(embed, hidden, layers, batch_first=True).to(device)
        self.head = nn.Linear(hidden, vocab).to(device)
        self.params = [*self.embedding.parameters(), *self.lstm.parameters(), *self.head.parameters()]
        self.optimizer = torch.optim.AdamW(self.params, lr=3e-3)
        self.device = device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y (B, T) on the device; returns the loss tensor (no host sync)."""
        if self.state is None:
            zeros = torch.zeros(self.lstm.num_layers, x.shape[0], self.lstm.hidden_size, device=self.device)
            self.state = (zeros, zeros.clone())
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            out, (h, c) = self.lstm(self.embedding(x), self.state)  # (B, T, H)
            logits = self.head(out)  # (B, T, V)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state = (h.detach().float(), c.detach().float())
        return loss.detach()


def bench_training(
    plan: BenchPlan, precision: str, device: torch.device, peak: float | None = None, workdir: Path | None = None
) -> TrainSpeed:
    """charrnn's train_step and the reference loop on the same windows, alternating rounds."""
    data = _synthetic_tokens(plan.batch_size * (plan.seq_len * 64 + 1) * 10 // 9 + 1000)
    with tempfile.TemporaryDirectory(dir=workdir) as run_dir:
        trainer = _bench_trainer(plan, precision, device, Path(run_dir), data)
        model_cfg = trainer.model_cfg
        reference = ReferenceLoop(VOCAB, model_cfg.embed_size, plan.hidden, plan.layers, device, trainer.precision)
        batcher = trainer.batcher
        cursor = [0]

        def window() -> tuple[torch.Tensor, torch.Tensor]:
            x, y = batcher.window(cursor[0] % batcher.windows_per_epoch)
            cursor[0] += 1
            return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

        def run_charrnn() -> None:
            for _ in range(plan.train_steps_per_round):
                trainer.train_step(*window())

        def run_reference() -> None:
            for _ in range(plan.train_steps_per_round):
                reference.step(*window())

        run_charrnn()  # warm-up: allocator, kernel choice, optimizer state
        run_reference()
        ours, theirs = [], []
        for _ in range(plan.train_rounds):
            ours.append(_timed(run_charrnn, device))
            theirs.append(_timed(run_reference, device))
    chars = plan.train_steps_per_round * plan.batch_size * plan.seq_len
    ours_speed, ref_speed = chars / statistics.median(ours), chars / statistics.median(theirs)
    flops = ours_speed * training_flops_per_token("lstm", model_cfg.embed_size, plan.hidden, plan.layers, VOCAB)
    return TrainSpeed(
        precision=trainer.precision,
        charrnn_chars_per_sec=ours_speed,
        reference_chars_per_sec=ref_speed,
        ratio=ours_speed / ref_speed,
        flops_per_sec=flops,
        utilization=flops / peak if peak else None,
    )


def _bench_trainer(plan: BenchPlan, precision: str, device: torch.device, run_dir: Path, data: TokenData) -> Trainer:
    model_cfg = ModelConfig(
        cell="lstm", vocab_size=data.tokenizer.vocab_size, hidden_size=plan.hidden, num_layers=plan.layers
    )
    train_cfg = TrainConfig(
        seq_len=plan.seq_len,
        batch_size=plan.batch_size,
        precision=precision,
        device=device.type,
        steps=10**9,
        warmup_steps=0,
    )
    return Trainer(data, model_cfg, train_cfg, run_dir)


def bench_bf16_shape(plan: BenchPlan, batch_size: int, seq_len: int, device: torch.device) -> PrecisionShape:
    """charrnn's step in fp32 and bf16 at (batch_size, seq_len), alternating rounds."""
    plan = replace(plan, batch_size=batch_size, seq_len=seq_len)
    data = _synthetic_tokens(batch_size * (seq_len * 16 + 1) * 10 // 9 + 1000)
    with tempfile.TemporaryDirectory() as run_dir:
        trainers = {p: _bench_trainer(plan, p, device, Path(run_dir), data) for p in ("fp32", "bf16")}
        times: dict[str, list[float]] = {p: [] for p in trainers}
        for round_ in range(plan.train_rounds + 1):
            for precision, trainer in trainers.items():
                windows = [
                    tuple(t.to(device) for t in trainer.batcher.window(i % trainer.batcher.windows_per_epoch))
                    for i in range(round_ * plan.train_steps_per_round, (round_ + 1) * plan.train_steps_per_round)
                ]
                seconds = _timed(lambda: [trainer.train_step(x, y) for x, y in windows], device)
                if round_:  # round 0 warms up
                    times[precision].append(seconds)
    chars = plan.train_steps_per_round * batch_size * seq_len
    fp32, bf16 = (chars / statistics.median(times[p]) for p in ("fp32", "bf16"))
    return PrecisionShape(batch_size, seq_len, fp32, bf16, bf16 / fp32)


def bench_precision_quality(plan: BenchPlan, device: torch.device, corpus: Path | None = None) -> PrecisionQuality:
    """Train the benchmark config on `corpus` (default tinyshakespeare) for `plan.precision_steps`
    steps in fp32 and in bf16 from the same initialisation and data; compare the validation loss."""
    from .data import load_tokens, read_corpus_bytes

    steps = plan.precision_steps
    path = corpus or find_shakespeare()
    if path is None:
        return PrecisionQuality(steps, skipped="tinyshakespeare not found")
    data = load_tokens(read_corpus_bytes(path))
    losses = {}
    with tempfile.TemporaryDirectory() as run_dir:
        for precision in ("fp32", "bf16"):
            trainer = _bench_trainer(plan, precision, device, Path(run_dir), data)
            trainer.cfg = replace(trainer.cfg, steps=steps, warmup_steps=min(50, steps // 10))
            trainer.total_steps = steps  # the cosine schedule runs over exactly these steps
            for i in range(steps):
                index = i % trainer.batcher.windows_per_epoch
                if index == 0:
                    trainer.hidden = None
                x, y = trainer.batcher.window(index)
                trainer.train_step(x.to(device), y.to(device))
            losses[precision], _ = trainer.validate()
    fp32, bf16 = losses["fp32"], losses["bf16"]
    return PrecisionQuality(steps, fp32, bf16, (bf16 - fp32) / fp32)


# ----------------------------------------------------------------------------- sampling


def stepper_weight_bytes(stepper: FastStepper) -> int:
    """Bytes of weights one `FastStepper.step` reads (the input table: only B rows, ignored)."""
    if stepper.cell == "gru":
        later = stepper.w_ih + stepper.w_hh
    else:
        later = stepper.w_cat
    tensors = [stepper.w_hh0, *later, stepper.w_head]
    return sum(t.numel() * t.element_size() for t in tensors)


@torch.inference_mode()
def bench_sampling(
    cell: str,
    hidden: int,
    layers: int,
    streams: int,
    seconds: float,
    bandwidth: float,
    peak: float | None = None,
    temperature: float = 0.8,
    threads: int | None = None,
) -> SampleSpeed:
    """Characters/s of the fast path (FastStepper + choose_next) on CPU, `streams` at once,
    on `threads` intra-op threads (default: torch's)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _time_sampling(cell, hidden, layers, streams, seconds, bandwidth, peak, temperature)
    finally:
        torch.set_num_threads(before)


def _time_sampling(cell, hidden, layers, streams, seconds, bandwidth, peak, temperature) -> SampleSpeed:
    torch.manual_seed(0)
    model = RNNLanguageModel(cell, VOCAB, 64, hidden, layers).eval()
    stepper = FastStepper(model)
    generator = torch.Generator().manual_seed(0)
    hidden_state = stepper.init_hidden(streams)
    token = torch.zeros(streams, dtype=torch.long)
    for _ in range(20):  # warm-up
        logits, hidden_state = stepper.step(token, hidden_state)
        token = choose_next(logits, temperature, generator=generator)
    steps, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(25):
            logits, hidden_state = stepper.step(token, hidden_state)  # (B, V)
            token = choose_next(logits, temperature, generator=generator)  # (B,)
            int(token[0])  # what streaming output costs: the token reaches Python every step
        steps += 25
        now = time.perf_counter()
        if now >= deadline:
            break
    weight_bytes = stepper_weight_bytes(stepper)
    return SampleSpeed(
        cell=cell,
        hidden=hidden,
        layers=layers,
        streams=streams,
        chars_per_sec=steps * streams / (now - start),
        threads=1 if streams <= ONE_THREAD_MAX_STREAMS else torch.get_num_threads(),  # what step() ran on
        weight_bytes=weight_bytes,
        limit_chars_per_sec=streams * bandwidth / weight_bytes,
        compute_limit_chars_per_sec=peak / (2 * weight_bytes / 4) if peak else None,
    )


# ----------------------------------------------------------------------------- data path


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


def _data_child(mode: str, corpus_path: str, out_path: str, hidden: int = 512) -> None:
    """Runs in a fresh interpreter (see `bench_data`) so that peak memory is this work's alone.
    Writes its figures as JSON to `out_path`."""
    import resource

    from .data import load_tokens, read_corpus_bytes

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
            trainer.train_step(x, y)
        result["first_step_seconds"] = time.perf_counter() - start
    result["peak_rss_mb"] = rss_mb()
    Path(out_path).write_text(json.dumps(result))


def _run_child(mode: str, corpus: Path, cache: Path, out: Path, hidden: int) -> dict[str, Any]:
    env = {**os.environ, "CHARRNN_CACHE": str(cache)}
    code = f"from charrnn.bench import _data_child; _data_child({mode!r}, {str(corpus)!r}, {str(out)!r}, {hidden})"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"data benchmark child failed: {tail}")
    return json.loads(out.read_text())


def bench_data(megabytes: float, workdir: Path | None = None, hidden: int = 512) -> DataPath:
    """Encode a generated corpus in a fresh process (time, peak RSS), then time a second run's
    start on the same corpus: the ids come memory-mapped from the cache."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folder = Path(tmp)
        corpus = folder / "generated.txt"
        generate_corpus(corpus, megabytes)
        first = _run_child("encode", corpus, folder / "cache", folder / "first.json", hidden)
        second = _run_child("first-step", corpus, folder / "cache", folder / "second.json", hidden)
        size = corpus.stat().st_size
    return DataPath(
        corpus_mb=size / 1e6,
        encode_seconds=first["load_seconds"],
        peak_rss_mb=first["peak_rss_mb"],
        baseline_rss_mb=first["baseline_rss_mb"],
        ids_dtype=first["dtype"],
        second_run_load_seconds=second["load_seconds"],
        second_run_ready_seconds=second["ready_seconds"],
        second_run_first_step_seconds=second["first_step_seconds"],
        cached=bool(second["cached"]),
    )


# ----------------------------------------------------------------------------- quality


def find_shakespeare() -> Path | None:
    """tinyshakespeare where it already is (./corpora or the mirror): a benchmark never downloads."""
    from .corpora import corpora_dir, mirror_dirs

    for folder in [corpora_dir(), *mirror_dirs()]:
        path = folder / "tinyshakespeare.txt"
        if path.is_file():
            return path
    return None


def bench_quality(seconds: float, device: torch.device, workdir: Path | None = None) -> Quality:
    """Validation bpc on tinyshakespeare after `seconds` of training with the default settings."""
    from .data import read_corpus_bytes
    from .train import train

    path = find_shakespeare()
    if path is None:
        return Quality(
            seconds,
            skipped="tinyshakespeare not found (set CHARRNN_MIRROR or run `charrnn corpus get tinyshakespeare`)",
        )
    with tempfile.TemporaryDirectory(dir=workdir) as run_dir:
        # eval_every stays at its default; a final evaluation always runs when the budget ends.
        cfg = TrainConfig(time_budget=seconds, device=device.type)
        result = train(read_corpus_bytes(path, name="tinyshakespeare"), ModelConfig(), cfg, Path(run_dir) / "run")
    return Quality(seconds, steps=result.steps, val_bpc=result.last_val_bpc)


# ----------------------------------------------------------------------------- everything


def run_bench(
    plan: BenchPlan,
    *,
    device: str = "auto",
    sections: tuple[str, ...] = ("training", "sampling", "data", "quality"),
    progress: Callable[[str], None] = lambda _: None,
    workdir: Path | None = None,
) -> BenchReport:
    """All measurements in one process; `progress` hears what is running (for a status line)."""
    began = time.perf_counter()
    dev = resolve_device(device)
    report = BenchReport(
        quick=plan == BenchPlan.quick(),
        machine=machine_info(dev),
        config={"hidden": plan.hidden, "layers": plan.layers, "seq_len": plan.seq_len, "batch_size": plan.batch_size},
    )
    if "training" in sections:
        for precision in plan.precisions:
            if dev.type == "cpu" and precision == "fp16":
                continue
            progress(f"matmul peak ({precision})")
            report.matmul_peak[precision] = measure_matmul_peak(dev, precision)
            progress(f"training throughput ({precision})")
            report.training.append(bench_training(plan, precision, dev, report.matmul_peak[precision], workdir))
        for batch_size, seq_len in plan.bf16_shapes:
            progress(f"bf16 vs fp32 at batch {batch_size}, seq {seq_len}")
            report.bf16_shapes.append(bench_bf16_shape(plan, batch_size, seq_len, dev))
    if "sampling" in sections:
        progress("memory bandwidth")
        report.read_bandwidth = measure_read_bandwidth(torch.device("cpu"))
        cpu_peak = report.matmul_peak.get("fp32") if dev.type == "cpu" else None
        report.cpu_matmul_peak = cpu_peak or measure_matmul_peak(torch.device("cpu"), "fp32")
        for cell, hidden in plan.sample_models:
            thread_counts = [torch.get_num_threads()]
            if plan.sample_one_thread_too and thread_counts[0] > 1:
                thread_counts.append(1)
            for streams in plan.sample_streams:
                for threads in thread_counts if streams > ONE_THREAD_MAX_STREAMS else thread_counts[:1]:
                    progress(f"sampling {cell} {plan.layers}x{hidden}, {streams} stream(s), {threads} thread(s)")
                    report.sampling.append(
                        bench_sampling(
                            cell,
                            hidden,
                            plan.layers,
                            streams,
                            plan.sample_seconds,
                            report.read_bandwidth,
                            report.cpu_matmul_peak,
                            threads=threads,
                        )
                    )
    if "data" in sections:
        progress(f"data path ({plan.data_mb:g} MB corpus)")
        report.data = bench_data(plan.data_mb, workdir, plan.data_hidden)
    if "quality" in sections:
        progress(f"quality ({plan.quality_seconds:g}s of training)")
        report.quality = bench_quality(plan.quality_seconds, dev, workdir)
        if plan.precision_steps:
            progress(f"fp32 vs bf16 validation loss after {plan.precision_steps} steps")
            report.precision_quality = bench_precision_quality(plan, dev)
    report.seconds = time.perf_counter() - began
    return report
