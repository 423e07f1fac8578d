"""What a checkpoint holds: the one place that knows its tensor names and metadata keys.

The container (safetensors, checksum, atomic write) is tensorfile.py. Inside it:

    tensors   model.<name>          the network's weights
              tokenizer.model      a SentencePiece model's bytes (subword vocabularies only)
              optim.<pid>.<key>    optimiser state tensors                      } last.safetensors
              rng.torch, rng.cuda  random generator states                      } only: what a
              hidden.0, hidden.1   the carried state of every stream (h; c)     } resume needs
    metadata  kind, charrnn_version, model, tokenizer, train, corpus, corpus_sha256, step, epoch,
              elapsed, val_loss, val_bpc, best_val_loss, best_val_bpc, bad_evals, precision,
              device_type, world_size, created; last.safetensors adds optimizer (param groups and
              scalar state), scaler, train_loss_sum, train_loss_count.

`encode_run` writes that layout from a run's parts, `RunCheckpoint` reads it back part by
part, `load_model` builds a ready model from it.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from . import __version__
from .config import ModelConfig, TrainConfig
from .errors import CheckpointError, ConfigError, TrainingDiverged
from .footprint import weights_mismatch
from .model import HiddenState, RNNLanguageModel, state_from_tensors, state_tensors
from .tensorfile import (
    BEST,
    FORMAT_VERSION,
    LAST,
    checkpoint_info,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from .tokenizers.char import Tokenizer
from .tokenizers.factory import tokenizer_from_state

__all__ = [
    "BEST",
    "FORMAT_VERSION",
    "LAST",
    "LoadedModel",
    "ResumeParts",
    "RunCheckpoint",
    "RunState",
    "checkpoint_info",
    "encode_run",
    "load_checkpoint",
    "load_model",
    "resolve_checkpoint",
    "save_checkpoint",
]


@dataclass
class RunState:
    """The counters of a run: where it is and how well it has done. Saved in every checkpoint."""

    step: int = 0
    elapsed: float = 0.0  # seconds, across resumed sessions
    best_val_loss: float = math.inf
    best_val_bpc: float = math.inf
    last_val_loss: float = math.nan
    last_val_bpc: float = math.nan
    bad_evals: int = 0  # evaluations since the best one (--patience counts them)
    train_loss_sum: float = 0.0  # since the last evaluation
    train_loss_count: int = 0


@dataclass
class ResumeParts:
    """What last.safetensors adds to the weights so that a run continues bit for bit."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    hidden_state: HiddenState | None  # every stream's, gathered from all processes
    train_loss_sum: float  # the mean over processes


@dataclass(frozen=True)
class RunIdentity:
    """What a run is: the same in each of its checkpoints."""

    model: ModelConfig
    train: TrainConfig
    corpus: str
    corpus_sha256: str
    precision: str
    device_type: str
    world_size: int


