"""Validation after a wall-clock budget, as rows of one table: charrnn's own `train()` at its
defaults and at fixed sizes, next to a plain reference loop trained for the same seconds.

This machine's speed varies by a third from day to day (and with its neighbours' work), so a
row's bits per character are quoted as a ratio to the reference loop's, measured in the same
run on the same corpus at the same budget. Each row also records its steps and chars/s: a
slow stretch shows up there instead of passing for a worse model.

Every row validates the way `train()` reports it (the whole validation split, state carried),
once, when the budget is spent: the grid compares what a size learns per second of training,
and an evaluation every 200 steps would tax small and large models unequally. The split is
--val-frac, lowered on a big corpus to hold about `BenchPlan.quality_val_chars` characters
(python-stdlib's default 10% is 1.26 MB: many minutes per evaluation of a big model on 2 busy cores).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from ..config import ModelConfig, TrainConfig
from ..data.corpora import find_corpus
from ..data.streams import StreamBatcher
from ..data.tokens import TokenData, load_tokens, read_corpus_bytes
from ..evaluation import StatefulModel, evaluate_ids
from ..model import RNNLanguageModel
from ..training.reporting import Reporter, RunInfo
from .results import BenchPlan, QualityRow
from .training import ReferenceLoop

LN2 = 0.6931471805599453
ONLY_FINAL_EVAL = 10**9  # eval_every: no evaluation before the budget ends, one after


def validation_bpc(model: StatefulModel, data: TokenData, cfg: TrainConfig, device: torch.device) -> float:
    """Bits per character over the whole validation split, as `Trainer.validate` reports it."""
    context = int(data.train[-1]) if len(data.train) else None
    nats, _ = evaluate_ids(
        model, data.val, context, seq_len=cfg.seq_len, num_streams=cfg.eval_batch_size, device=device
    )
    return nats / max(data.val_chars, 1) / LN2


def train_for(
    seconds: float,
    batcher: StreamBatcher,
    step: Callable[[torch.Tensor, torch.Tensor], object],
    reset: Callable[[], object],
    device: torch.device,
) -> int:
    """Consecutive windows through `step(x, y)` until `seconds` pass; `reset()` where the streams start afresh."""
    began, steps = time.perf_counter(), 0
    while time.perf_counter() - began < seconds:
        x, y, fresh = batcher.window_at(steps)
        if fresh:
            reset()
        step(x.to(device), y.to(device))
        steps += 1
    return steps


def bench_train_config(path: Path, plan: BenchPlan, device: torch.device, seconds: float) -> TrainConfig:
    """Default settings, one evaluation at the end, a validation split of about quality_val_chars."""
    val_frac = min(TrainConfig().val_frac, plan.quality_val_chars / max(path.stat().st_size, 1))
    return TrainConfig(time_budget=seconds, device=device.type, eval_every=ONLY_FINAL_EVAL, val_frac=val_frac)


class _NotesListener(Reporter):
    notes: list[str] = []

    def on_start(self, info: RunInfo) -> None:
        self.notes = list(info.notes)


def charrnn_row(corpus: str, path: Path, cfg: TrainConfig, model_cfg: ModelConfig | None, label: str) -> QualityRow:
    """`train()` for `cfg.time_budget`; model_cfg None means no size flags: sized for the budget,
    as `charrnn train CORPUS --time-budget T` does."""
    from ..checkpoint import load_checkpoint
    from ..training.run import RunHooks, RunRequest, train

    listener = _NotesListener()
    with tempfile.TemporaryDirectory() as run_dir:
        result = train(
            read_corpus_bytes(path, name=corpus),
            model_cfg or ModelConfig(),
            cfg,
            Path(run_dir) / "run",
            RunRequest(size_for_budget=model_cfg is None, dropout_given=model_cfg is not None),
            RunHooks(reporter=listener),
        )
        tensors, meta = load_checkpoint(result.last_path)
    shape = ModelConfig.from_dict(meta["model"])
    return QualityRow(
        corpus=corpus,
        label=label,
        cell=shape.cell,
        hidden_size=shape.hidden_size,
        num_layers=shape.num_layers,
        budget_seconds=cfg.time_budget or 0.0,
        steps=result.steps,
        chars_per_sec=result.steps * cfg.batch_size * cfg.seq_len / max(result.elapsed, 1e-9),
        parameters=sum(t.numel() for name, t in tensors.items() if name.startswith("model.")),
        val_bpc=result.last_val_bpc,
        note="; ".join(n for n in listener.notes if n.startswith("size: ")),
    )


def reference_row(corpus: str, path: Path, cfg: TrainConfig, plan: BenchPlan) -> QualityRow:
    """The plain loop (embedding -> nn.LSTM -> linear, AdamW, constant lr, each stream read straight
    through as char-rnn reads it) for `cfg.time_budget`."""
    device, seconds = torch.device(cfg.device), cfg.time_budget or 0.0
    data = load_tokens(read_corpus_bytes(path, name=corpus), val_frac=cfg.val_frac, val_split=cfg.val_split)
    vocab = data.tokenizer.vocab_size
    embed = ModelConfig().embed_size
    loop = ReferenceLoop(vocab, embed, plan.hidden, plan.layers, device, "fp32")
    batcher = StreamBatcher(data.train, cfg.batch_size, cfg.seq_len)
    began = time.perf_counter()
    steps = train_for(seconds, batcher, loop.step, lambda: setattr(loop, "state", None), device)
    elapsed = time.perf_counter() - began
    model = RNNLanguageModel("lstm", vocab, embed, plan.hidden, plan.layers, dropout=0.0).to(device)
    weights = {**_prefixed(loop.embedding, "embedding"), **_prefixed(loop.lstm, "rnn"), **_prefixed(loop.head, "head")}
    model.load_state_dict(weights)
    return QualityRow(
        corpus=corpus,
        label="reference loop",
        cell="lstm",
        hidden_size=plan.hidden,
        num_layers=plan.layers,
        budget_seconds=seconds,
        steps=steps,
        chars_per_sec=steps * cfg.batch_size * cfg.seq_len / elapsed,
        parameters=sum(p.numel() for p in model.parameters()),
        val_bpc=validation_bpc(model, data, cfg, device),
    )


def _prefixed(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def bench_quality_rows(
    plan: BenchPlan,
    device: torch.device,
    sizes: tuple[tuple[int, int], ...] = (),
    budgets: tuple[float, ...] | None = None,
    with_defaults: bool = True,
    extra: Callable[[str, Path, TrainConfig], list[QualityRow]] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[QualityRow]:
    """Per corpus and budget: the reference loop, charrnn with no size flags, then each
    (hidden, layers) of `sizes` and whatever `extra` adds; ratios to that reference filled in."""
    rows: list[QualityRow] = []
    for corpus in plan.quality_corpora:
        path = find_corpus(corpus)
        if path is None:
            rows.append(
                QualityRow(corpus=corpus, label="-", skipped=f"{corpus} not found (corpus get, CHARRNN_MIRROR)")
            )
            continue
        for seconds in budgets or plan.quality_budgets:
            cfg = bench_train_config(path, plan, device, seconds)
            progress(f"quality: {corpus}, {seconds:g}s, reference loop")
            group = [reference_row(corpus, path, cfg, plan)]
            picked = None
            if with_defaults:
                progress(f"quality: {corpus}, {seconds:g}s, charrnn defaults")
                group.append(charrnn_row(corpus, path, cfg, None, "charrnn defaults"))
                picked = (group[-1].hidden_size, group[-1].num_layers)
            for hidden, layers in sizes:
                if (hidden, layers) == picked:
                    # The no-flags row trained this very size for the same seconds: at a 30-minute
                    # budget a second copy would cost half an hour to measure run-to-run noise.
                    group[1] = replace(group[1], grid_size=True)
                    continue
                progress(f"quality: {corpus}, {seconds:g}s, lstm {layers}x{hidden}")
                shape = ModelConfig(hidden_size=hidden, num_layers=layers)
                group.append(charrnn_row(corpus, path, cfg, shape, "charrnn, fixed size"))
            if extra is not None:
                group += extra(corpus, path, cfg)
            reference = group[0].val_bpc
            grid = [r.val_bpc for r in group if r.label == "charrnn, fixed size" or r.grid_size]
            rows += [
                replace(row, ratio=row.val_bpc / reference, grid_ratio=row.val_bpc / min(grid) if grid else None)
                for row in group
            ]
    return rows


def shape_rows(plan: BenchPlan) -> Callable[[str, Path, TrainConfig], list[QualityRow]]:
    """`extra` rows for the batch x window grid: charrnn with no size flags (the size rule's
    choice) at each --batch-size x --seq-len of the plan, once per seed; the learning rate scaled
    with the square root of the batch (Adam's rule of thumb) when plan.grid_scale_lr."""
    base = TrainConfig()

    def rows(corpus: str, path: Path, cfg: TrainConfig) -> list[QualityRow]:
        out = []
        for batch in plan.grid_batches or (base.batch_size,):
            for window in plan.grid_windows or (base.seq_len,):
                lr = base.lr * (batch / base.batch_size) ** 0.5 if plan.grid_scale_lr else base.lr
                for seed in range(plan.grid_seeds):
                    shaped = replace(cfg, batch_size=batch, seq_len=window, lr=lr, seed=base.seed + seed)
                    shaped = replace(shaped, precision=plan.grid_precision)
                    forced = f", {plan.grid_precision}" if plan.grid_precision != "auto" else ""
                    label = f"batch {batch} x window {window}{forced}, seed {seed + 1}"
                    out.append(charrnn_row(corpus, path, shaped, None, label))
        return out

    return rows
