"""A polite client for the MediaWiki API of Commons: files by category (with depth), by search or by title, with
their image info (url, sha1, size, mime, extmetadata, and a thumbnail at the training size).

Polite: a descriptive User-Agent with a contact, `maxlag`, at most one request per `min_interval_s`, and retries
with backoff on 429, 503 and maxlag answers, honouring Retry-After. Continuation is followed to the end, and a
page whose data is spread over several batches is merged and handed out once, when its batch is complete. An empty
or repeated continuation (which would start the listing over, for ever) is an error, and so is a listing past
`max_batches` answers.

Careful: what the API answers is not trusted. Files are fetched only from the API's own host and the file hosts
the operator allows (`upload.wikimedia.org` by default), over http(s), redirects included, so that a URL in an
answer cannot point the node at its own network; and a file's body is read in blocks up to `max_file_bytes`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

RETRY_STATUSES = frozenset({429, 502, 503, 504})
IIPROP = "url|sha1|size|mime|extmetadata|timestamp"
FILE_HOSTS = ("upload.wikimedia.org",)  # where Commons serves its files and thumbnails
MAX_FILE_BYTES = 32 << 20  # a thumbnail at the training size is a few KB; an original photograph some MB
MAX_ANSWER_BYTES = 64 << 20  # one answer of the API (fifty pages of metadata is well under a megabyte)
MAX_BATCHES = 20_000  # answers one listing may take: a million files at fifty a batch


class CommonsError(RuntimeError):
    """The API answered with an error, or kept refusing after every retry."""


class FileRefused(CommonsError):
    """A file that is not fetched, or not read to its end: on a host not allowed, or larger than allowed."""


def _netloc(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{(parts.hostname or '').lower()}:{port}"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise CommonsError(f"the Commons API answered something that is not JSON ({response.text[:80]!r})") from None


def _merge(into: dict[str, Any], part: dict[str, Any]) -> None:
    """Fold one batch's data for a page into what earlier batches gave (lists are extended, without repeats)."""
    for key, value in part.items():
        if isinstance(value, list) and isinstance(into.get(key), list):
            into[key].extend(v for v in value if v not in into[key])
        elif key not in into:
            into[key] = value


def _pages(data: dict[str, Any]) -> list[dict[str, Any]]:
    pages = (data.get("query") or {}).get("pages") or []
    return list(pages.values()) if isinstance(pages, dict) else list(pages)


def _continuation(given: Any, seen: set[str]) -> dict[str, Any]:
    """The parameters that continue a listing; an empty continuation, or one given before, would list again from
    where it was (for ever): an error."""
    if not isinstance(given, dict) or not any(str(v) for v in given.values()):
        raise CommonsError(f"the Commons API gave an empty continuation ({given!r}): the listing cannot go on")
    key = repr(sorted((str(k), str(v)) for k, v in given.items()))
    if key in seen:
        raise CommonsError(f"the Commons API gave the same continuation twice ({given!r}): the listing would repeat")
    seen.add(key)
    return dict(given)


