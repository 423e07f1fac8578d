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
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..atomic import make_dirs, write_atomic
from ..errors import ConfigError, CorpusError
from .index import CopyIndex, Origin, TextCopies, TrainingText, build_index, find_copies, longest_copy

__all__ = ["CopyIndex", "Origin", "TextCopies", "TrainingText", "build_index", "find_copies", "longest_copy"]
__all__ += [
    "CappedDraw",
    "CopyLimit",
    "check_max_copy",
    "draw_capped",
    "keep_capped",
    "check_min_span",
    "training_text",
    "run_index",
    "index_of",
    "DEFAULT_MIN_SPAN",
]

DEFAULT_MIN_SPAN = 20
INDEX_VERSION = 1
CLI_FIX = "give it with --corpus PATH"  # how a user of `charrnn copies` points at a corpus that moved


def check_min_span(min_span: int) -> None:
    if min_span < 1:
        raise ConfigError(f"--min-span must be at least 1 character (got {min_span})")


def _find_run_corpus(
    meta: dict[str, Any], path: Path, corpus: str | None, log: Callable[[str], None], fix: str = CLI_FIX
) -> Any:
    """The corpus bytes the run was trained on: `corpus` when given, else the recorded name as a
    path or a ready corpus already materialised (never downloaded). `fix` ends the messages."""
    from ..data.corpora import catalogue, corpora_dir, find_corpus, mirror_dirs, resolve_corpus

    if corpus is not None:
        return resolve_corpus(corpus, log)
    name = str(meta.get("corpus") or "")
    if not name:
        raise CorpusError(f"{path}: the checkpoint names no corpus; {fix}")
    if Path(name).exists():
        return resolve_corpus(name, log)
    if name in catalogue() and find_corpus(name) is not None:
        return resolve_corpus(name, log)
    looked = ", ".join(str(d) for d in [Path(name).resolve(), corpora_dir().resolve(), *mirror_dirs()])
    fetch = f"`charrnn corpus get {name}`, or " if name in catalogue() else ""
    raise CorpusError(f"{path}: cannot find its training corpus {name!r} (looked in {looked}); {fetch}{fix}")


def training_text(
    loaded: Any,
    corpus: str | None = None,
    *,
    encoding: str = "utf-8",
    log: Callable[[str], None] = lambda _: None,
    fix: str = CLI_FIX,
) -> TrainingText:
    """The training split of the corpus `loaded` (a LoadedModel) was trained on, digest checked.
    A corpus not found (or not the run's) is a CorpusError saying where it looked, ending with `fix`."""
    from ..data.split import held_out, split_text
    from ..data.tokens import decode_corpus, file_texts
    from ..evaluation import train_settings

    found = _find_run_corpus(loaded.meta, loaded.path, corpus, log, fix)
    expected = loaded.meta.get("corpus_sha256")
    if expected and found.digest != expected:
        raise CorpusError(
            f"{found.source} is not the corpus {loaded.path} was trained on "
            f"(sha256 {found.digest[:12]}..., the run's is {expected[:12]}...); {fix}"
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
    """How a draw under --max-copy went: texts drawn, kept, and the spans that redrew the others.
    `what` names the texts in messages: samples, tunes or documents."""

    asked: int
    max_copy: int
    max_attempts: int
    what: str = "samples"
    drawn: int = 0
    kept: list[str] = field(default_factory=list)
    redrawn: list[int] = field(default_factory=list)  # the longest copy of each text redrawn

    def summary(self) -> str:
        """'redrew 3 of 5 samples drawn: each copied more than 40 characters of the training text verbatim (longest 212)'."""
        if not self.redrawn:
            return f"no {self.what[:-1]} copied more than {self.max_copy} characters of the training text"
        return (
            f"redrew {len(self.redrawn)} of {self.drawn} {self.what} drawn: each copied more than {self.max_copy} "
            f"characters of the training text verbatim (longest {max(self.redrawn)})"
        )

    def shortfall(self) -> str:
        """The one-line error when fewer than asked were kept."""
        return (
            f"only {len(self.kept)} of {self.asked} {self.what} copied at most {self.max_copy} characters "
            f"in {self.drawn} drawn: raise --max-copy, or sample hotter (--temp)"
        )


def check_max_copy(max_copy: int) -> None:
    if max_copy < 0:
        raise ConfigError(f"--max-copy must be 0 or more characters (got {max_copy})")


@dataclass
class CopyLimit:
    """`--max-copy N` against one run's training text: a text copying more than N characters is redrawn."""

    index: CopyIndex
    max_copy: int

    def filtered(self, texts: Iterable[str], on_copy: Callable[[int], None], skip: int = 0) -> Iterator[str]:
        """The texts whose longest copy (past their first `skip` characters) is at most max_copy;
        `on_copy` hears the longest copy of each one left out."""
        for text in texts:
            longest = longest_copy(self.index, text[skip:])
            if longest > self.max_copy:
                on_copy(longest)
            else:
                yield text


def keep_capped(texts: Iterable[str], limit: CopyLimit, draw: CappedDraw, skip: int = 0) -> Iterator[str]:
    """Yield texts from `texts` whose longest copy from the training text is at most
    `limit.max_copy` characters, leaving out the others, until `draw.asked` were kept or
    `draw.max_attempts` were drawn (`draw` counts how it went). The first `skip` characters
    (a prime the user gave) are not checked."""

    def counted() -> Iterator[str]:
        source = iter(texts)
        while len(draw.kept) < draw.asked and draw.drawn < draw.max_attempts:  # checked before each draw
            text = next(source, None)
            if text is None:
                return
            draw.drawn += 1
            yield text

    for text in limit.filtered(counted(), draw.redrawn.append, skip):
        draw.kept.append(text)
        yield text
        if len(draw.kept) >= draw.asked:
            return


def draw_capped(draw_one: Callable[[], str], index: CopyIndex, draw: CappedDraw, skip: int = 0) -> Iterator[str]:
    """`keep_capped` over texts drawn one at a time by `draw_one`."""
    drawn = (draw_one() for _ in itertools.count())
    yield from keep_capped(drawn, CopyLimit(index, draw.max_copy), draw, skip)
