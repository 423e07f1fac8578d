"""`charrnn serve`: a local web playground and HTTP API for trained models.

- `registry`: the models under the served directory, named by relative path, loaded once (bounded).
- `generation`: request checking, the worker threads and the bounded queue, streaming.
- `app`: the Starlette application (page, static files, JSON and event-stream API).
- `tunes`: checker verdict, MIDI and offline note sounds for ABC tunes.
- `server`: the listening socket and uvicorn.

Needs the `[serve]` extra (starlette, uvicorn); nothing here is imported by `charrnn --help`.
Without it, `charrnn serve` says so in one line (charrnn/cli/extras.py, cli/application.py).
"""