class CommonsClient:
    def __init__(self, api_url: str, *, user_agent: str, thumb_width: int = 64, min_interval_s: float = 1.0,
                 max_retries: int = 6, maxlag_s: int = 5, http: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 file_hosts: Iterable[str] = FILE_HOSTS, max_file_bytes: int = MAX_FILE_BYTES,
                 max_batches: int = MAX_BATCHES) -> None:
        if "@" not in user_agent and "http" not in user_agent:
            raise ValueError("the User-Agent must say how to reach you (an e-mail address or a URL)")
        self.api_url, self.thumb_width = api_url, thumb_width
        # host:port pairs a request may go to: the API's, and each allowed file host over http or https
        self.allowed = {_netloc(api_url)} | {_netloc(f"{scheme}://{host}") for host in file_hosts
                                              for scheme in ("http", "https")}
        self.max_file_bytes, self.max_batches = max_file_bytes, max_batches
        self.min_interval_s, self.max_retries, self.maxlag_s = min_interval_s, max_retries, maxlag_s
        self.http = http or httpx.Client(timeout=60, headers={"User-Agent": user_agent}, follow_redirects=True)
        self.http.headers["User-Agent"] = user_agent
        self.http.event_hooks["request"] = [*self.http.event_hooks.get("request", []), self._check_host]
        self._sleep, self._clock, self._last = sleep, clock, -1e9
        self.requests = 0

    def _wait_turn(self) -> None:
        wait = self._last + self.min_interval_s - self._clock()
        if wait > 0:
            self._sleep(wait)
        self._last = self._clock()

    def _check_host(self, request: httpx.Request) -> None:
        """Every request, each redirect included, goes to an allowed host over http(s), or is refused."""
        if request.url.scheme not in ("http", "https") or _netloc(str(request.url)) not in self.allowed:
            raise FileRefused(f"{request.url.host or str(request.url)[:100]} is not a host files are fetched from "
                              "(the operator's OBSERVATORY_COMMONS_FILE_HOSTS)")

    def _get(self, url: str, params: dict[str, Any] | None, limit: int | None) -> httpx.Response:
        """A GET whose body is read in blocks, refused past `limit` bytes."""
        with self.http.stream("GET", url, params=params) as response:
            declared = response.headers.get("content-length", "")
            if limit is not None and declared.isdigit() and int(declared) > limit:
                raise FileRefused(f"the file is {declared} bytes, over the {limit} allowed")
            body = bytearray()
            for block in response.iter_bytes(1 << 16):
                body += block
                if limit is not None and len(body) > limit:
                    raise FileRefused(f"the file is over the {limit} bytes allowed")
            return httpx.Response(response.status_code, headers=response.headers, content=bytes(body),
                                  request=response.request)

    def _request(self, url: str, params: dict[str, Any] | None, *, api: bool) -> httpx.Response:
        """One GET, retried on throttling, overload, maxlag and broken connections; raises CommonsError."""
        for attempt in range(self.max_retries + 1):
            self._wait_turn()
            self.requests += 1
            try:
                response = self._get(url, params, MAX_ANSWER_BYTES if api else self.max_file_bytes)
            except httpx.TransportError as exc:
                problem, delay = f"{type(exc).__name__}: {exc}", None
            else:
                data = _json(response) if api and response.status_code == 200 else None
                error = data.get("error") if isinstance(data, dict) else None
                if response.status_code == 200 and not error:
                    return response
                if error and error.get("code") != "maxlag":
                    raise CommonsError(f"the Commons API refused: {error.get('code')}: {error.get('info', '')}")
                if response.status_code not in RETRY_STATUSES and not error:
                    raise CommonsError(f"{'the Commons API' if api else url} answered HTTP {response.status_code}")
                problem = f"HTTP {response.status_code}" + (f" ({error.get('code')})" if error else "")
                delay = _retry_after(response.headers.get("Retry-After"))
            if attempt == self.max_retries:
                raise CommonsError(f"{'the Commons API' if api else url} kept refusing ({problem}) after "
                                   f"{self.max_retries} retries")
            self._sleep(delay if delay is not None else min(2.0 ** attempt, 60.0))
        raise AssertionError("unreachable")

    def get(self, params: dict[str, Any]) -> dict[str, Any]:
        """One API call; raises CommonsError on an API error or when it keeps being refused."""
        query = {"action": "query", "format": "json", "maxlag": self.maxlag_s, **params}
        data = _json(self._request(self.api_url, query, api=True))
        if not isinstance(data, dict):
            raise CommonsError("the Commons API answered JSON that is not an object")
        return data

    def fetch(self, url: str) -> bytes:
        """A file's bytes (an image or its thumbnail), under the same rate limit and retries as the API."""
        return self._request(url, None, api=False).content

    def pages(self, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every page a query yields, continuation followed, each page merged across batches and yielded once."""
        pending: dict[Any, dict[str, Any]] = {}
        cont: dict[str, Any] = {}
        seen: set[str] = set()
        for _ in range(self.max_batches):
            data = self.get({**params, **cont})
            for page in _pages(data):
                _merge(pending.setdefault(page.get("pageid", page.get("title")), {}), page)
            if "batchcomplete" in data or "continue" not in data:
                yield from pending.values()
                pending.clear()
            if "continue" not in data:
                return
            cont = _continuation(data["continue"], seen)
        raise CommonsError(f"the listing did not end within {self.max_batches} answers of the Commons API")

    def _imageinfo(self) -> dict[str, Any]:
        return {"prop": "imageinfo", "iiprop": IIPROP, "iiurlwidth": self.thumb_width}

    def category(self, name: str, depth: int = 0) -> Iterator[dict[str, Any]]:
        """The files in a category and, down to `depth` levels, in its subcategories (each file once)."""
        seen_pages: set[Any] = set()
        seen_categories: set[str] = set()
        level = [name if name.startswith("Category:") else f"Category:{name}"]
        for current_depth in range(depth + 1):
            below: list[str] = []
            for category in level:
                if category in seen_categories:
                    continue
                seen_categories.add(category)
                for page in self.pages({"generator": "categorymembers", "gcmtitle": category, "gcmtype": "file",
                                        "gcmlimit": 50, **self._imageinfo()}):
                    key = page.get("pageid", page.get("title"))
                    if key not in seen_pages:
                        seen_pages.add(key)
                        yield page
                if current_depth < depth:
                    below += [p["title"] for p in self.pages({"generator": "categorymembers", "gcmtitle": category,
                                                              "gcmtype": "subcat", "gcmlimit": 50})]
            level = below

    def search(self, text: str, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Files whose page matches a search."""
        for count, page in enumerate(self.pages({"generator": "search", "gsrsearch": text, "gsrnamespace": 6,
                                                 "gsrlimit": 50, **self._imageinfo()})):
            if limit is not None and count >= limit:
                return
            yield page

    def titles(self, titles: Iterable[str]) -> Iterator[dict[str, Any]]:
        """Named files ("File:…"), fifty to a request."""
        batch: list[str] = []
        for title in titles:
            batch.append(title if title.startswith("File:") else f"File:{title}")
            if len(batch) == 50:
                yield from self.pages({"titles": "|".join(batch), **self._imageinfo()})
                batch = []
        if batch:
            yield from self.pages({"titles": "|".join(batch), **self._imageinfo()})

    def missing(self, page_ids: Iterable[int]) -> set[int]:
        """Which of these file pages no longer exist on Commons (deleted), fifty to a request."""
        ids = sorted({int(page_id) for page_id in page_ids})
        gone: set[int] = set()
        for start in range(0, len(ids), 50):
            batch = ids[start:start + 50]
            for page in self.pages({"pageids": "|".join(map(str, batch)), "prop": "info"}):
                if "missing" in page and page.get("pageid") in batch:
                    gone.add(int(page["pageid"]))
        return gone
