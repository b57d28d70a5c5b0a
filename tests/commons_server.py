"""A stand-in for the Commons API on loopback: it answers each request with what a test's script says, and keeps
the query parameters and headers of every request it was sent."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

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


def picture(seed: int, size: tuple[int, int] = (96, 72), brighter: int = 0) -> bytes:
    """A blocky random picture: each seed looks different, and `brighter` keeps its look."""
    blocks = np.random.default_rng(seed).integers(16, 230, (6, 8, 3))
    image = Image.fromarray(np.clip(blocks + brighter, 0, 255).astype("uint8")).resize(size, Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def extmetadata_with(source: dict, **changes: str | None) -> dict:
    """A copy of recorded extmetadata with some values changed (None: the value is absent)."""
    changed = _extmetadata(source, **{k: v for k, v in changes.items() if v is not None})
    for key in [k for k, v in changes.items() if v is None]:
        changed.pop(key, None)
    return changed


def _extmetadata(source: dict, **changes: str) -> dict:
    extmetadata = copy.deepcopy(source)
    for key, value in changes.items():
        extmetadata[key] = {"value": value, "source": "test"}
    return extmetadata


class FakeCommons:
    """Twelve files over two listing batches, and their image bytes."""

    def __init__(self) -> None:
        listing = list(recorded("wmc_pretty123.json")["query"]["pages"].values())
        pd = listing[0]["imageinfo"][0]["extmetadata"]  # Public domain, an Italian Wikipedia uploader
        by_sa_de = next(p for p in listing if "Heidelberg" in p["title"])["imageinfo"][0]["extmetadata"]
        ptrqs = recorded("image_data_example.json")["imageinfo"][0]["extmetadata"]  # CC BY-SA 4.0, user link
        munch = recorded("page_44672212_left.json")["imageinfo"][0]["extmetadata"]
        self.images: dict[str, bytes] = {}
        self.fetches: Counter[str] = Counter()
        self.throttled: set[str] = set()
        self.pages: list[dict] = []
        self.pd, self.ptrqs = pd, ptrqs
        add = self.add
        add("File:Volcano.png", pd, picture(1))
        add("File:Heidelberg street.png", by_sa_de, picture(2))
        add("File:Lone tree.png", ptrqs, picture(3))
        add("File:Non commercial.png", _extmetadata(pd, LicenseShortName="CC BY-NC 2.0"), picture(4))
        add("File:Logo.png", _extmetadata(ptrqs, Restrictions="trademarked"), picture(5))
        add("File:Night in Nice.png", munch, picture(6))
        original = picture(7, (64, 64))
        add("File:Small original.png", pd, original, thumb=False, sha1=hashlib.sha1(original).hexdigest(),
            size=len(original))
        add("File:Tampered.png", pd, picture(8, (64, 64)), thumb=False, sha1="0" * 40, size=len(picture(8, (64, 64))))
        add("File:Volcano copy.png", pd, picture(1))
        add("File:Volcano brighter.png", pd, picture(1, brighter=4))
        add("File:Deleted.png", None, None)
        add("File:Harbour.png", ptrqs, picture(9, (72, 96)))
        self.throttled.add("/upload/thumb/1001.png")
        self.batches = [self.pages[:6], self.pages[6:]]
        # Categories of their own (title -> indices of `pages`), answered in one batch; any other category lists
        # all twelve files over two batches.
        self.categories: dict[str, list[int]] = {}

    def add(self, title: str, extmetadata: dict | None, data: bytes | None, *, thumb: bool = True,
            sha1: str | None = None, size: int | None = None, **info_changes: object) -> int:
        """A file page (None metadata: a page without image info), its bytes served; its index in `pages`."""
        pageid = 1000 + len(self.pages)
        page: dict = {"pageid": pageid, "ns": 6, "title": title}
        if extmetadata is not None:
            name = f"{pageid}.png"
            original = f"/upload/original/{name}"
            info = {"url": f"BASE{original}", "descriptionurl": f"https://commons.wikimedia.org/wiki/{title}",
                    "sha1": sha1 or hashlib.sha1(b"the original, larger file " + title.encode()).hexdigest(),
                    "size": size or 1_000_000, "mime": "image/png", "timestamp": "2019-09-01T00:38:47Z",
                    "extmetadata": extmetadata, "width": 960, "height": 720}
            if thumb:
                info |= {"thumburl": f"BASE/upload/thumb/{name}", "thumbwidth": 96, "thumbheight": 72}
                self.images[f"/upload/thumb/{name}"] = data
            else:
                self.images[original] = data
            info |= info_changes
            page["imageinfo"] = [{k: v for k, v in info.items() if v is not None}]
        self.pages.append(page)
        return len(self.pages) - 1

    def answer(self, params: dict[str, str]):
        path = params["_path"]
        if path == "/w/api.php" and params.get("gcmtitle") in self.categories:
            chosen = [self.pages[i] for i in self.categories[params["gcmtitle"]]]
            return 200, {}, {"batchcomplete": "", "query": {"pages": {str(p["pageid"]): self._absolute(p)
                                                                      for p in chosen}}}
        if path == "/w/api.php":
            second = "gcmcontinue" in params
            body = {"batchcomplete": "", "query": {"pages": {str(p["pageid"]): self._absolute(p)
                                                             for p in self.batches[1 if second else 0]}}}
            if not second:
                body["continue"] = {"gcmcontinue": "file|next", "continue": "gcmcontinue||"}
            return 200, {}, body
        self.fetches[path] += 1
        if path in self.throttled:
            self.throttled.discard(path)
            return 429, {"Retry-After": "1"}, {}
        return (200, {}, self.images[path]) if path in self.images else (404, {}, {})

    def _absolute(self, page: dict) -> dict:
        return json.loads(json.dumps(page).replace("BASE", self.base))


@contextmanager
def fake_commons() -> Iterator[tuple[FakeCommons, str, Script]]:
    """FakeCommons served on loopback: (it, the API's URL, the requests it was sent)."""
    fake = FakeCommons()
    with commons_api(fake.answer) as (url, script):
        fake.base = url.rsplit("/w/api.php", 1)[0]
        yield fake, url, script
