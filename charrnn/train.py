"""The training loop. It knows nothing about display: it reports through a `Reporter`.

One `Trainer` owns the model, optimiser, data cursor and carried hidden state. Everything a
run needs to continue bit-for-bit is in `last.safetensors` (weights, optimiser state, step,
RNG state, the hidden state of every stream), so `--resume` picks up exactly where it stopped.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from . import __version__
from .atomic import append_text
from .checkpoint import BEST, LAST, load_checkpoint, resolve_checkpoint, save_checkpoint, split_prefix
from .config import DEFAULT_MAX_EPOCHS, ModelConfig, TrainConfig
from .data import CorpusBytes, StreamBatcher, TokenData, fit_batch_size, load_tokens
from .distributed import DistContext
from .errors import CheckpointError, ConfigError, CorpusError, Interrupted, TrainingDiverged
from .evaluation import evaluate_ids
from .model import Hidden, RNNLanguageModel, detach_hidden
from .reporting import METRICS, EvalReport, Reporter, RunInfo, StepReport, TrainResult
from .runtime import StopFlag, autocast_for, resolve_device, resolve_precision
from .tokenizers import CharTokenizer, tokenizer_from_state

LN2 = math.log(2.0)
# On a GPU the step's loss is read back (a host sync) only every this many steps and before
# every evaluation; in between the GPU runs ahead of Python.
LOSS_SYNC_EVERY = 32


# ----------------------------------------------------------------------------- the trainer


def lr_at(cfg: TrainConfig, step: int, progress: float | None) -> float:
    """Linear warm-up, then cosine decay from lr to lr * min_lr_frac over the run's progress."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    if progress is None:
        return cfg.lr
    p = min(max(progress, 0.0), 1.0)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # Weight decay on matrices only: decaying biases and gains only hurts.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=0.95)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in split_prefix(tensors, "optim.").items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta.get("scalars", {}).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class Trainer:
    """Owns a run: model, optimiser, data cursor, carried hidden state, best-so-far."""

    def __init__(
        self,
        data: TokenData,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        run_dir: Path,
        *,
        dist: DistContext | None = None,
        reporter: Reporter | None = None,
        stop: StopFlag | None = None,
        save_every: int | None = None,
    ):
        self.dist = dist or DistContext()
        self.reporter = reporter or Reporter()
        self.stop = stop or StopFlag()
        self.data = data
        self.run_dir = Path(run_dir)
        self.save_every = save_every
        self.notes: list[str] = [*getattr(data.tokenizer, "notes", []), *data.notes]  # e.g. a smaller vocabulary
        batch = fit_batch_size(len(data.train), train_cfg.batch_size, train_cfg.seq_len, self.dist.world_size)
        if batch < 1:  # not even one stream of one window: a smaller batch cannot help
            need = (train_cfg.seq_len + 1) * self.dist.world_size
            raise CorpusError(
                f"training text too small: {len(data.train):,} tokens, but one window of --seq-len "
                f"{train_cfg.seq_len} needs {need:,}; lower --seq-len or give more text"
                + (f", or use fewer than {self.dist.world_size} processes" if self.dist.world_size > 1 else "")
            )
        if batch < train_cfg.batch_size:
            self.notes.append(f"corpus is small: --batch-size lowered from {train_cfg.batch_size} to {batch}")
            train_cfg = replace(train_cfg, batch_size=batch)
        self.cfg = train_cfg
        self.model_cfg = model_cfg
        self.batcher = StreamBatcher(
            data.train, train_cfg.batch_size, train_cfg.seq_len, self.dist.rank, self.dist.world_size
        )
        self.device = resolve_device(train_cfg.device) if self.dist.device is None else self.dist.device
        self.batcher.pin_memory = self.device.type == "cuda"  # windows then copy to the GPU asynchronously
        self.precision, self.precision_reason = resolve_precision(train_cfg.precision, self.device)
        torch.manual_seed(train_cfg.seed)
        self.model = RNNLanguageModel(**model_cfg.to_dict()).to(self.device)
        self.ddp_model = self.dist.wrap(self.model)
        self.optimizer = build_optimizer(self.model, train_cfg)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.step = 0
        self.elapsed = 0.0  # seconds, across resumed sessions
        self.hidden: Hidden | None = None
        self.best_val_loss = math.inf
        self.best_val_bpc = math.inf
        self.last_val_loss = math.nan
        self.last_val_bpc = math.nan
        self.bad_evals = 0
        self.train_loss_sum = 0.0
        self.train_loss_count = 0
        self._pending_losses: list[torch.Tensor] = []  # CUDA only: losses not yet read back
        self._shown_loss = math.nan
        self.total_steps = self._total_steps()

    # -- limits and schedule

    def _total_steps(self) -> int | None:
        cfg = self.cfg
        candidates = []
        if cfg.steps is not None:
            candidates.append(cfg.steps)
        if cfg.epochs is not None:
            candidates.append(max(1, math.ceil(cfg.epochs * self.batcher.windows_per_epoch)))
        if not cfg.has_limit:
            candidates.append(max(1, math.ceil(DEFAULT_MAX_EPOCHS * self.batcher.windows_per_epoch)))
        return min(candidates) if candidates else None

    def progress(self) -> float | None:
        parts = []
        if self.total_steps is not None:
            parts.append(self.step / self.total_steps)
        if self.cfg.time_budget is not None:
            parts.append(self.elapsed / self.cfg.time_budget)
        return max(parts) if parts else None

    @property
    def epoch(self) -> float:
        return self.step / self.batcher.windows_per_epoch

    # -- one optimiser step

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One TBPTT window: forward from the carried state, backward, clip, update.
        x, y: (B, T) int64 on the device. Returns the loss (nats/token)."""
        lr = lr_at(self.cfg, self.step, self.progress())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.hidden is None:
            self.hidden = self.model.init_hidden(x.shape[0], self.device)
        with autocast_for(self.device, self.precision):
            logits, hidden = self.ddp_model(x, self.hidden)  # (B, T, V)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        if self.device.type == "cuda":
            loss_value = self._loss_without_sync(loss)
        else:  # on the CPU reading the loss costs nothing: check every step
            loss_value = loss.item()
            self._check_finite([loss_value], self.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # Keep the state's value for the next window but not its graph: truncated BPTT.
        self.hidden = _as_float(detach_hidden(hidden))
        self.step += 1
        return loss_value

    def _loss_without_sync(self, loss: torch.Tensor) -> float:
        """The NaN guard and the displayed loss without a host sync every step: losses queue on
        the GPU and are read back together every LOSS_SYNC_EVERY steps and at the step before an
        evaluation (so no checkpoint is written from weights a NaN step reached unchecked; `save`
        also refuses non-finite weights), and at a session's first step. In between, the last
        block's mean loss is returned, so the logged train loss is a close approximation on CUDA."""
        self._pending_losses.append(loss.detach())
        step = self.step + 1
        due = len(self._pending_losses) >= LOSS_SYNC_EVERY or step % self.cfg.eval_every == 0
        if due or math.isnan(self._shown_loss):
            values = torch.stack(self._pending_losses).tolist()
            self._pending_losses.clear()
            self._check_finite(values, step - len(values) + 1)
            self._shown_loss = sum(values) / len(values)
        return self._shown_loss

    def _check_finite(self, losses: list[float], first_step: int) -> None:
        for offset, value in enumerate(losses):
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"loss became {value} at step {first_step + offset}: training stopped, nothing written for "
                    f"this step; try a lower --lr (now {self.cfg.lr:g}) or a --grad-clip (now {self.cfg.grad_clip:g})"
                )

    # -- evaluation

    def validate(self) -> tuple[float, float]:
        """(nats per token, bits per character) over the whole validation split."""
        context = int(self.data.train[-1]) if len(self.data.train) else None
        nats, count = evaluate_ids(
            self.model,
            self.data.val,
            context,
            seq_len=self.cfg.seq_len,
            num_streams=self.cfg.eval_batch_size,
            device=self.device,
            precision=self.precision,
            dist=self.dist,
        )
        return nats / max(count, 1), nats / max(self.data.val_chars, 1) / LN2

    # -- checkpoints

    def _meta(self, kind: str) -> dict[str, Any]:
        tok_state, _ = self.data.tokenizer.to_state()
        return {
            "kind": kind,
            "charrnn_version": __version__,
            "model": self.model_cfg.to_dict(),
            "tokenizer": tok_state,
            "train": self.cfg.to_dict(),
            "corpus": self.data.name,
            "corpus_sha256": self.data.digest,
            "step": self.step,
            "epoch": self.epoch,
            "elapsed": self.elapsed,
            "val_loss": _json_float(self.best_val_loss if kind == "best" else self.last_val_loss),
            "val_bpc": _json_float(self.best_val_bpc if kind == "best" else self.last_val_bpc),
            "best_val_loss": _json_float(self.best_val_loss),
            "best_val_bpc": _json_float(self.best_val_bpc),
            "bad_evals": self.bad_evals,
            "precision": self.precision,
            "device_type": self.device.type,
            "world_size": self.dist.world_size,
            "created": time.time(),
        }

    def _model_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        _, blob = self.data.tokenizer.to_state()
        if blob is not None:
            tensors["tokenizer.model"] = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
        return tensors

    def save(self, kind: str) -> Path:
        """Write best.safetensors (weights) or last.safetensors (everything to resume)."""
        path = self.run_dir / (BEST if kind == "best" else LAST)
        tensors = self._model_tensors()
        meta = self._meta(kind)
        if kind == "last":
            opt_tensors, opt_meta = optimizer_to_tensors(self.optimizer)
            tensors.update(opt_tensors)
            meta["optimizer"] = opt_meta
            meta["scaler"] = self.scaler.state_dict() if self.scaler.is_enabled() else None
            tensors["rng.torch"] = torch.get_rng_state()
            if self.device.type == "cuda":
                tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
            hidden = self.dist.gather_hidden(self.hidden)
            if hidden is not None:
                parts = hidden if isinstance(hidden, tuple) else (hidden,)
                for i, h in enumerate(parts):
                    tensors[f"hidden.{i}"] = h
            # The mean over ranks: every rank resumes with it, and their mean stays the global one.
            meta["train_loss_sum"] = self.dist.mean_over_ranks(self.train_loss_sum)
            meta["train_loss_count"] = self.train_loss_count
        if not all(
            torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model.") and v.is_floating_point()
        ):
            raise TrainingDiverged(
                f"weights became non-finite by step {self.step}: not saved; try a lower --lr or a --grad-clip"
            )
        if self.dist.is_main:
            save_checkpoint(path, tensors, meta)
            # getattr: reporters are duck-typed (the CLI's and wrappers around it need not subclass Reporter).
            hook = getattr(self.reporter, "on_checkpoint", None)
            if hook is not None:
                hook(kind, path, self.step)
        return path

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Everything `save('last')` wrote, back in place."""
        self.model.load_state_dict(split_prefix(tensors, "model."))
        if "optimizer" not in meta:
            raise CheckpointError(
                "this checkpoint holds weights only (a best.safetensors?); --resume needs last.safetensors"
            )
        optimizer_from_tensors(self.optimizer, tensors, meta["optimizer"])
        if meta.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(meta["scaler"])
        self.step = int(meta["step"])
        self.elapsed = float(meta["elapsed"])
        self.best_val_loss = _from_json_float(meta.get("best_val_loss"))
        self.best_val_bpc = _from_json_float(meta.get("best_val_bpc"))
        self.last_val_bpc = _from_json_float(meta.get("val_bpc"))
        self.bad_evals = int(meta.get("bad_evals", 0))
        self.train_loss_sum = float(meta.get("train_loss_sum", 0.0))
        self.train_loss_count = int(meta.get("train_loss_count", 0))
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        parts = [tensors[f"hidden.{i}"] for i in range(2) if f"hidden.{i}" in tensors]
        if parts:
            hidden = (parts[0], parts[1]) if self.model.cell == "lstm" else parts[0]
            self.hidden = self.dist.scatter_hidden(hidden, self.cfg.batch_size, self.device)
            if self.hidden is None:
                self.notes.append(
                    f"resumed with {self.dist.world_size} x {self.cfg.batch_size} streams where the run saved "
                    f"{parts[0].shape[1]}: the streams are cut anew, so the hidden state starts from zero"
                )

    # -- the loop

    def run(self) -> TrainResult:
        cfg = self.cfg
        info = RunInfo(
            run_dir=self.run_dir,
            device=str(self.device),
            precision=self.precision,
            precision_reason=self.precision_reason,
            parameters=sum(p.numel() for p in self.model.parameters()),
            tokenizer=self.data.tokenizer.kind,
            vocab_size=self.data.tokenizer.vocab_size,
            train_tokens=len(self.data.train),
            val_tokens=len(self.data.val),
            batch_size=cfg.batch_size,
            windows_per_epoch=self.batcher.windows_per_epoch,
            total_steps=self.total_steps,
            time_budget=cfg.time_budget,
            start_step=self.step,
            cached=self.data.cached,
            world_size=self.dist.world_size,
            notes=self.notes,
        )
        self.reporter.on_start(info)
        stopped = ""
        session_start = time.perf_counter() - self.elapsed
        window_start, chars_since = time.perf_counter(), 0
        speed = 0.0  # chars/s since the last evaluation; the final evaluation reports it too
        chars_per_token = self.data.train_chars / max(len(self.data.train), 1)
        while True:
            stopped = self._limit_reached()
            if stopped:
                break
            index = self.step % self.batcher.windows_per_epoch
            if index == 0:
                self.hidden = None  # the streams wrapped around: start from a zero state
            x, y = self.batcher.window(index)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            loss = self.train_step(x, y)
            self.train_loss_sum += loss
            self.train_loss_count += 1
            # All ranks take the same clock and the same stop decision, so they stop at the same step.
            signum, self.elapsed = self.dist.agree(self.stop.signum or 0, time.perf_counter() - session_start)
            chars_since += x.numel() * self.dist.world_size * chars_per_token
            now = time.perf_counter()
            speed = chars_since / max(now - window_start, 1e-9)
            self.reporter.on_step(
                StepReport(
                    step=self.step,
                    epoch=self.epoch,
                    loss=loss,
                    lr=self.optimizer.param_groups[0]["lr"],
                    elapsed=self.elapsed,
                    chars_per_sec=speed,
                    tokens_per_sec=speed / chars_per_token,
                    progress=self.progress(),
                )
            )
            if self.step % cfg.eval_every == 0:
                self._evaluate_and_save(session_start, speed)
                if self.cfg.patience is not None and self.bad_evals >= self.cfg.patience:
                    stopped = f"no improvement in {self.bad_evals} evaluations (--patience)"
                    break
                window_start, chars_since = time.perf_counter(), 0
            elif self.save_every and self.step % self.save_every == 0:
                self.save("last")
            if signum:
                self.save("last")
                self.dist.barrier()  # no rank leaves before rank 0 has written the checkpoint
                raise Interrupted(f"interrupted at step {self.step}", signum)
        if self.step % cfg.eval_every != 0 or self.step == 0:
            self._evaluate_and_save(session_start, speed)
        return TrainResult(
            run_dir=self.run_dir,
            best_path=self.run_dir / BEST,
            last_path=self.run_dir / LAST,
            steps=self.step,
            best_val_bpc=self.best_val_bpc,
            best_val_loss=self.best_val_loss,
            last_val_bpc=self.last_val_bpc,
            elapsed=self.elapsed,
            stopped_because=stopped,
        )

    def _limit_reached(self) -> str:
        cfg = self.cfg
        if cfg.steps is not None and self.step >= cfg.steps:
            return f"reached --steps {cfg.steps}"
        if cfg.epochs is not None and self.total_steps is not None and self.step >= self.total_steps:
            return f"reached --epochs {cfg.epochs:g}"
        if cfg.time_budget is not None and self.elapsed >= cfg.time_budget:
            return f"reached --time-budget {cfg.time_budget:g}s"
        if not cfg.has_limit and self.total_steps is not None and self.step >= self.total_steps:
            return f"reached the default limit of {DEFAULT_MAX_EPOCHS:g} epochs"
        return ""

    def _evaluate_and_save(self, session_start: float, speed: float) -> None:
        began = time.perf_counter()
        val_loss, val_bpc = self.validate()
        eval_seconds = time.perf_counter() - began
        self.last_val_loss, self.last_val_bpc = val_loss, val_bpc
        is_best = val_loss < self.best_val_loss
        if is_best:
            self.best_val_loss, self.best_val_bpc, self.bad_evals = val_loss, val_bpc, 0
        else:
            self.bad_evals += 1
        # Every rank's losses: the reported train loss is that of the global batch.
        train_loss = self.dist.mean_over_ranks(self.train_loss_sum) / max(self.train_loss_count, 1)
        tokens_per_char = len(self.data.train) / max(self.data.train_chars, 1)
        train_bpc = train_loss * tokens_per_char / LN2 if self.train_loss_count else math.nan
        self.train_loss_sum, self.train_loss_count = 0.0, 0
        _, self.elapsed = self.dist.agree(0, time.perf_counter() - session_start)  # the same clock on all ranks
        report = EvalReport(
            step=self.step,
            epoch=self.epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_bpc=val_bpc,
            val_nats_per_char=val_bpc * LN2,
            best_val_bpc=self.best_val_bpc,
            is_best=is_best,
            elapsed=self.elapsed,
            eval_seconds=eval_seconds,
            chars_per_sec=speed,
            lr=self.optimizer.param_groups[0]["lr"],
            tokens_per_sec=speed * len(self.data.train) / max(self.data.train_chars, 1),
            train_bpc=train_bpc,
        )
        if is_best:
            self.save("best")
        self.save("last")
        if self.dist.is_main:
            _append_metrics(self.run_dir / METRICS, report, self.data.tokenizer.kind)
        self.reporter.on_eval(report)
        if (
            self.cfg.sample_every
            and (self.step // self.cfg.eval_every) % self.cfg.sample_every == 0
            and self.dist.is_main
        ):
            self._show_sample()

    def _show_sample(self) -> None:
        from .sample import generate  # only needed for --sample-every

        gen = torch.Generator().manual_seed(self.cfg.seed + self.step)
        text = "".join(generate(self.model, self.data.tokenizer, length=200, temperature=0.8, generator=gen))
        append_text(self.run_dir / "samples.txt", f"--- step {self.step} (val {self.last_val_bpc:.3f} bpc)\n{text}\n")
        self.reporter.on_sample(self.step, text)


def _as_float(hidden: Hidden) -> Hidden:
    if isinstance(hidden, tuple):
        return tuple(h.float() for h in hidden)  # type: ignore[return-value]
    return hidden.float()


def _json_float(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _from_json_float(x: Any) -> float:
    return math.inf if x is None else float(x)


def _append_metrics(path: Path, report: EvalReport, tokenizer: str) -> None:
    import json

    row = {
        "step": report.step,
        "epoch": round(report.epoch, 4),
        "elapsed": round(report.elapsed, 3),
        "train_loss": report.train_loss,
        "train_bpc": _json_float(report.train_bpc),
        "val_loss": report.val_loss,
        "val_bpc": report.val_bpc,
        "val_nats_per_char": report.val_nats_per_char,
        "best_val_bpc": report.best_val_bpc,
        "lr": report.lr,
        "chars_per_sec": round(report.chars_per_sec, 1),
        "tokens_per_sec": round(report.tokens_per_sec, 1),
        "eval_seconds": round(report.eval_seconds, 3),
        "tokenizer": tokenizer,
    }
    append_text(path, json.dumps(row) + "\n")


# ----------------------------------------------------------------------------- entry point


def prepare_run_dir(run_dir: Path, *, resume: bool, force: bool) -> list[Path]:
    """Create the run directory; refuse to overwrite an existing run unless asked.
    Returns the directories it created, outermost first (removed again if the run fails early)."""
    existing = [n for n in (BEST, LAST, METRICS) if (run_dir / n).exists()]
    if resume:
        if not (run_dir / LAST).exists():
            raise CheckpointError(f"--resume: no {LAST} in {run_dir} to resume from")
        _remove_stale_temporaries(run_dir)
        return []
    if existing and not force:
        raise ConfigError(
            f"run directory {run_dir} already holds a run ({', '.join(existing)}): "
            f"add --resume to continue it, --force to start over, or choose another --out"
        )
    created = [p for p in reversed([run_dir, *run_dir.parents]) if not p.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CheckpointError(f"cannot write to {run_dir}: {exc.strerror or exc}") from None
    if force:
        for name in existing + ["samples.txt"]:
            (run_dir / name).unlink(missing_ok=True)
    _remove_stale_temporaries(run_dir)
    return created


def _remove_stale_temporaries(run_dir: Path) -> None:
    for stale in run_dir.glob(".*.tmp"):  # left by a save killed mid-write
        stale.unlink(missing_ok=True)


def _remove_if_empty(created: list[Path]) -> None:
    """A run that failed before writing anything leaves no empty directories behind."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): keep it and its parents
            return


