"""`observatory download obs:run/123`: a data product's files from a portal, resumed, verified, with progress.

An identifier names a product: `obs:run/ID` (a run's outputs), `obs:model/NAME@N` (a model version's checkpoint,
attribution and card as README.md), `obs:dataset/NAME@N` or `obs:dataset/sha256:DIGEST` (a dataset version's
files). The portal lists its files with their sha256 and size; each is fetched into `NAME.part` beside where it
goes, continuing a partial file with an HTTP range request, and kept under its name only once its bytes hash to the
digest listed. A file whose bytes do not match is refused: the partial file is deleted and the command fails naming
it (run it again to fetch it afresh). A file already there with the right digest is not fetched again.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REF = re.compile(r"^obs:(?P<kind>run|model|dataset)/(?P<id>[A-Za-z0-9@:._-]{1,160})$")
CHUNK = 1 << 16


class DownloadError(Exception):
    """What went wrong, in one line a person can act on."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    sha256: str
    size: int
    url: str  # a path on the portal


def parse_ref(ref: str) -> tuple[str, str]:
    """(kind, id) of an identifier such as obs:run/123; a clear error for anything else."""
    match = REF.match(ref.strip())
    if match is None:
        raise DownloadError(f"{ref!r} is not an identifier: use obs:run/ID, obs:model/NAME@N or obs:dataset/NAME@N")
    kind, ident = match["kind"], match["id"]
    if kind == "run" and not ident.isdigit():
        raise DownloadError(f"{ref!r}: a run's identifier is obs:run/ followed by its number")
    if kind == "model" and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,79}@[1-9][0-9]{0,8}", ident):
        raise DownloadError(f"{ref!r}: a model version's identifier is obs:model/NAME@N")
    return kind, ident


class Portal:
    """The portal's JSON API, with an API token where one is given (needed for files still exclusive)."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 60) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s,
                                   follow_redirects=False)

    def get_json(self, path: str) -> Any:
        try:
            response = self.client.get(path)
        except httpx.HTTPError as exc:
            raise DownloadError(f"cannot reach the portal at {self.client.base_url}: {exc}") from None
        if response.status_code != 200:
            raise DownloadError(f"the portal refused {path} ({response.status_code}): {_detail(response)}")
        return response.json()

    def files(self, kind: str, ident: str) -> list[RemoteFile]:
        """The product's files as the portal lists them."""
        if kind == "run":
            listed = self.get_json(f"/api/runs/{ident}/artifacts")
            if not listed:
                raise DownloadError(f"run {ident} has no files you may download (yet)")
            return [RemoteFile(f["name"], f["sha256"], int(f["size"]), f["url"]) for f in listed]
        if kind == "model":
            name, version = ident.split("@")
            card = self.get_json(f"/api/models/{name}/{version}")
            if card.get("family"):
                raise DownloadError(f"obs:model/{ident} is a family of experts: download each expert's run "
                                    "(obs:run/ID, listed on its card)")
            wanted = {"checkpoint.pt": card["checkpoint_sha256"], "attribution.json": card["attribution_sha256"]}
            listed = {f["name"]: f for f in self.get_json(f"/api/runs/{card['run_id']}/artifacts")}
            missing = [name for name in wanted if name not in listed]
            if missing:
                raise DownloadError(f"obs:model/{ident}: {', '.join(missing)} cannot be downloaded by you")
            files = [RemoteFile(n, sha, int(listed[n]["size"]), listed[n]["url"]) for n, sha in wanted.items()]
            if card.get("readme_url"):  # the card itself, as a Hugging Face-style README.md
                files.append(RemoteFile("README.md", card["readme_sha256"], int(card["readme_size"]),
                                        card["readme_url"]))
            return files
        dataset = self.get_json(f"/api/datasets/{ident}")
        return [RemoteFile(f["name"], f["sha256"], int(f["size"]), f["url"]) for f in dataset["files"]]


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", ""))[:300]
    except ValueError:
        return response.text[:300]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(portal: Portal, remote: RemoteFile, folder: Path, *, limit_rate: float | None = None,
          advance: Callable[[int], None] = lambda _: None, say: Callable[[str], None] = print) -> Path:
    """One file into `folder`, continuing its partial download; verified before it takes its name."""
    if "/" in remote.name or remote.name in ("", ".", ".."):
        raise DownloadError(f"the portal listed a file named {remote.name!r}; refusing it")
    final, part = folder / remote.name, folder / f"{remote.name}.part"
    if final.is_file() and final.stat().st_size == remote.size and sha256_of(final) == remote.sha256:
        advance(remote.size)
        say(f"{remote.name}: already here, verified")
        return final
    have = part.stat().st_size if part.is_file() else 0
    if have > remote.size:
        part.unlink()
        have = 0
    if have:
        say(f"{remote.name}: resuming at {have} of {remote.size} bytes")
    advance(have)
    if have < remote.size:
        _receive(portal, remote, part, have, limit_rate, advance)
    elif not part.exists():
        part.touch(mode=0o600)
    if sha256_of(part) != remote.sha256:
        part.unlink()
        raise DownloadError(f"{remote.name}: its bytes do not hash to the listed sha256 {remote.sha256}; the partial "
                            "file is deleted, nothing is kept (run the command again to fetch it afresh)")
    os.replace(part, final)
    say(f"{remote.name}: {remote.size} bytes, sha256 verified")
    return final


def _receive(portal: Portal, remote: RemoteFile, part: Path, have: int, limit_rate: float | None,
             advance: Callable[[int], None]) -> None:
    headers = {"Range": f"bytes={have}-"} if have else {}
    began, sent = time.monotonic(), 0
    try:
        with portal.client.stream("GET", remote.url, headers=headers) as response:
            if response.status_code == 200 and have:  # the server sent the whole file: start over
                have = 0
            elif response.status_code not in (200, 206):
                response.read()
                raise DownloadError(f"{remote.name}: the portal refused it ({response.status_code}): "
                                    f"{_detail(response)}")
            flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if have else os.O_TRUNC)
            with os.fdopen(os.open(part, flags, 0o600), "wb") as out:
                for block in response.iter_bytes(CHUNK):
                    out.write(block)
                    advance(len(block))
                    sent += len(block)
                    if limit_rate:  # never faster than asked, on average
                        ahead = sent / limit_rate - (time.monotonic() - began)
                        if ahead > 0:
                            time.sleep(ahead)
    except httpx.HTTPError as exc:
        raise DownloadError(f"{remote.name}: the download broke off ({exc}); run the command again to resume it") \
            from None


def parse_rate(text: str | None) -> float | None:
    """A rate such as 200k or 2M (bytes per second)."""
    if not text:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG]?)", text.strip())
    if match is None:
        raise DownloadError(f"--limit-rate {text!r}: give bytes per second, e.g. 500k or 2M")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match[2].lower()]
    rate = float(match[1]) * scale
    if rate < 1024:
        raise DownloadError("--limit-rate: at least 1k per second")
    return rate
