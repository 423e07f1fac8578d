"""The checkpoint container: named tensors plus JSON metadata in one safetensors file,
written atomically, checked on load. What the names and keys mean is checkpoint.py's business.

Loading never unpickles: the safetensors format holds raw tensor bytes and a JSON header only.

Integrity: a SHA-256 over the metadata and every tensor's bytes is stored in the header, so a
bit flip anywhere, or a truncated file, is reported as such instead of loading garbage.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .atomic import write_atomic
from .errors import CheckpointError

FORMAT = "charrnn-checkpoint"
FORMAT_VERSION = 1
BEST, LAST = "best.safetensors", "last.safetensors"


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _checksum(tensors: dict[str, torch.Tensor], meta_json: str) -> str:
    digest = hashlib.sha256(meta_json.encode("utf-8"))
    for name in sorted(tensors):
        t = tensors[name]
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(_tensor_bytes(t))
    return digest.hexdigest()


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write atomically: temporary file in the same directory, fsync, rename over the target.

    A crash at any moment leaves either the previous file or the new one, never half of one.
    """
    from safetensors.torch import save

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta_json = json.dumps(meta, sort_keys=True, allow_nan=False)
    header = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "charrnn": meta_json,
        "sha256": _checksum(tensors, meta_json),
    }
    payload = save(tensors, metadata=header)
    try:
        write_atomic(path, payload)
    except OSError as exc:
        raise CheckpointError(
            f"could not write checkpoint {path}: {exc.strerror or exc} (the previous checkpoint there is intact)"
        ) from None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors on CPU, metadata) of a charrnn checkpoint; CheckpointError for anything else."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a directory, not a checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    kind = _sniff(data)
    if kind:
        raise CheckpointError(f"{path} is {kind}, not a charrnn checkpoint (charrnn never unpickles files)")
    header = _read_header(path, data)
    meta_raw = header.get("__metadata__") or {}
    if not isinstance(meta_raw, dict) or meta_raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a charrnn checkpoint (no charrnn metadata)")
    try:
        version = int(meta_raw.get("format_version", ""))
    except (ValueError, TypeError):
        raise CheckpointError(f"{path}: unreadable format version {meta_raw.get('format_version')!r}") from None
    if version < 1:  # versions start at 1: anything lower is damage, not an old file
        raise CheckpointError(f"{path} is corrupted: impossible format version {version}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses checkpoint format {version}, newer than this charrnn reads ({FORMAT_VERSION}); upgrade charrnn"
        )
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is damaged: {exc}") from None
    meta_json = meta_raw.get("charrnn", "")
    if _checksum(tensors, meta_json) != meta_raw.get("sha256"):
        raise CheckpointError(f"{path} is corrupted: checksum mismatch (a damaged or partly written file)")
    try:
        meta = json.loads(meta_json)
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path} is corrupted: unreadable metadata") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a charrnn checkpoint: its metadata is not an object")
    return tensors, meta


def _sniff(data: bytes) -> str | None:
    if data[:2] == b"PK":
        return "a zip archive (a torch.save file holds pickled code)"
    if data[:1] == b"\x80" and len(data) > 1 and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    return None