def train(
    corpus: CorpusBytes,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    run_dir: Path,
    *,
    tokenizer_kind: str = "char",
    vocab_size: int | None = None,
    encoding: str = "utf-8",
    resume: bool = False,
    init_from: Path | None = None,
    force: bool = False,
    limits: dict[str, Any] | None = None,
    reporter: Reporter | None = None,
    stop: StopFlag | None = None,
    save_every: int | None = None,
    dist: DistContext | None = None,
) -> TrainResult:
    """Train a model on `corpus` into `run_dir` (fresh, resumed, or fine-tuned from `init_from`).

    On resume the model, tokenizer and training settings come from `last.safetensors`; only
    the limits in `limits` (steps, epochs, time_budget, patience, eval_every) may change.
    """
    reporter = reporter or Reporter()
    dist = dist or DistContext()
    run_dir = Path(run_dir)
    created = prepare_run_dir(run_dir, resume=resume, force=force) if dist.is_main else []
    dist.barrier()
    try:
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, Any] = {}
        tokenizer = None
        if resume:
            tensors, meta = load_checkpoint(run_dir / LAST)
            with _checkpoint_content(run_dir / LAST):
                model_cfg = ModelConfig.from_dict(meta["model"])
                train_cfg = TrainConfig.from_dict({**meta["train"], **(limits or {})})
                tokenizer = tokenizer_from_state(meta["tokenizer"], _blob(tensors))
        elif init_from is not None:
            init_from = resolve_checkpoint(init_from)  # a run directory means its best checkpoint
            tensors, meta = load_checkpoint(init_from)
            with _checkpoint_content(init_from):
                tokenizer = tokenizer_from_state(meta["tokenizer"], _blob(tensors))
                model_cfg = replace(ModelConfig.from_dict(meta["model"]), dropout=model_cfg.dropout)
        if init_from is not None and not resume:
            data = _tokens_for_finetune(corpus, tokenizer, train_cfg, encoding, reporter)
        else:  # fresh: fit a tokenizer; resume: the checkpoint's
            data = load_tokens(
                corpus,
                tokenizer_kind=tokenizer_kind,
                vocab_size=vocab_size,
                val_frac=train_cfg.val_frac,
                encoding=encoding,
                tokenizer=tokenizer,
            )
        model_cfg = replace(model_cfg, vocab_size=data.tokenizer.vocab_size)
        train_cfg, batch_note = _per_rank_batch(train_cfg, meta, dist) if resume else (train_cfg, None)
        settings = {"model": model_cfg.to_dict(), "train": train_cfg.to_dict(), "corpus_sha256": data.digest}
        dist.check_same(
            {**settings, "tokenizer": data.tokenizer.fingerprint(), "resume": resume, "run_dir": str(run_dir)}
        )
        trainer = Trainer(
            data, model_cfg, train_cfg, run_dir, dist=dist, reporter=reporter, stop=stop, save_every=save_every
        )
        trainer.notes += [batch_note] if batch_note else []
        if resume:
            _check_same_corpus(meta, data, run_dir)
            trainer.restore(tensors, meta)
            done = trainer._limit_reached()
            if done:  # continuing would only evaluate and save again what is already there
                raise ConfigError(
                    f"--resume: the run in {run_dir} is at step {trainer.step} and has {done}; "
                    f"give a higher --steps, --epochs or --time-budget to train on"
                )
        elif init_from is not None:
            _load_grown_weights(trainer.model, split_prefix(tensors, "model."))
        return trainer.run()
    except BaseException:
        _remove_if_empty(created)
        raise


