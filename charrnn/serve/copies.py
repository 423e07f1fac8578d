"""Each served sample's longest copy from its model's training text (`charrnn copies`'s library).

The index of a model's training text is built on the first request that needs it, on a worker
thread, once however many requests ask at the same time; it is kept while the model stays loaded
(and cached on disk as `charrnn copies` caches it, so a restarted server reads it back). A run
whose corpus cannot be found gets a one-line note saying where it was looked for, and no index:
the next request looks again (the corpus may have been put back).
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from ..errors import CharRNNError

if TYPE_CHECKING:
    from ..checkpoint import LoadedModel
    from ..copies import CopyIndex

# What the page says instead of "give it with --corpus PATH": a server cannot be given one per run.
SERVE_FIX = "put it back there, or check a saved sample with `charrnn copies RUN FILE --corpus PATH`"


class CopyIndexes:
    """The copy index of each loaded model, built lazily, kept as long as the model is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built: weakref.WeakKeyDictionary[LoadedModel, CopyIndex] = weakref.WeakKeyDictionary()
        self._building: weakref.WeakKeyDictionary[LoadedModel, threading.Lock] = weakref.WeakKeyDictionary()

    def index(self, loaded: LoadedModel) -> CopyIndex:
        """The index of `loaded`'s training text (a CorpusError when its corpus cannot be found)."""
        from ..copies import index_of, training_text

        with self._lock:
            if loaded in self._built:
                return self._built[loaded]
            building = self._building.setdefault(loaded, threading.Lock())
        with building:  # two first requests for one model build its index once
            with self._lock:
                if loaded in self._built:
                    return self._built[loaded]
            index = index_of(training_text(loaded, fix=SERVE_FIX))
            with self._lock:
                self._built[loaded] = index
        return index

    def built_count(self) -> int:
        return len(self._built)


def sample_copies(indexes: CopyIndexes, loaded: LoadedModel, text: str) -> dict[str, Any]:
    """What `charrnn copies --json` says of `text` (without its source), the copied span itself as
    `longest_text` and the `min_span` of `copied_share`; or {"error": one line} when the model's
    training text cannot be had."""
    from ..copies import DEFAULT_MIN_SPAN, find_copies

    try:
        index = indexes.index(loaded)
    except (CharRNNError, OSError) as exc:
        return {"error": "not checked for copies of the training text: " + " ".join(str(exc).split())}
    found = find_copies(index, text, source="sample", min_span=DEFAULT_MIN_SPAN)
    figures = found.to_dict()
    del figures["source"]
    return {**figures, "min_span": DEFAULT_MIN_SPAN, "longest_text": found.longest_text}
