"""The web application: the page, its static files, and the JSON/event-stream API.

Server-sent events are written by hand on Starlette's StreamingResponse: every event is one
`data:` line of compact JSON (JSON escapes newlines), so the framing is two lines and needs no
library; `EventStream` closes the body generator whatever ends the response, which is what tells
the worker to stop.
"""

from __future__ import annotations

import html
import json
import random
from importlib import resources
from typing import TYPE_CHECKING, Any, AsyncGenerator, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from ..errors import CharRNNError
from ..tokenizers.char import show_chars
from .copies import CopyIndexes, sample_copies
from .generation import (
    BadRequest,
    Busy,
    GenerateRequest,
    Generation,
    Limits,
    WorkerPool,
    check_fields,
    parse_generate,
    sample_pieces,
)
from .registry import ModelRegistry, UnknownModel
from .tunes import midi_bytes, tune_verdict, wav_note

if TYPE_CHECKING:
    from ..checkpoint import LoadedModel

MAX_BODY = 1_000_000  # bytes of JSON a request may send
MAX_DRAIN = 16_000_000  # bytes past MAX_BODY read and thrown away before refusing a body sent without its length
SECURITY_HEADERS = {
    # No inline or remote script can run: the page's own files only (abcjs included).
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; media-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def event(data: dict[str, Any], name: str | None = None) -> str:
    """One server-sent event: an optional name, one line of JSON, a blank line."""
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


class EventStream(StreamingResponse):
    """An event stream that stops its generation however the response ends (done, or the client gone,
    even before the first event)."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncGenerator[str, None], generation: Generation, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.events = content  # the body iterator, as an async generator that can be closed
        self.generation = generation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.generation.cancel()  # the worker stops after its current step
            await self.events.aclose()


def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=SECURITY_HEADERS)


async def read_json(request: Request) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise BadRequest(f"the request body is over {MAX_BODY} bytes")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= MAX_BODY:
            parts.append(chunk)
        elif size > MAX_BODY + MAX_DRAIN:
            break
    if size > MAX_BODY:
        # Read on past the limit (up to MAX_DRAIN): a socket closed with bytes still unread is
        # reset, and a reset throws away the answer before the client reads it.
        raise BadRequest(f"the request body is over {MAX_BODY} bytes")
    try:
        return json.loads(b"".join(parts).decode("utf-8"))
    except RecursionError:
        raise BadRequest("the request body is not valid JSON (nested too deeply)") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON ({exc})") from None
    except UnicodeDecodeError:
        raise BadRequest("the request body is not valid JSON (not UTF-8 text)") from None
    except ValueError:  # Python reads no integer of more than 4,300 digits
        raise BadRequest("the request body has a number with too many digits") from None


def create_app(registry: ModelRegistry, pool: WorkerPool | None = None, limits: Limits = Limits()) -> Starlette:
    """The application serving `registry`'s models; `pool` runs the sampling (8 workers, 8 waiting by default)."""
    routes = [
        Route("/", page),
        Route("/api/models", models),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/surprise", surprise, methods=["POST"]),
        Route("/api/abc/check", tune_check, methods=["POST"]),
        Route("/api/abc/midi", tune_midi, methods=["POST"]),
        # abcjs's synth fetches one sound per note as <url><instrument>-mp3/<note>.mp3: served from here.
        Route("/soundfont/{instrument}/{note}", soundfont),
        Mount("/static", StaticFiles(packages=[(__package__, "static")]), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={CharRNNError: on_error, Exception: on_bug})
    app.state.registry, app.state.pool, app.state.limits = registry, pool or WorkerPool(), limits
    app.state.copies = CopyIndexes()
    return app


async def page(request: Request) -> Response:
    state = request.app.state
    template = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    config = {"maxLength": state.limits.max_length, "maxText": state.limits.max_text}
    # "</" inside the JSON would end the <script> element early; "<\/" is the same JSON string.
    data = json.dumps(config, separators=(",", ":")).replace("</", "<\\/")
    body = template.replace("__ROOT__", html.escape(str(state.registry.root))).replace("__CONFIG__", data)
    return HTMLResponse(body, headers=SECURITY_HEADERS)


async def models(request: Request) -> Response:
    registry = request.app.state.registry
    listed = await run_in_threadpool(registry.models)
    return JSONResponse({"root": str(registry.root), "models": listed}, headers=SECURITY_HEADERS)


async def generate(request: Request) -> Response:
    """Checks everything that can fail before the first byte (answered 4xx), then streams events."""
    pool = request.app.state.pool
    req = parse_generate(await read_json(request), request.app.state.limits)
    loaded = await _reserve_and_load(request, req.model)
    try:
        unknown = loaded.tokenizer.unknown_chars(req.prime)
        if unknown:
            raise BadRequest(
                f"prime has {len(unknown)} character{'s' if len(unknown) > 1 else ''} the model never saw: "
                f"{show_chars(unknown)}"
            )
    except BaseException:
        pool.release()
        raise
    seed = req.seed if req.seed is not None else random.randrange(2**31)
    generation = pool.start(lambda: sample_pieces(loaded, req, seed))
    headers = {"Cache-Control": "no-store", **SECURITY_HEADERS}
    copies = lambda text: sample_copies(request.app.state.copies, loaded, text)  # noqa: E731
    return EventStream(_events(generation, req, seed, copies), generation, headers=headers)


async def _reserve_and_load(request: Request, name: str) -> LoadedModel:
    """A place in the pool (or Busy) and the model; the place is given back if the model fails to load."""
    pool, registry = request.app.state.pool, request.app.state.registry
    await run_in_threadpool(registry.find, name)  # an unknown model is a 404 even when the pool is full
    pool.reserve()
    try:
        loaded: LoadedModel = await run_in_threadpool(registry.load, name)
        return loaded
    except BaseException:
        pool.release()
        raise


async def _events(
    generation: Generation, req: GenerateRequest, seed: int, copies: Callable[[str], dict[str, Any]]
) -> AsyncGenerator[str, None]:
    """The text as it comes, then `done` with the figures and, under "copies", the longest span of
    the new text (the prime left out) found in the model's training text, checked off the event loop."""
    pieces: list[str] = []
    async for kind, value in generation.events():
        if kind == "text":
            pieces.append(value)
            yield event({"text": value})
        elif kind == "done":
            text = "".join(pieces)
            new = value["characters"] - len(req.prime)  # the prime comes first and is not generated
            seconds = value["seconds"]
            figures = {"characters": new, "seconds": round(seconds, 4), "seed": seed}
            figures["chars_per_second"] = round(new / seconds, 1) if seconds > 0 else None
            # cut: the text stopped because it reached `length`, not at its stop string
            figures["cut"] = 0 < req.length <= new and not (req.stop and text.endswith(req.stop))
            figures["copies"] = await run_in_threadpool(copies, text[len(req.prime) :])
            yield event(figures, "done")
        else:
            yield event({"error": value}, "error")


async def surprise(request: Request) -> Response:
    limits = request.app.state.limits
    body = check_fields(await read_json(request), {"model", "text"}, {"model", "text"})
    text = body["text"]
    if not isinstance(text, str) or not isinstance(body["model"], str):
        raise BadRequest("model and text must be strings")
    if len(text) > limits.max_text:
        raise BadRequest(f"text is {len(text)} characters long; the most this server scores is {limits.max_text}")
    loaded = await _reserve_and_load(request, body["model"])
    return JSONResponse(await request.app.state.pool.call(lambda: _surprise(loaded, text)), headers=SECURITY_HEADERS)


async def tune_check(request: Request) -> Response:
    tune = _tune(await read_json(request), request.app.state.limits)
    request.app.state.pool.reserve()
    return JSONResponse(await request.app.state.pool.call(lambda: tune_verdict(tune)), headers=SECURITY_HEADERS)


async def tune_midi(request: Request) -> Response:
    tune = _tune(await read_json(request), request.app.state.limits)
    request.app.state.pool.reserve()
    data = await request.app.state.pool.call(lambda: midi_bytes(tune))
    headers = {"Content-Disposition": 'attachment; filename="tune.mid"', **SECURITY_HEADERS}
    return Response(data, media_type="audio/midi", headers=headers)


def _tune(body: Any, limits: Limits) -> str:
    body = check_fields(body, {"tune"}, {"tune"})
    if not isinstance(body["tune"], str) or not body["tune"].strip():
        raise BadRequest("tune must be the text of an ABC tune")
    if len(body["tune"]) > limits.max_tune:
        raise BadRequest(
            f"tune is {len(body['tune'])} characters long; the most this server takes is {limits.max_tune}"
        )
    return body["tune"]


async def soundfont(request: Request) -> Response:
    data = wav_note(request.path_params["note"])
    if data is None:
        return error("no such note", 404)
    return Response(data, media_type="audio/wav", headers={"Cache-Control": "max-age=86400"})


async def on_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, Busy):
        return error(str(exc), 503)
    if isinstance(exc, UnknownModel):
        return error(str(exc), 404)
    if isinstance(exc, BadRequest):
        return error(str(exc), exc.status)
    return error(str(exc), 422)  # a damaged checkpoint, music21 missing, ...


async def on_bug(request: Request, exc: Exception) -> Response:
    return error(f"internal error: {type(exc).__name__}: {exc}", 500)


def _surprise(loaded: LoadedModel, text: str) -> dict[str, Any]:
    """Each character's surprise in bits, as `charrnn visualize` colours it."""
    from ..visualize import analyze

    analysis = analyze(loaded, text, max_chars=len(text) or 1)
    return {
        "text": analysis.text,
        "bits": [round(float(b), 3) for b in analysis.char_bits],
        "bpc": round(analysis.bits_per_char, 4),
        "dropped": analysis.dropped,
    }
