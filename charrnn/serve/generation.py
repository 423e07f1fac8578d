"""Generation requests: checked field by field, then sampled on worker threads and streamed back.

Sampling is plain blocking torch code, so it runs on a fixed pool of threads, never on the event
loop; pieces travel to the loop through an asyncio queue. At most `workers` generations run and
`queue` more wait; past that a request is refused at once (503) rather than left hanging. A client
that goes away sets the generation's cancel flag, which the worker reads after every piece, so its
thread is free again one step later. Pieces are sent at most every 20 ms, joined: a reader cannot
tell, and neither the event loop nor the client wakes once per character.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator

from ..errors import CharRNNError

if TYPE_CHECKING:
    from ..checkpoint import LoadedModel

SEED_RANGE = (-(2**63), 2**63 - 1)
FLUSH_SECONDS = 0.02  # text produced within this long after the last event waits for the next one


class BadRequest(CharRNNError):
    """A request the server will not run: answered 4xx with this message."""

    status = 400


class Busy(CharRNNError):
    """Every worker is busy and the queue is full: answered 503."""


@dataclass(frozen=True)
class Limits:
    max_length: int = 10_000  # characters generated per request
    max_prime: int = 10_000  # characters of prime
    max_text: int = 5_000  # characters of text scored for surprise colouring
    max_tune: int = 20_000  # characters of one ABC tune (checker, MIDI)


@dataclass(frozen=True)
class GenerateRequest:
    model: str
    prime: str = ""
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    length: int = 500
    seed: int | None = None
    stop: str | None = None


def _number(body: dict[str, Any], key: str, default: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{key} must be a number (got {value!r})")
    if not math.isfinite(value):
        raise BadRequest(f"{key} must be a finite number (got {value})")
    return float(value)


def _integer(body: dict[str, Any], key: str, default: int | None) -> int | None:
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{key} must be a whole number (got {value!r})")
    return value


def _whole(body: dict[str, Any], key: str, default: int) -> int:
    """A whole number that must be there when given: null is as wrong as any other non-number."""
    value = _integer(body, key, default)
    if value is None:
        raise BadRequest(f"{key} must be a whole number (got None)")
    return value


def _text(body: dict[str, Any], key: str, default: str | None, cap: int) -> str | None:
    value = body.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string (got {type(value).__name__})")
    if len(value) > cap:
        raise BadRequest(f"{key} is {len(value)} characters long; the most this server takes is {cap}")
    return value


def check_fields(body: Any, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r} (fields: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(body))
    if missing:
        raise BadRequest(f"missing field {missing[0]!r}")
    return body


def parse_generate(body: Any, limits: Limits) -> GenerateRequest:
    """The request's fields, each checked, with one clear message for the first one that is wrong."""
    fields = {"model", "prime", "temperature", "top_k", "top_p", "length", "seed", "stop"}
    body = check_fields(body, fields, {"model"})
    model = _text(body, "model", None, 1000)
    temperature = _number(body, "temperature", 0.8)
    if temperature < 0:
        raise BadRequest(f"temperature must be >= 0 (got {temperature:g}); 0 always picks the most likely character")
    top_k = _whole(body, "top_k", 0)
    if top_k < 0:
        raise BadRequest(f"top_k must be >= 0 (got {top_k}); 0 keeps every character")
    top_p = _number(body, "top_p", 1.0)
    if not 0 < top_p <= 1:
        raise BadRequest(f"top_p must be in (0, 1] (got {top_p:g})")
    length = _whole(body, "length", 500)
    if not 0 <= length <= limits.max_length:
        raise BadRequest(f"length must be between 0 and {limits.max_length} (got {length})")
    seed = _integer(body, "seed", None)
    if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise BadRequest(f"seed must fit in 64 bits (got {seed})")
    stop = _text(body, "stop", None, 1000)
    if stop == "":
        stop = None  # an empty stop field on the page means no stop string
    prime = _text(body, "prime", "", limits.max_prime)
    if prime is None:
        raise BadRequest("prime must be a string (got NoneType)")
    return GenerateRequest(model or "", prime, temperature, top_k, top_p, length, seed, stop)