def _per_rank_batch(train_cfg: TrainConfig, meta: dict[str, Any], dist: DistContext) -> tuple[TrainConfig, str | None]:
    """Resuming with another number of processes keeps the global batch (the streams, their
    hidden state and the data cursor) when it divides evenly: a run saved by 2 x 4 streams
    resumes in one process as 1 x 8 and back. Otherwise the per-process batch is kept."""
    saved_world = int(meta.get("world_size", 1))
    total = train_cfg.batch_size * saved_world
    if saved_world == dist.world_size:
        return train_cfg, None
    if total % dist.world_size == 0:
        per_rank = total // dist.world_size
        note = f"resumed a {saved_world}-process run with {dist.world_size}: {dist.world_size} x {per_rank} streams"
        return replace(train_cfg, batch_size=per_rank), note
    return train_cfg, None


@contextmanager
def _checkpoint_content(path: Path) -> Iterator[None]:
    """A checkpoint that loads (checksum fine) but lacks what a run needs: one clear error."""
    try:
        yield
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise CheckpointError(f"{path}: checkpoint content does not describe a run ({exc!r})") from None


def _blob(tensors: dict[str, torch.Tensor]) -> bytes | None:
    t = tensors.get("tokenizer.model")
    return None if t is None else t.numpy().tobytes()


