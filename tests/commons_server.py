"""A stand-in for the Commons API on loopback: it answers each request with what a test's script says, and keeps
the query parameters and headers of every request it was sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

RECORDED = Path(__file__).resolve().parent / "data" / "commons-api"
Answer = tuple[int, dict[str, str], Any]  # status, headers, a JSON body (or bytes, sent as they are)


def recorded(name: str) -> Any:
    return json.loads((RECORDED / name).read_text())


class Script:
    def __init__(self, answer: Callable[[dict[str, str]], Answer]) -> None:
        self.answer = answer
        self.requests: list[dict[str, str]] = []
        self.headers: list[dict[str, str]] = []


@contextmanager
def commons_api(answer: Callable[[dict[str, str]], Answer]) -> Iterator[tuple[str, Script]]:
    script = Script(answer)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            params = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            params["_path"] = urlsplit(self.path).path
            script.requests.append(params)
            script.headers.append(dict(self.headers))
            status, headers, body = script.answer(params)
            raw = isinstance(body, bytes)
            data = body if raw else json.dumps(body).encode()
            self.send_response(status)
            for key, value in {"Content-Type": "image/png" if raw else "application/json", **headers}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/w/api.php", script
    finally:
        server.shutdown()
        server.server_close()


def sequence(*answers: Answer) -> Callable[[dict[str, str]], Answer]:
    """Answer the requests in order, one answer each."""
    queue = list(answers)
    return lambda params: queue.pop(0)
