"""The models a server offers: found under one directory, named by their path inside it, loaded once.

A request names a model; it never names a file. The name is looked up in the table this module
builds by walking the served directory (symbolic links are neither followed nor listed), so no
string from a client is ever joined to a path. Before a file is read, its real path is checked
once more to lie inside the served directory (a file replaced by a link after the walk is refused).
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import BEST, LAST, LoadedModel, load_model
from ..errors import CharRNNError, CheckpointError, ConfigError

SUFFIX = ".safetensors"
MAX_DEPTH = 4  # runs nested deeper than this under the served directory are not listed


class UnknownModel(CharRNNError):
    """A request named a model that the served directory does not hold."""


@dataclass(frozen=True)
class ModelEntry:
    name: str  # the path inside the served directory, "/"-separated: what the API calls the model
    path: Path  # the checkpoint file it loads: a run's best, else its last


def _is_run(directory: Path) -> bool:
    return any((directory / n).is_file() and not (directory / n).is_symlink() for n in (BEST, LAST))


def _run_checkpoint(directory: Path) -> Path:
    for name in (BEST, LAST):
        if (directory / name).is_file() and not (directory / name).is_symlink():
            return directory / name
    raise CheckpointError(f"no checkpoint in {directory}")


class ModelRegistry:
    """The runs and loose checkpoint files under `target` (a directory of runs), or just `target`
    (one run directory or one checkpoint file, then named inside its parent). At most
    `max_loaded` models stay in memory, the least recently used leaving first."""

    def __init__(self, target: Path, max_loaded: int = 4):
        target = Path(target)
        if not target.exists():
            raise ConfigError(f"nothing to serve at {target}: give a directory of runs, a run or a checkpoint")
        if max_loaded < 1:
            raise ConfigError(f"--max-models must be at least 1 (got {max_loaded})")
        real = target.resolve()
        self.root: Path
        self.only: str | None  # the one run or checkpoint served, when `target` names one
        if real.is_file() or _is_run(real):
            self.root, self.only = real.parent, real.name
        else:
            self.root, self.only = real, None
        self.max_loaded = max_loaded
        self._lock = threading.Lock()
        self._loaded: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        self._info: dict[tuple[str, int], dict[str, Any]] = {}
        self._entries: dict[str, ModelEntry] = {}
        self.scan()

    # ------------------------------------------------------------------ finding models

    def scan(self) -> dict[str, ModelEntry]:
        """Walk the served directory again (new runs appear, deleted ones leave)."""
        found: dict[str, ModelEntry] = {}
        if self.only is not None:
            path = self.root / self.only
            if not path.is_symlink() and (path.is_file() or _is_run(path)):
                found[self.only] = ModelEntry(self.only, path if path.is_file() else _run_checkpoint(path))
        else:
            for here, dirs, files in os.walk(self.root, followlinks=False):
                base = Path(here)
                rel = base.relative_to(self.root)
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and len(rel.parts) < MAX_DEPTH)
                if _is_run(base):
                    name = rel.as_posix()
                    found[name] = ModelEntry(name, _run_checkpoint(base))
                    continue
                for file in sorted(files):
                    path = base / file
                    if file.endswith(SUFFIX) and not file.startswith(".") and not path.is_symlink():
                        name = (rel / file).as_posix()
                        found[name] = ModelEntry(name, path)
        with self._lock:
            self._entries = dict(sorted(found.items()))
        return self._entries

    def find(self, name: str) -> ModelEntry:
        entry = self._entries.get(name) or self.scan().get(name)
        if entry is None:
            raise UnknownModel(f"unknown model {name!r}: GET /api/models lists the models served")
        return entry

    def checked_path(self, entry: ModelEntry) -> Path:
        """The entry's file, after making sure that what is there now is a plain file inside the root."""
        path = entry.path
        real = Path(os.path.realpath(path))
        if path.is_symlink() or not real.is_relative_to(self.root) or real != path:
            raise UnknownModel(f"model {entry.name!r} is no longer a plain file inside the served directory")
        return real

    # ------------------------------------------------------------------ describing and loading

    def models(self) -> list[dict[str, Any]]:
        """Every model with its info (read from the checkpoint's header only: no weights loaded)."""
        return [{"name": e.name, **self.info(e)} for e in self.scan().values()]

    def info(self, entry: ModelEntry) -> dict[str, Any]:
        try:
            path = self.checked_path(entry)
            key = (str(path), path.stat().st_mtime_ns)
        except (OSError, CharRNNError) as exc:
            return {"error": str(exc)}
        if key not in self._info:
            if len(self._info) > 10_000:  # files rewritten over a long uptime: forget the old ones
                self._info.clear()
            self._info[key] = _header_info(path)
        return self._info[key]

    def load(self, name: str) -> LoadedModel:
        """The model, loaded on first use and kept (the least recently used one leaves beyond the bound)."""
        entry = self.find(name)
        path = self.checked_path(entry)
        key = (str(path), path.stat().st_mtime_ns)  # a retrained run (a newer file) is loaded again
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # two first requests for one model load it once
            with self._lock:
                if key in self._loaded:
                    return self._loaded[key]
            loaded = load_model(path)
            with self._lock:
                self._loaded[key] = loaded
                while len(self._loaded) > self.max_loaded:
                    self._loaded.popitem(last=False)
                self._loading.pop(key, None)
        return loaded

    def loaded_count(self) -> int:
        return len(self._loaded)


def _header_info(path: Path) -> dict[str, Any]:
    """Cell, size, corpus and bpc from the safetensors header (JSON; the tensors are not read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            params = 0
            for key in f.keys():
                if key.startswith("model."):
                    count = 1
                    for dim in f.get_slice(key).get_shape():
                        count *= dim
                    params += count
        meta = json.loads(header.get("charrnn", ""))
        model = meta["model"]
    except Exception as exc:  # any damage: the model is listed with the reason it cannot be used
        return {"error": f"not a usable charrnn checkpoint ({type(exc).__name__})"}
    bpc = meta.get("val_bpc") if meta.get("val_bpc") is not None else meta.get("best_val_bpc")
    corpus = str(meta.get("corpus") or "")
    return {
        "cell": model.get("cell"),
        "size": f"{model.get('num_layers')}x{model.get('hidden_size')}",
        "parameters": params,
        "corpus": corpus,
        "bpc": round(bpc, 4) if isinstance(bpc, (int, float)) else None,
        "step": meta.get("step"),
        "tokenizer": (meta.get("tokenizer") or {}).get("kind"),
        "abc": "abc" in corpus.lower(),  # the page draws and plays tunes for these
    }
