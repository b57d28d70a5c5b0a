"""A real HTTP server for the app in a thread, on a free loopback port: for browsers and concurrent clients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def serve_portal(var_dir: Path, port: int, overrides: dict[str, str] | None = None) -> subprocess.Popen:
    """The portal as a deployment runs it (uvicorn, its own process) on loopback, over `var_dir`'s database."""
    env = {**os.environ, "OBSERVATORY_VAR_DIR": str(var_dir), "OBSERVATORY_SECRET_KEY": "bench",
           "OBSERVATORY_LOGIN_MAX_FAILURES_PER_ADDRESS": "1000", **(overrides or {})}
    return subprocess.Popen([sys.executable, "-m", "uvicorn", "web.app:create_app", "--factory", "--host",
                             "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
                            cwd=Path(__file__).resolve().parent.parent, env=env)


def wait_until_up(base: str, path: str = "/login", timeout_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("the portal did not start")