def _read_header(path: Path, data: bytes) -> dict[str, Any]:
    if len(data) < 8:
        raise CheckpointError(f"{path} is not a checkpoint: too short ({len(data)} bytes)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        if size < 100_000_000 and data[8:9] == b"{":
            raise CheckpointError(f"{path} is truncated: the header promises more bytes than the file has")
        raise CheckpointError(f"{path} is not a safetensors checkpoint (unrecognised content)")
    try:
        header = json.loads(data[8 : 8 + size])
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # [[[[... nests past Python's stack
        raise CheckpointError(f"{path} is not a safetensors checkpoint, or its header is damaged") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors checkpoint (header is not an object)")
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (KeyError, IndexError, TypeError, ValueError):  # a damaged header can hold anything
        raise CheckpointError(f"{path} is corrupted: its header does not describe tensors") from None
    if ends and max(ends) > len(data) - 8 - size:
        raise CheckpointError(f"{path} is truncated: tensor data ends early")
    return header


@dataclass(frozen=True)
class CheckpointChoice:
    path: Path
    why: str | None  # how charrnn chose it; None when the user named the run or file


def choose_checkpoint(target: Path | None, root: Path = Path("checkpoints")) -> CheckpointChoice:
    """A checkpoint file; a run directory (its best, else its last); or, with no target, the
    best checkpoint of the most recently written run under `root`: the file, and why that one."""
    chosen_run = None
    if target is None:
        runs = [p for p in root.glob("*/") if (p / BEST).exists() or (p / LAST).exists()] if root.is_dir() else []
        if not runs:
            raise CheckpointError(f"no checkpoint found under ./{root}: train a model first (charrnn train CORPUS)")
        target = max(runs, key=lambda p: max((p / n).stat().st_mtime for n in (BEST, LAST) if (p / n).exists()))
        chosen_run = (
            f"the newest of {len(runs)} run{'s' * (len(runs) > 1)} under ./{root}; name a run to choose another"
        )
    target = Path(target)
    if target.is_dir():
        for name, which in ((BEST, "best validation"), (LAST, "last step (no best checkpoint yet)")):
            if (target / name).exists():  # a named run's best file is the documented choice: no note
                return CheckpointChoice(target / name, f"the {which} of {chosen_run}" if chosen_run else None)
        raise CheckpointError(f"no checkpoint in {target} (expected {BEST} or {LAST})")
    if not target.exists():
        raise CheckpointError(f"checkpoint not found: {target}")
    return CheckpointChoice(target, None)


def resolve_checkpoint(target: Path | None, root: Path = Path("checkpoints")) -> Path:
    """The checkpoint `choose_checkpoint` picks."""
    return choose_checkpoint(target, root).path


def checkpoint_info(path: Path) -> dict[str, Any]:
    """What a checkpoint holds, from its header and tensors, without building the model."""
    from safetensors import safe_open

    tensors, meta = load_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception:  # load_checkpoint just read it; a race with a writer is all that is left
        header = {}
    model = meta.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"{path}: no model description in the checkpoint")
    tok = _object(meta.get("tokenizer"))
    params = sum(t.numel() for name, t in tensors.items() if name.startswith("model."))
    train = _object(meta.get("train"))
    version = int(header.get("format_version", "0"))  # load_checkpoint has checked that it reads
    # Read from a file: a figure of the wrong type (or not finite) is shown as unknown.
    return {
        "path": str(path),
        "kind": meta.get("kind"),
        "architecture": {
            "cell": model.get("cell"),
            "layers": model.get("num_layers"),
            "hidden": model.get("hidden_size"),
            "embed": model.get("embed_size"),
            "dropout": model.get("dropout"),
            "tied": model.get("tie_weights") is True,  # absent before --tie-weights: untied
        },
        "parameters": params,
        "tokenizer": tok.get("kind"),
        "vocab_size": _count(model.get("vocab_size")),
        "corpus": meta.get("corpus"),
        "step": _count(meta.get("step")),
        "epoch": _number(meta.get("epoch")),
        "val_bpc": _number(meta.get("val_bpc")),
        "best_val_bpc": _number(meta.get("best_val_bpc")),
        "training_seconds": _number(meta.get("elapsed")),
        "seq_len": train.get("seq_len"),
        "batch_size": train.get("batch_size"),
        "precision": meta.get("precision"),
        "device_type": meta.get("device_type"),
        "charrnn_version": meta.get("charrnn_version"),
        "format_version": version,
        "resumable": "optimizer" in meta,
        "resumes_from": _resume_point(Path(path), meta),
        "file_bytes": Path(path).stat().st_size,
    }


def _resume_point(path: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """Where `--resume` on this file's run continues: this file when it holds the optimizer,
    else its run's last.safetensors (a best file is weights only); None when neither can."""
    if "optimizer" in meta:
        return {"path": str(path), "step": _count(meta.get("step"))}
    last = path.parent / LAST
    if path.name == LAST or not last.is_file():
        return None
    try:
        last_meta = load_checkpoint(last)[1]
    except CheckpointError:  # a damaged last file resumes nothing
        return None
    return {"path": str(last), "step": _count(last_meta.get("step"))} if "optimizer" in last_meta else None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok and abs(value) < 1e15 else None
