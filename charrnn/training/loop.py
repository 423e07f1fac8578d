"""The training loop. It knows nothing about display: it reports through a `Reporter`.

A `Trainer` owns one run: the model, its optimiser, the data streams and their carried state.
Its public surface is small: `step()` (one optimiser step), `validate()`, `run()` (the loop, to
a limit), `save()`, `restore()`, and `state` (the counters a checkpoint carries). Everything a
run needs to continue bit for bit is in last.safetensors: `--resume` goes on where it stopped.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from ..checkpoint import BEST, LAST, ResumeParts, RunCheckpoint, RunIdentity, RunState, encode_run, save_checkpoint
from ..config import ModelConfig, SampleConfig, TrainConfig
from ..data.streams import StreamBatcher, fit_batch_size
from ..data.tokens import TokenData
from ..errors import CorpusError, Interrupted
from ..evaluation import LN2, evaluate_ids
from ..footprint import check_training_fits
from ..model import HiddenState, RNNLanguageModel, detach_state, map_state, stream_count
from ..runtime import Placement, StopFlag, autocast_for
from .budget import Budget
from .distributed import DistContext
from .meters import LossReadback, SpeedMeter, StepPace
from .optimization import build_optimizer, lr_at, set_lr
from .reporting import EvalReport, Reporter, RunInfo, StepReport, TrainResult, append_metrics, append_sample
from .split import StepLayout, split_workers
from .validation import ValidationSet, validation_set


class Trainer:
    """Owns a run: model, optimiser, data streams, carried state, and the run's counters."""

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
        started: float | None = None,
        placement: Placement | None = None,
    ):
        self.dist, self.reporter, self.stop = dist or DistContext(), reporter or Reporter(), stop or StopFlag()
        self.data, self.run_dir, self.save_every = data, Path(run_dir), save_every
        self.notes: list[str] = [*getattr(data.tokenizer, "notes", []), *data.notes]  # e.g. a smaller vocabulary
        self.cfg = cfg = self._fit_batch(train_cfg)
        self.model_cfg = model_cfg
        self.batcher = StreamBatcher(  # chunk_windows 0: each stream read straight through
            data.train, cfg.batch_size, cfg.seq_len, self.dist.rank, self.dist.world_size, cfg.chunk_windows, cfg.seed
        )
        self.notes += self.batcher.notes  # e.g. a --chunk as long as the streams
        where = self.placement = placement or Placement.decide(self.cfg.device, self.cfg.precision, self.dist.device)
        self.device, self.precision, self.precision_reason = where.device, where.precision, where.precision_reason
        self.autocast = partial(autocast_for, self.device, self.precision)  # entered by each thread running the model
        self.batcher.pin_memory = self.device.type == "cuda"  # windows then copy to the GPU asynchronously
        check_training_fits(model_cfg, self.cfg, self.device)  # before anything of that size is allocated
        torch.manual_seed(self.cfg.seed)
        self.model = RNNLanguageModel(**model_cfg.to_dict()).to(self.device)
        self.ddp_model = self.dist.wrap(self.model)
        self.layout = StepLayout(self.model, split_workers(model_cfg, cfg.batch_size, where, self.dist.world_size))
        self.optimizer = build_optimizer(self.model, self.cfg)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.state = RunState()
        self.hidden_state: HiddenState | None = None  # every stream's, carried from window to window
        self.losses = LossReadback(self.cfg, deferred=self.device.type == "cuda")
        self.val_set = validation_set(
            data.val, data.val_chars, data.tokenizer, self.cfg.val_tokens, self.cfg.seq_len, self.cfg.eval_batch_size
        )
        # The run's clock starts with the command (`started`, a perf_counter() value): a --time-budget bounds it all.
        self.budget = Budget(self.cfg, self.batcher.windows_per_epoch, len(self.val_set.ids), len(data.val), started)
        if self.val_set.scope == "part":
            self.notes.append(
                f"validating on {len(self.val_set.ids):,} of {len(data.val):,} validation tokens (--val-tokens); "
                f"the whole split at the end when it fits, and with charrnn eval --val"
            )

    def _fit_batch(self, cfg: TrainConfig) -> TrainConfig:
        batch = fit_batch_size(len(self.data.train), cfg.batch_size, cfg.seq_len, self.dist.world_size)
        if batch < 1:  # not even one stream of one window: a smaller batch cannot help
            need = (cfg.seq_len + 1) * self.dist.world_size
            raise CorpusError(
                f"training text too small: {len(self.data.train):,} tokens, but one window of --seq-len "
                f"{cfg.seq_len} needs {need:,}; lower --seq-len or give more text"
                + (f", or use fewer than {self.dist.world_size} processes" if self.dist.world_size > 1 else "")
            )
        if batch < cfg.batch_size:
            self.notes.append(f"corpus is small: --batch-size lowered from {cfg.batch_size} to {batch}")
            return replace(cfg, batch_size=batch)
        return cfg

    @property
    def epoch(self) -> float:
        return self.state.step / self.batcher.windows_per_epoch

    def progress(self) -> float | None:
        return self.budget.progress(self.state.step, self.state.elapsed)

    # -- the loop

    def run(self) -> TrainResult:
        """Train until a limit, --patience or a signal ends the run; validate and save on the way."""
        self.reporter.on_start(self._run_info())
        tokens = self.cfg.batch_size * self.cfg.seq_len  # per step, on each rank
        pace = StepPace.for_run(
            self.model_cfg, self.placement, tokens, self.reporter, self.dist.world_size, self.layout
        )
        # One thread until measured (all of them beside a busy program can be 100x slower); afterwards
        # the run's speed shows which speed probes were taken on a busy machine, and they go.
        with pace.running():
            return self._loop(pace, tokens)

    def _loop(self, pace: StepPace, tokens: int) -> TrainResult:
        """The loop itself: `tokens` per step on each rank; `pace` times the steps and sets their threads."""
        self._start_clock()
        speed = SpeedMeter(self.data.train_chars / max(len(self.data.train), 1))
        validated = self.state.step > 0 and self.state.train_loss_count == 0  # resumed where it had validated
        while True:
            # Stop at a limit: --steps, --epochs, or a --time-budget less what the end of the run takes.
            stopped = self.budget.should_stop(self.state.step, self.state.elapsed)
            if stopped is not None:
                break
            # One optimiser step on the next window of every stream (x, y: (B, T)), timed for the budget.
            pace.before_step()  # the thread count measured fastest (and measuring: the first steps)
            began = time.perf_counter()
            loss = self.step(*self._next_window())
            seconds = time.perf_counter() - began
            self.budget.add_step(seconds, tokens)
            pace.observe(seconds, tokens)  # a busy machine: a warning, threads re-measured
            # All ranks take the same signal, clock and durations, so that they stop at the same step.
            signum, self.state.elapsed = self.budget.agree(self.dist, self.stop.signum or 0)
            chars_per_sec = speed.add(tokens * self.dist.world_size)
            self.reporter.on_step(self._step_report(loss, chars_per_sec))
            # Every --eval-every steps (spaced out in a timed run): validate, save, heed --patience.
            validated = self.budget.validation_due(self.state.step)
            if validated:
                self._evaluate_and_save(chars_per_sec)
                if spacing := self.budget.space_validations():  # after a timed run's first: apart enough to cost 5%
                    self.reporter.on_message(spacing)
                speed.restart()  # validating is not training: the speed counts from here
                if self.cfg.patience is not None and self.state.bad_evals >= self.cfg.patience:
                    stopped = f"no improvement in {self.state.bad_evals} evaluations (--patience)"
                    break
            elif self.save_every and self.state.step % self.save_every == 0:
                self.save("last")
            # A signal (Ctrl-C, SIGTERM): save where the run is, then stop.
            if signum:
                self.save("last")
                self.dist.barrier()  # no rank leaves before rank 0 has written the checkpoint
                raise Interrupted(f"interrupted at step {self.state.step}", signum)
        # A last evaluation, unless the last step just had one; then the whole split, when it fits.
        if not validated:
            self._evaluate_and_save(speed.chars_per_sec)
        whole, warning = self._validate_whole(), pace.slow.verdict(self.state.elapsed)  # far too slow, or no step
        return replace(self._result(stopped), whole_val_bpc=whole, warning=warning)

    def _start_clock(self) -> None:
        """The clock goes on from the checkpoint's; within a --time-budget the validation part is
        timed on its first windows; then every rank counts from the slowest one's clock."""
        self.budget.resume(self.state.elapsed)
        self.budget.time_validation(self.validate, self.val_set, self.cfg.seq_len)
        _, self.state.elapsed = self.budget.agree(self.dist)  # setting up counts too

    # -- one optimiser step

    def step(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> float:
        """One TBPTT window: forward from the carried state, backward, clip, update. Returns the
        loss (nats/token). x, y: (B, T) int64 on the device; by default the streams' next window."""
        if x is None or y is None:
            x, y = self._next_window()
        set_lr(self.optimizer, lr_at(self.cfg, self.state.step, self.progress()))
        if self.hidden_state is None:
            self.hidden_state = self.model.init_state(x.shape[0], self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss, hidden_state = self.layout.run(self.ddp_model, x, y, self.hidden_state, self.autocast, self.scaler.scale)
        loss_value = self.losses.read(loss, self.state.step + 1)
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # Keep the state's value for the next window but not its graph: truncated BPTT.
        self.hidden_state = map_state(torch.Tensor.float, detach_state(hidden_state))
        self.state.step, self.state.train_loss_count = self.state.step + 1, self.state.train_loss_count + 1
        self.state.train_loss_sum += loss_value
        return loss_value

    def _next_window(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, fresh = self.batcher.window_at(self.state.step)
        if fresh:
            self.hidden_state = None  # the streams jumped (a new chunk or epoch): start from a zero state
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    # -- validation and checkpoints

    def validate(self, on: ValidationSet | None = None) -> tuple[float, float]:
        """(nats per token, bits per character) over `on`; by default the run's part of the split (validation.py)."""
        on = on or self.val_set
        context = int(self.data.train[-1]) if len(self.data.train) else None
        nats, count = evaluate_ids(
            self.layout.for_validation(self.autocast),  # split by rows as the steps are, or whole
            on.ids,
            context,
            seq_len=self.cfg.seq_len,
            num_streams=on.num_streams,
            device=self.device,
            precision=self.precision,
            dist=self.dist,
        )
        return nats / max(count, 1), nats / max(on.chars, 1) / LN2

    def _validate_whole(self) -> float | None:
        """The whole validation split scored at the end of a run that validated on a part of it,
        when the estimate from the part's speed fits the run's limits. Returns its bpc."""
        whole = len(self.data.val)
        fits = self.val_set.scope == "part" and self.budget.time_for_validation(self.budget.clock(), whole)
        if not self.dist.any_rank(fits):
            return None
        began = time.perf_counter()
        val_loss, val_bpc = self.validate(
            ValidationSet(self.data.val, self.data.val_chars, "whole", self.cfg.eval_batch_size)
        )
        self.state.elapsed = self.dist.sync_clock(self.budget.clock())
        report = replace(self._last_report, val_loss=val_loss, val_bpc=val_bpc, val_nats_per_char=val_bpc * LN2)
        report = replace(report, is_best=False, elapsed=self.state.elapsed, eval_seconds=time.perf_counter() - began)
        report = replace(report, val_scope="whole", val_tokens=len(self.data.val))
        if self.dist.is_main:
            append_metrics(self.run_dir, report, self.data.tokenizer.kind)
        self.reporter.on_message(
            f"whole validation split ({len(self.data.val):,} tokens): {val_bpc:.4f} bits/char "
            f"in {report.eval_seconds:.1f}s"
        )
        return val_bpc

    def _evaluate_and_save(self, chars_per_sec: float) -> None:
        began = time.perf_counter()
        val_set = self.budget.validation_within(self.val_set, self.state.elapsed)  # the part, or what fits
        val_loss, val_bpc = self.validate(val_set)
        eval_seconds = time.perf_counter() - began
        self.budget.validated(eval_seconds, len(val_set.ids))
        state = self.state
        state.last_val_loss, state.last_val_bpc = val_loss, val_bpc
        is_best = val_loss < state.best_val_loss
        if is_best:
            state.best_val_loss, state.best_val_bpc, state.bad_evals = val_loss, val_bpc, 0
        else:
            state.bad_evals += 1
        # Every rank's losses: the reported train loss is that of the global batch.
        train_loss = self.dist.mean_over_ranks(state.train_loss_sum) / max(state.train_loss_count, 1)
        tokens_per_char = len(self.data.train) / max(self.data.train_chars, 1)
        train_bpc = train_loss * tokens_per_char / LN2 if state.train_loss_count else math.nan
        state.train_loss_sum, state.train_loss_count = 0.0, 0
        state.elapsed = self.dist.sync_clock(self.budget.clock())  # the same clock on all ranks
        report = EvalReport(
            step=state.step,
            epoch=self.epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_bpc=val_bpc,
            val_nats_per_char=val_bpc * LN2,
            best_val_bpc=state.best_val_bpc,
            is_best=is_best,
            elapsed=state.elapsed,
            eval_seconds=eval_seconds,
            chars_per_sec=chars_per_sec,
            lr=self.optimizer.param_groups[0]["lr"],
            tokens_per_sec=chars_per_sec * tokens_per_char,
            train_bpc=train_bpc,
            val_scope=val_set.scope,
            val_tokens=len(val_set.ids),
        )
        self._last_report = report
        began = time.perf_counter()
        if is_best:
            self.save("best")
        self.save("last")
        self.budget.saved(time.perf_counter() - began)
        self.budget.agree(self.dist)  # every rank's next stop check counts this validation's and saves' time
        if self.dist.is_main:
            append_metrics(self.run_dir, report, self.data.tokenizer.kind)
        self.reporter.on_eval(report)
        evaluation = state.step // self.cfg.validation_interval  # (the default's count in a spaced run)
        if self.cfg.sample_every and evaluation % self.cfg.sample_every == 0 and self.dist.is_main:
            self._show_sample()

    def _show_sample(self) -> None:
        from ..sample import generate  # only needed for --sample-every

        gen = torch.Generator().manual_seed(self.cfg.seed + self.state.step)
        text = "".join(generate(self.model, self.data.tokenizer, SampleConfig(length=200), generator=gen))
        append_sample(self.run_dir, self.state.step, self.state.last_val_bpc, text)
        self.reporter.on_sample(self.state.step, text)

    def save(self, kind: str) -> Path:
        """Write best.safetensors (weights) or last.safetensors (everything to resume)."""
        path = self.run_dir / (BEST if kind == "best" else LAST)
        resume = None
        if kind == "last":
            resume = ResumeParts(
                optimizer=self.optimizer,
                scaler=self.scaler,
                device=self.device,
                hidden_state=self.dist.gather_state(self.hidden_state),
                # The mean over ranks: every rank resumes with it, and their mean stays the global one.
                train_loss_sum=self.dist.mean_over_ranks(self.state.train_loss_sum),
            )
        tensors, meta = encode_run(
            kind, self.model, self.data.tokenizer, self._identity(), self.state, self.epoch, resume
        )
        if self.dist.is_main:
            save_checkpoint(path, tensors, meta)
            self.reporter.on_checkpoint(kind, path, self.state.step)
        return path

    def restore(self, checkpoint: RunCheckpoint) -> None:
        """Everything `save('last')` wrote, back in place."""
        self.model.load_state_dict(checkpoint.weights())
        checkpoint.restore_optimizer(self.optimizer, self.scaler)
        self.state = checkpoint.state()
        checkpoint.restore_rng(self.device)
        if (saved := checkpoint.hidden_state(self.model.cell)) is not None:
            self.hidden_state = self.dist.scatter_state(saved, self.cfg.batch_size, self.device)
            if self.hidden_state is None:
                self.notes.append(
                    f"resumed with {self.dist.world_size} x {self.cfg.batch_size} streams where the run saved "
                    f"{stream_count(saved)}: the streams are cut anew, so the hidden state starts from zero"
                )

    # -- what the run tells its reporter

    def _identity(self) -> RunIdentity:
        return RunIdentity(
            model=self.model_cfg,
            train=self.cfg,
            corpus=self.data.name,
            corpus_sha256=self.data.digest,
            precision=self.precision,
            device_type=self.device.type,
            world_size=self.dist.world_size,
        )

    def _run_info(self) -> RunInfo:
        return RunInfo(
            run_dir=self.run_dir,
            device=str(self.device),
            precision=self.precision,
            precision_reason=self.precision_reason,
            parameters=sum(p.numel() for p in self.model.parameters()),
            tokenizer=self.data.tokenizer.kind,
            vocab_size=self.data.tokenizer.vocab_size,
            train_tokens=len(self.data.train),
            val_tokens=len(self.data.val),
            batch_size=self.cfg.batch_size,
            windows_per_epoch=self.batcher.windows_per_epoch,
            total_steps=self.budget.total_steps,
            time_budget=self.cfg.time_budget,
            start_step=self.state.step,
            cached=self.data.cached,
            world_size=self.dist.world_size,
            notes=self.notes,
        )

    def _step_report(self, loss: float, chars_per_sec: float) -> StepReport:
        return StepReport(
            step=self.state.step,
            epoch=self.epoch,
            loss=loss,
            lr=self.optimizer.param_groups[0]["lr"],
            elapsed=self.state.elapsed,
            chars_per_sec=chars_per_sec,
            tokens_per_sec=chars_per_sec * len(self.data.train) / max(self.data.train_chars, 1),
            progress=self.progress(),
        )

    def _result(self, stopped: str) -> TrainResult:
        state = self.state
        return TrainResult(
            run_dir=self.run_dir,
            best_path=self.run_dir / BEST,
            last_path=self.run_dir / LAST,
            steps=state.step,
            best_val_bpc=state.best_val_bpc,
            best_val_loss=state.best_val_loss,
            last_val_bpc=state.last_val_bpc,
            elapsed=state.elapsed,
            stopped_because=stopped,
            time_budget=self.cfg.time_budget,
        )
