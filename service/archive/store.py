"""Where archived bytes live, content-addressed: one interface, and a local folder behind it on the embedded default.

Objects are named by their sha256 (objects/ab/abcdef…), written once through a temporary file and renamed into
place, and readable by the observatory's own user alone from the moment they exist.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Protocol

from service.files import private_dir

CHUNK = 1 << 20


class ArchiveStore(Protocol):
    def put(self, stream: BinaryIO, *, limit: int | None = None) -> tuple[str, int]:
        """Store a stream; returns its sha256 and size. More than `limit` bytes raises ValueError."""

    def exists(self, sha256: str) -> bool: ...

    def open(self, sha256: str) -> BinaryIO: ...


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256: {sha256[:80]!r}")
        return self.root / "objects" / sha256[:2] / sha256

    def put(self, stream: BinaryIO, *, limit: int | None = None) -> tuple[str, int]:
        incoming = self.root / "incoming"
        private_dir(incoming)
        tmp = incoming / f"{secrets.token_hex(8)}.part"
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
                for block in iter(lambda: stream.read(CHUNK), b""):
                    size += len(block)
                    if limit is not None and size > limit:
                        raise ValueError(f"larger than {limit} bytes")
                    digest.update(block)
                    handle.write(block)
                handle.flush()
                os.fsync(handle.fileno())
            sha = digest.hexdigest()
            target = self.path(sha)
            private_dir(target.parent)
            if target.exists():
                tmp.unlink()
            else:
                tmp.replace(target)
            return sha, size
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def open(self, sha256: str) -> BinaryIO:
        return self.path(sha256).open("rb")
