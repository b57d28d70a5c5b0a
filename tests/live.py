"""A real HTTP server for the app in a thread, on a free loopback port: for browsers and concurrent clients."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from sqlalchemy.engine import Engine

from service.config import Settings
from web.app import create_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def live_server(settings: Settings, engine: Engine, port: int | None = None, host: str = "127.0.0.1") -> Iterator[str]:
    """The app served on `host` (its thread opens its socket in the network namespace of the thread that starts
    it)."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, engine), host=host, port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