def _tokens_for_finetune(corpus, tokenizer, train_cfg: TrainConfig, encoding: str, reporter: Reporter) -> TokenData:
    """The new corpus encoded with the old tokenizer; a char vocabulary grows to cover it."""
    from .data import decode_corpus

    if isinstance(tokenizer, CharTokenizer):
        text = decode_corpus(corpus, encoding)
        tokenizer, added = tokenizer.extend(text)
        reporter.on_message(
            f"--init-from: vocabulary extended by {added} new character{'s' if added != 1 else ''}"
            if added
            else "--init-from: the new corpus uses no new characters"
        )
    return load_tokens(corpus, val_frac=train_cfg.val_frac, encoding=encoding, tokenizer=tokenizer)


def _load_grown_weights(model: RNNLanguageModel, old: dict[str, torch.Tensor]) -> None:
    """Old weights into a model whose vocabulary may have grown: the old rows of the embedding
    and the output layer are copied; new rows keep their fresh initialisation."""
    new_state = model.state_dict()
    for name, value in old.items():
        if name not in new_state:
            raise CheckpointError(f"--init-from: weight {name} does not fit this model")
        target = new_state[name]
        if target.shape == value.shape:
            target.copy_(value)
        elif target.shape[1:] == value.shape[1:] and target.shape[0] > value.shape[0]:
            target[: value.shape[0]].copy_(value)
        else:
            raise CheckpointError(
                f"--init-from: weight {name} has shape {tuple(value.shape)}, expected {tuple(target.shape)}"
            )
    model.load_state_dict(new_state)


def _check_same_corpus(meta: dict[str, Any], data: TokenData, run_dir: Path) -> None:
    if meta.get("corpus_sha256") and meta["corpus_sha256"] != data.digest:
        raise ConfigError(
            f"--resume: {run_dir} was trained on a different corpus ({meta.get('corpus')!r}); "
            f"give the same corpus, or use --init-from to fine-tune on a new one"
        )