def encode_run(
    kind: str,
    model: RNNLanguageModel,
    tokenizer: Tokenizer,
    run: RunIdentity,
    state: RunState,
    epoch: float,
    resume: ResumeParts | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of best.safetensors (`kind` "best": weights) or last.safetensors
    ("last": with `resume`). Anything non-finite (weights, optimiser moments, carried state) is
    refused: a diverged run never overwrites a checkpoint."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tok_state, blob = tokenizer.to_state()
    if blob is not None:
        tensors["tokenizer.model"] = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
    meta: dict[str, Any] = {
        "kind": kind,
        "charrnn_version": __version__,
        "model": run.model.to_dict(),
        "tokenizer": tok_state,
        "train": run.train.to_dict(),
        "corpus": run.corpus,
        "corpus_sha256": run.corpus_sha256,
        "step": state.step,
        "epoch": epoch,
        "elapsed": state.elapsed,
        "val_loss": _json_float(state.best_val_loss if kind == "best" else state.last_val_loss),
        "val_bpc": _json_float(state.best_val_bpc if kind == "best" else state.last_val_bpc),
        "best_val_loss": _json_float(state.best_val_loss),
        "best_val_bpc": _json_float(state.best_val_bpc),
        "bad_evals": state.bad_evals,
        "precision": run.precision,
        "device_type": run.device_type,
        "world_size": run.world_size,
        "created": time.time(),
    }
    if resume is not None:
        _encode_resume(resume, state, tensors, meta)
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if not math.isfinite(meta.get("train_loss_sum", 0.0)):
        bad.append("the running train loss")
    if bad:
        raise TrainingDiverged(
            f"{', '.join(bad[:3])}{' and more' if len(bad) > 3 else ''} became non-finite by step {state.step}: "
            f"not saved; try a lower --lr or a --grad-clip"
        )
    return tensors, meta


def _encode_resume(
    resume: ResumeParts, state: RunState, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    opt = resume.optimizer.state_dict()
    scalars = {}
    for pid, entry in opt["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    meta["optimizer"] = {"param_groups": opt["param_groups"], "scalars": scalars}
    meta["scaler"] = resume.scaler.state_dict() if resume.scaler.is_enabled() else None
    tensors["rng.torch"] = torch.get_rng_state()
    if resume.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(resume.device)
    if resume.hidden_state is not None:
        for i, part in enumerate(state_tensors(resume.hidden_state)):
            tensors[f"hidden.{i}"] = part
    meta["train_loss_sum"] = resume.train_loss_sum
    meta["train_loss_count"] = state.train_loss_count


class RunCheckpoint:
    """A checkpoint read back, decoded part by part. Content that does not describe a run
    (a key missing, a value of the wrong type) is a CheckpointError naming the file."""

    def __init__(self, path: Path, purpose: str = "a run"):
        self.path = Path(path)
        self.purpose = purpose  # what the content must describe, for the error message
        self.tensors, self.meta = load_checkpoint(self.path)
        self._model_cfg: ModelConfig | None = None

    @contextmanager
    def _decoding(self) -> Iterator[None]:
        try:
            yield
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{self.path}: checkpoint content does not describe {self.purpose} ({exc!r})"
            ) from None

    def model_config(self) -> ModelConfig:
        """The network's sizes, once the tensors are checked to be the network they describe."""
        if self._model_cfg is None:
            with self._decoding():
                try:
                    cfg = ModelConfig.from_dict(self.meta["model"])
                except ConfigError as exc:  # sizes read from a file, not options the user gave
                    raise ValueError(str(exc)) from None
            self._check_weights(cfg)
            self._model_cfg = cfg
        return self._model_cfg

    def _check_weights(self, cfg: ModelConfig) -> None:
        """Nothing is built or loaded from weights that are not the network the metadata describes."""
        sizes = (cfg.cell, cfg.vocab_size, cfg.embed_size, cfg.hidden_size, cfg.num_layers, cfg.tie_weights)
        problem = weights_mismatch(sizes, self.weights())
        if problem:
            raise CheckpointError(f"{self.path}: {problem}")
        _check_finite(self.path, self.weights())

    def train_config(self, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """The run's training settings; `overrides` (the limits a resume may change) win."""
        with self._decoding():
            return TrainConfig.from_dict({**self.meta["train"], **(overrides or {})})

    def tokenizer(self) -> Tokenizer:
        blob = self.tensors.get("tokenizer.model")
        with self._decoding():
            tokenizer = tokenizer_from_state(self.meta["tokenizer"], None if blob is None else blob.numpy().tobytes())
        model_vocab = self.model_config().vocab_size
        if tokenizer.vocab_size != model_vocab:  # ids beyond either would index past the other
            raise CheckpointError(
                f"{self.path}: checkpoint content does not describe {self.purpose} "
                f"(a vocabulary of {tokenizer.vocab_size} for a model of {model_vocab})"
            )
        return tokenizer

    def weights(self) -> dict[str, torch.Tensor]:
        """The network's state dict."""
        return {k[len("model.") :]: v for k, v in self.tensors.items() if k.startswith("model.")}

    @property
    def resumable(self) -> bool:
        return "optimizer" in self.meta

    @property
    def world_size(self) -> int:
        """How many processes wrote the run (each with train.batch_size streams)."""
        return int(self.meta.get("world_size", 1))

    def state(self) -> RunState:
        meta = self.meta
        with self._decoding():
            return RunState(
                step=int(meta["step"]),
                elapsed=float(meta["elapsed"]),
                best_val_loss=_from_json_float(meta.get("best_val_loss")),
                best_val_bpc=_from_json_float(meta.get("best_val_bpc")),
                last_val_bpc=_from_json_float(meta.get("val_bpc")),
                bad_evals=int(meta.get("bad_evals", 0)),
                train_loss_sum=float(meta.get("train_loss_sum", 0.0)),
                train_loss_count=int(meta.get("train_loss_count", 0)),
            )

    def restore_optimizer(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        if not self.resumable:
            raise CheckpointError(
                "this checkpoint holds weights only (a best.safetensors?); --resume needs last.safetensors"
            )
        state: dict[int, dict[str, Any]] = {}
        params = [p for group in optimizer.param_groups for p in group["params"]]
        with self._decoding():
            for name, value in self.tensors.items():
                if name.startswith("optim."):
                    pid, key = name[len("optim.") :].split(".", 1)
                    if not 0 <= int(pid) < len(params) or value.dim() and value.shape != params[int(pid)].shape:
                        raise ValueError(f"optimiser state {name} does not fit the network")
                    state.setdefault(int(pid), {})[key] = value
            _check_finite(self.path, {k: v for k, v in self.tensors.items() if k.startswith("optim.")})
            for name, value in self.meta["optimizer"].get("scalars", {}).items():
                pid, key = name.split(".", 1)
                state.setdefault(int(pid), {})[key] = value
            optimizer.load_state_dict({"state": state, "param_groups": self.meta["optimizer"]["param_groups"]})
        if self.meta.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(self.meta["scaler"])

    def restore_rng(self, device: torch.device) -> None:
        saved, now = self.tensors.get("rng.torch"), torch.get_rng_state()
        if saved is None or saved.dtype != now.dtype or saved.shape != now.shape:
            raise CheckpointError(f"{self.path}: no usable random generator state (rng.torch): cannot resume it")
        torch.set_rng_state(saved)
        if "rng.cuda" in self.tensors and device.type == "cuda":
            try:
                torch.cuda.set_rng_state(self.tensors["rng.cuda"], device)
            except RuntimeError:
                raise CheckpointError(f"{self.path}: no usable random generator state (rng.cuda)") from None

    def hidden_state(self, cell: str) -> HiddenState | None:
        """Every stream's carried state as saved (on the CPU), or None when none was saved."""
        parts = [self.tensors[f"hidden.{i}"] for i in range(2) if f"hidden.{i}" in self.tensors]
        if not parts:
            return None
        cfg = self.model_config()
        shape = parts[0].shape
        fits = len(parts) == (2 if cell == "lstm" else 1) and all(p.shape == shape for p in parts)
        if not fits or len(shape) != 3 or (shape[0], shape[2]) != (cfg.num_layers, cfg.hidden_size):
            raise CheckpointError(
                f"{self.path}: the saved hidden state {[tuple(p.shape) for p in parts]} does not fit the network"
            )
        _check_finite(self.path, {f"hidden.{i}": p for i, p in enumerate(parts)})
        return state_from_tensors(parts, cell)


class LoadedModel:
    """A model ready to sample or evaluate, with its tokenizer and the checkpoint's metadata."""

    def __init__(self, path: Path, model: RNNLanguageModel, tokenizer: Tokenizer, meta: dict[str, Any]):
        self.path, self.model, self.tokenizer, self.meta = path, model, tokenizer, meta


def load_model(path: Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Build the network and tokenizer a checkpoint describes; weights land on `device`
    (a GPU-trained checkpoint loads on a CPU with no conversion)."""
    checkpoint = RunCheckpoint(path, purpose="a usable model")
    tokenizer = checkpoint.tokenizer()
    try:
        model = RNNLanguageModel(**checkpoint.model_config().to_dict())  # checked by tokenizer()
        model.load_state_dict(checkpoint.weights())
    except (RuntimeError, ValueError) as exc:  # ConfigError is a ValueError
        raise CheckpointError(f"{path}: checkpoint content does not describe a usable model ({exc})") from None
    model.to(device).eval()
    return LoadedModel(Path(path), model, tokenizer, checkpoint.meta)


def _check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: {name} holds values that are not finite (NaN or infinite)")


def _json_float(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _from_json_float(x: Any) -> float:
    return math.inf if x is None else float(x)
