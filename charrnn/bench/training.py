"""Training figures: charrnn's step against a plain PyTorch loop, bf16 against fp32, and
validation loss of the two precisions at equal steps (quality after a budget: quality.py)."""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig, TrainConfig
from ..data.corpora import find_corpus
from ..data.streams import StreamBatcher
from ..data.tokens import TokenData
from ..footprint import training_flops_per_token
from ..probes.precision import StepShape, decide, measure_precisions
from ..runtime import cpu_can_run_bf16, timed
from ..tokenizers.char import CharTokenizer
from ..training.loop import Trainer
from .results import BenchPlan, PrecisionProbe, PrecisionQuality, PrecisionShape, TrainSpeed

VOCAB = 65  # tinyshakespeare's character count: the head size every figure assumes


def _synthetic_tokens(n: int, seed: int = 0) -> TokenData:
    rng = np.random.default_rng(seed)
    chars = [chr(c) for c in range(32, 32 + VOCAB)]
    ids = rng.integers(0, VOCAB, n, dtype=np.uint8)
    cut = n * 9 // 10
    return TokenData("bench", CharTokenizer(chars), ids[:cut], ids[cut:], n - cut, cut)


def _stream_tokens(batch_size: int, seq_len: int, windows: int) -> TokenData:
    """Synthetic tokens for `windows` windows of each of `batch_size` streams once the 9/10
    train split is taken (plus slack)."""
    return _synthetic_tokens(batch_size * (seq_len * windows + 1) * 10 // 9 + 1000)


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
    """charrnn's Trainer.step and the reference loop on the same data, alternating rounds."""
    data = _stream_tokens(plan.batch_size, plan.seq_len, 64)
    embed = ModelConfig().embed_size
    with tempfile.TemporaryDirectory(dir=workdir) as run_dir:
        trainer = _bench_trainer(plan, precision, device, Path(run_dir), data)
        reference = ReferenceLoop(VOCAB, embed, plan.hidden, plan.layers, device, trainer.precision)
        batcher = StreamBatcher(data.train, plan.batch_size, plan.seq_len)
        batcher.pin_memory = device.type == "cuda"  # as the Trainer's own
        cursor = [0]

        def window() -> tuple[torch.Tensor, torch.Tensor]:
            x, y, _ = batcher.window_at(cursor[0])
            cursor[0] += 1
            return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

        def run_charrnn() -> None:
            for _ in range(plan.train_steps_per_round):
                trainer.step()  # the Trainer's next window, as in its own loop

        def run_reference() -> None:
            for _ in range(plan.train_steps_per_round):
                reference.step(*window())

        run_charrnn()  # warm-up: allocator, kernel choice, optimizer state
        run_reference()
        ours, theirs = [], []
        for _ in range(plan.train_rounds):
            ours.append(timed(run_charrnn, device))
            theirs.append(timed(run_reference, device))
    chars = plan.train_steps_per_round * plan.batch_size * plan.seq_len
    ours_speed, ref_speed = chars / statistics.median(ours), chars / statistics.median(theirs)
    flops = ours_speed * training_flops_per_token("lstm", embed, plan.hidden, plan.layers, VOCAB)
    return TrainSpeed(
        precision=trainer.precision,
        charrnn_chars_per_sec=ours_speed,
        reference_chars_per_sec=ref_speed,
        ratio=ours_speed / ref_speed,
        flops_per_sec=flops,
        utilization=flops / peak if peak else None,
    )


def _bench_trainer(
    plan: BenchPlan, precision: str, device: torch.device, run_dir: Path, data: TokenData, steps: int = 10**9
) -> Trainer:
    # dropout 0: the reference loop has none, and the comparison is of equal work
    model_cfg = ModelConfig(
        cell="lstm", vocab_size=data.tokenizer.vocab_size, hidden_size=plan.hidden, num_layers=plan.layers, dropout=0.0
    )
    train_cfg = TrainConfig(
        seq_len=plan.seq_len,
        batch_size=plan.batch_size,
        chunk_windows=0,  # the reference loop's streams: straight through, the same windows
        precision=precision,
        device=device.type,
        steps=steps,
        # Timing runs never reach a schedule's end; a quality run warms up as a real one does.
        warmup_steps=0 if steps == 10**9 else min(50, steps // 10),
    )
    return Trainer(data, model_cfg, train_cfg, run_dir)


def bench_precision_probe(plan: BenchPlan, device: torch.device) -> PrecisionProbe | None:
    """`--precision auto`'s probe at the bench's training shape, afresh (not from the cache)."""
    shape = StepShape("lstm", VOCAB, ModelConfig().embed_size, plan.hidden, plan.layers, plan.batch_size, plan.seq_len)
    if device.type == "cuda":
        candidate = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    elif cpu_can_run_bf16():
        candidate = "bf16"
    else:
        return None
    timing = measure_precisions(device, shape, candidate)
    choice, reason = decide(timing, "measured just now at the bench's shape")
    return PrecisionProbe(
        candidate,
        timing.fp32_seconds,
        timing.candidate_seconds,
        timing.speedup,
        timing.loss_ratio,
        choice,
        reason,
    )


def bench_bf16_shape(plan: BenchPlan, batch_size: int, seq_len: int, device: torch.device) -> PrecisionShape:
    """charrnn's step in fp32 and bf16 at (batch_size, seq_len), alternating rounds."""
    plan = replace(plan, batch_size=batch_size, seq_len=seq_len)
    data = _stream_tokens(batch_size, seq_len, 16)
    with tempfile.TemporaryDirectory() as run_dir:
        trainers = {p: _bench_trainer(plan, p, device, Path(run_dir), data) for p in ("fp32", "bf16")}
        batcher = StreamBatcher(data.train, batch_size, seq_len)
        times: dict[str, list[float]] = {p: [] for p in trainers}
        for round_ in range(plan.train_rounds + 1):
            for precision, trainer in trainers.items():
                windows = [
                    tuple(t.to(device) for t in batcher.window_at(i)[:2])
                    for i in range(round_ * plan.train_steps_per_round, (round_ + 1) * plan.train_steps_per_round)
                ]
                seconds = timed(lambda: [trainer.step(x, y) for x, y in windows], device)
                if round_:  # round 0 warms up
                    times[precision].append(seconds)
    chars = plan.train_steps_per_round * batch_size * seq_len
    fp32, bf16 = (chars / statistics.median(times[p]) for p in ("fp32", "bf16"))
    return PrecisionShape(batch_size, seq_len, fp32, bf16, bf16 / fp32)


def bench_precision_quality(plan: BenchPlan, device: torch.device, corpus: Path | None = None) -> PrecisionQuality:
    """Train the benchmark config on `corpus` (default tinyshakespeare) for `plan.precision_steps`
    steps in fp32 and in bf16 from the same initialisation and data; compare the validation loss."""
    from ..data.tokens import load_tokens, read_corpus_bytes

    steps = plan.precision_steps
    path = corpus or find_corpus("tinyshakespeare")
    if path is None:
        return PrecisionQuality(steps, skipped="tinyshakespeare not found")
    data = load_tokens(read_corpus_bytes(path))
    losses = {}
    with tempfile.TemporaryDirectory() as run_dir:
        for precision in ("fp32", "bf16"):
            # the cosine schedule runs over exactly these steps
            trainer = _bench_trainer(plan, precision, device, Path(run_dir), data, steps=steps)
            for _ in range(steps):
                trainer.step()
            losses[precision], _ = trainer.validate()
    fp32, bf16 = losses["fp32"], losses["bf16"]
    return PrecisionQuality(steps, fp32, bf16, (bf16 - fp32) / fp32)
