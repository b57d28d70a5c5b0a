"""Serving an archived object from a store that is not a local folder, with single byte ranges (resumable
downloads) as RFC 9110 describes them."""

from __future__ import annotations

import re
from typing import Protocol
from urllib.parse import quote

from fastapi import Response
from fastapi.responses import StreamingResponse

from service.archive.store import ArchiveStore

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Stored(Protocol):
    """What is served: a run's artifact, or a dataset version's file."""

    name: str
    sha256: str
    size: int
    media_type: str


def ranged_response(store: ArchiveStore, artifact: Stored, range_header: str | None, disposition: str,
                    headers: dict[str, str]) -> Response:
    size = artifact.size
    headers = {**headers, "Accept-Ranges": "bytes",
               "Content-Disposition": f"{disposition}; filename*=utf-8''{quote(artifact.name)}"}
    match = RANGE.match((range_header or "").strip())
    if not match or (not match.group(1) and not match.group(2)):
        return StreamingResponse(store.open_range(artifact.sha256), media_type=artifact.media_type,
                                 headers={**headers, "Content-Length": str(size)})
    first, last = match.groups()
    if first:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    else:
        start, end = max(0, size - int(last)), size - 1
    if start >= size or start > end:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    return StreamingResponse(store.open_range(artifact.sha256, start, end), status_code=206,
                             media_type=artifact.media_type,
                             headers={**headers, "Content-Range": f"bytes {start}-{end}/{size}",
                                      "Content-Length": str(end - start + 1)})
