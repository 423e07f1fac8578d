"""Memorisation: how much of a text a run copied verbatim from its training text.

Only the training split counts: validation text was held out, so a span found only there was not
learnt by heart. The run's corpus is found again by the name its checkpoint records (a ready
corpus, or a path that still exists) or by `corpus=`, and must have the sha256 the checkpoint
records. The suffix array over its training text is built once and cached beside the token-id
cache (`copies/` next to `ids/`), keyed by the corpus digest and the split settings, as raw
bytes and a .npy file read with allow_pickle=False.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..atomic import make_dirs, write_atomic
from ..errors import ConfigError, CorpusError
from .index import CopyIndex, Origin, TextCopies, TrainingText, build_index, find_copies, longest_copy

__all__ = ["CopyIndex", "Origin", "TextCopies", "TrainingText", "build_index", "find_copies", "longest_copy"]
__all__ += [
    "CappedDraw",
    "check_max_copy",
    "draw_capped",
    "check_min_span",
    "training_text",
    "run_index",
    "index_of",
    "DEFAULT_MIN_SPAN",
]

DEFAULT_MIN_SPAN = 20
INDEX_VERSION = 1


def check_min_span(min_span: int) -> None:
    if min_span < 1:
        raise ConfigError(f"--min-span must be at least 1 character (got {min_span})")


def _find_run_corpus(meta: dict[str, Any], path: Path, corpus: str | None, log: Callable[[str], None]) -> Any:
    """The corpus bytes the run was trained on: `corpus` when given, else the recorded name as a
    path or a ready corpus already materialised (never downloaded)."""
    from ..data.corpora import catalogue, corpora_dir, find_corpus, mirror_dirs, resolve_corpus

    if corpus is not None:
        return resolve_corpus(corpus, log)
    name = str(meta.get("corpus") or "")
    if not name:
        raise CorpusError(f"{path}: the checkpoint names no corpus; give it with --corpus PATH")
    if Path(name).exists():
        return resolve_corpus(name, log)
    if name in catalogue() and find_corpus(name) is not None:
        return resolve_corpus(name, log)
    looked = ", ".join(str(d) for d in [Path(name).resolve(), corpora_dir().resolve(), *mirror_dirs()])
    fetch = f"`charrnn corpus get {name}`, or " if name in catalogue() else ""
    raise CorpusError(
        f"{path}: cannot find its training corpus {name!r} (looked in {looked}); {fetch}give it with --corpus PATH"
    )


def training_text(
    loaded: Any, corpus: str | None = None, *, encoding: str = "utf-8", log: Callable[[str], None] = lambda _: None
) -> TrainingText:
    """The training split of the corpus `loaded` (a LoadedModel) was trained on, digest checked."""
    from ..data.split import held_out, split_text
    from ..data.tokens import decode_corpus, file_texts
    from ..evaluation import train_settings

    found = _find_run_corpus(loaded.meta, loaded.path, corpus, log)
    expected = loaded.meta.get("corpus_sha256")
    if expected and found.digest != expected:
        raise CorpusError(
            f"{found.source} is not the corpus {loaded.path} was trained on "
            f"(sha256 {found.digest[:12]}..., the run's is {expected[:12]}...); give the right one with --corpus PATH"
        )
    cfg = train_settings(loaded)
    files = file_texts(found, encoding)
    split = split_text(decode_corpus(found, encoding), cfg.val_frac, cfg.val_split, files)
    text = TrainingText(found.name, found.digest, split.train.encode("utf-8", "surrogatepass"), how=split.how)
    if split.how == "documents" and files is not None and len(files) >= 2:
        names = _file_names(found, len(files))
        kept = [i for i, f in enumerate(files) if not held_out(f, cfg.val_frac)]
        offset = 0
        for i in kept:
            text.doc_starts.append(offset)
            text.doc_names.append(names[i])
            offset += len(files[i].encode("utf-8", "surrogatepass")) + 2  # DOCUMENT_SEPARATOR
    return text


def _file_names(found: Any, count: int) -> list[str]:
    """Each file's path inside a directory corpus; 'file K' where the corpus keeps no names."""
    from ..data.source_tree import read_tree

    source = Path(found.source)
    if source.is_dir():
        paths = read_tree(source, "utf-8").paths
        if len(paths) == count:
            return paths
    return [f"file {k + 1} of {count}" for k in range(count)]