def sample_pieces(loaded: LoadedModel, request: GenerateRequest, seed: int) -> Iterator[str]:
    """The text `charrnn sample --seed SEED` prints for these settings, piece by piece (prime first)."""
    import torch

    from ..config import SampleConfig
    from ..sample import generate

    generator = torch.Generator().manual_seed(seed)
    cfg = SampleConfig(
        temperature=request.temperature,
        top_k=request.top_k,
        top_p=request.top_p,
        length=request.length,
        seed=seed,
        stop=request.stop,
    )
    return generate(loaded.model, loaded.tokenizer, cfg, prime=request.prime, generator=generator)


class WorkerPool:
    """A fixed number of sampling threads and a bounded number of waiting requests."""

    def __init__(self, workers: int = 8, queue: int = 8):
        if workers < 1 or queue < 0:
            raise CharRNNError(f"--workers must be >= 1 and --queue >= 0 (got {workers}, {queue})")
        self.workers, self.queue = workers, queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="charrnn-serve")
        self._lock = threading.Lock()
        self._taken = 0

    @property
    def taken(self) -> int:
        """Requests running or waiting."""
        return self._taken

    def reserve(self) -> None:
        """Take a place (running or waiting), or raise Busy; `release` gives it back."""
        with self._lock:
            if self._taken >= self.workers + self.queue:
                raise Busy(
                    f"the server is busy: {self.workers} generations are running and {self.queue} waiting; "
                    "try again in a moment"
                )
            self._taken += 1

    def release(self) -> None:
        with self._lock:
            self._taken -= 1

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on a worker (its place already reserved); the place is given back when it ends."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        finally:
            self.release()

    def start(self, pieces: Callable[[], Iterator[str]]) -> Generation:
        """Hand `pieces` (its place already reserved) to a worker now; the place is given back when
        it ends, whether or not anyone ever reads its events."""
        generation = Generation(asyncio.get_running_loop())
        self._executor.submit(generation.run, pieces, self.release)
        return generation

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class Generation:
    """One generation on a worker thread: its events for the event loop, and a way to stop it."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop after the current piece (or before starting, if it still waits for a worker)."""
        self._cancelled.set()

    def _send(self, kind: str, value: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop has closed: nobody is listening any more
            self._cancelled.set()

    def run(self, pieces: Callable[[], Iterator[str]], release: Callable[[], None]) -> None:
        """The worker's side: sample, sending text at most every FLUSH_SECONDS, then the figures."""
        final: tuple[str, Any] | None = None
        try:
            if self._cancelled.is_set():  # the client left while this request waited for a worker
                return
            started, produced, last_sent = time.perf_counter(), 0, 0.0
            pending: list[str] = []
            for piece in pieces():
                pending.append(piece)
                produced += len(piece)
                if self._cancelled.is_set():
                    return
                # At most one event per FLUSH_SECONDS: a reader sees no difference, and the loop
                # thread (and the client) wake 50 times a second, not once per character.
                now = time.perf_counter()
                if now - last_sent >= FLUSH_SECONDS:
                    self._send("text", "".join(pending))
                    pending.clear()
                    last_sent = now
            if pending:
                self._send("text", "".join(pending))
            final = ("done", {"characters": produced, "seconds": time.perf_counter() - started})
        except CharRNNError as exc:
            final = ("error", str(exc))
        except Exception as exc:  # a bug; the stream says so instead of ending without a word
            final = ("error", f"generation failed: {type(exc).__name__}: {exc}")
        finally:
            # The place is given back before the last event goes out, so a client that has read
            # the whole stream never finds the server still counting its request.
            release()
            if final is not None:
                self._send(*final)

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        """("text", piece)... then ("done", figures) or ("error", message). Leaving early cancels."""
        try:
            while True:
                kind, value = await self._events.get()
                # Text that piled up while the loop was busy goes out as one event.
                while kind == "text" and not self._events.empty():
                    more_kind, more = self._events.get_nowait()
                    if more_kind != "text":
                        yield kind, value
                        kind, value = more_kind, more
                        break
                    value += more
                yield kind, value
                if kind != "text":
                    return
        finally:
            self.cancel()
