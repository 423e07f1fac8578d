"""Running the application: a listening socket opened first (so its URL is known and a taken port
is one clear error), then uvicorn serving on it until Ctrl-C."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import ServeConfig
from ..errors import ConfigError

if TYPE_CHECKING:
    from starlette.applications import Starlette


def is_loopback(host: str) -> bool:
    """Whether only this computer can reach `host` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def open_socket(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (port 0: any free one)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: cannot listen there ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def build_app(target: Path, cfg: ServeConfig) -> Starlette:
    """The application for the models at `target` (a directory of runs, a run, or a checkpoint)."""
    from .app import create_app
    from .generation import Limits, WorkerPool
    from .registry import ModelRegistry

    registry = ModelRegistry(target, max_loaded=cfg.max_models)
    return create_app(registry, WorkerPool(cfg.workers, cfg.queue), Limits(max_length=cfg.max_length))


def run(app: Starlette, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve until interrupted (uvicorn handles Ctrl-C and finishes cleanly)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=2))
    try:
        server.run(sockets=[sock])
    finally:
        app.state.pool.shutdown()
        sock.close()