def index_dir() -> Path:
    """Beside the token-id cache (data/tokens.py cache_dir: .../ids): .../copies."""
    from ..data.tokens import cache_dir

    return cache_dir().parent / "copies"


def _key(text: TrainingText) -> str:
    raw = json.dumps([INDEX_VERSION, text.digest, hashlib.sha256(text.data).hexdigest()])
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def index_of(text: TrainingText, *, use_cache: bool = True, log: Callable[[str], None] = lambda _: None) -> CopyIndex:
    """The suffix array of `text`, from the cache when it was built before (else built and cached,
    best effort: a cache that cannot be written only costs the next call its head start)."""
    folder, key = index_dir(), _key(text)
    sa_path = folder / f"{key}.sa.npy"
    if use_cache:
        try:
            suffixes = np.load(sa_path, mmap_mode="c", allow_pickle=False)  # copy-on-write: ctypes wants writable
            if suffixes.shape == (len(text.data),):
                return CopyIndex(text, suffixes)
        except (OSError, ValueError):
            pass
    log(f"indexing {len(text.data) / 1e6:.1f} MB of training text of {text.name} (once; cached in {folder})")
    index = build_index(text)
    if use_cache:
        try:
            make_dirs(folder)
            write_atomic(sa_path, lambda f: np.save(f, index.suffixes, allow_pickle=False), durable=False)
        except OSError as exc:
            log(f"note: index not cached ({exc})")
    return index


def run_index(
    loaded: Any, corpus: str | None = None, *, encoding: str = "utf-8", log: Callable[[str], None] = lambda _: None
) -> CopyIndex:
    """The index of the training text of a loaded run (see `training_text`, `index_of`)."""
    return index_of(training_text(loaded, corpus, encoding=encoding, log=log), log=log)


@dataclass
class CappedDraw:
    """How a draw under --max-copy went: samples drawn, kept, and the spans that redrew the others."""

    asked: int
    max_copy: int
    max_attempts: int
    drawn: int = 0
    kept: list[str] = field(default_factory=list)
    redrawn: list[int] = field(default_factory=list)  # the longest copy of each sample redrawn

    def summary(self) -> str:
        """'redrew 3 of 5 samples: each copied more than 40 characters of the training text (longest 212)'."""
        if not self.redrawn:
            return f"no sample copied more than {self.max_copy} characters of the training text"
        return (
            f"redrew {len(self.redrawn)} of {self.drawn} samples drawn: each copied more than {self.max_copy} "
            f"characters of the training text verbatim (longest {max(self.redrawn)})"
        )


def check_max_copy(max_copy: int) -> None:
    if max_copy < 0:
        raise ConfigError(f"--max-copy must be 0 or more characters (got {max_copy})")


def draw_capped(draw_one: Callable[[], str], index: CopyIndex, draw: CappedDraw, skip: int = 0) -> Iterator[str]:
    """Yield `draw.asked` texts from `draw_one` whose longest copy from the training text is at
    most `draw.max_copy` characters, redrawing the others, until `draw.max_attempts` were drawn
    (`draw` counts how it went). The first `skip` characters (a prime the user gave) are not checked."""
    while len(draw.kept) < draw.asked and draw.drawn < draw.max_attempts:
        text = draw_one()
        draw.drawn += 1
        longest = longest_copy(index, text[skip:])
        if longest > draw.max_copy:
            draw.redrawn.append(longest)
            continue
        draw.kept.append(text)
        yield text
