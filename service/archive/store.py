"""Where archived bytes live, content-addressed: one interface, a local folder on the embedded default and an
S3-compatible bucket for deployments.

Objects are named by their sha256 (objects/ab/abcdef…) and written once: a put streams to a private temporary
file while hashing, then moves (local) or uploads (S3) it under its digest, so a half-written object never has a
name. A put of bytes already there marks the object as written now, so that the archive's sweep (which deletes
what nothing refers to once it is old enough) never takes an object an upload is about to record. Local objects
are readable by the observatory's own user alone from the moment they exist.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from service.errors import Busy
from service.files import private_dir

CHUNK = 1 << 20
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArchiveStore(Protocol):
    def put(self, stream: BinaryIO, *, limit: int | None = None) -> tuple[str, int]:
        """Store a stream; returns its sha256 and size. More than `limit` bytes raises ValueError."""

    def exists(self, sha256: str) -> bool: ...

    def size(self, sha256: str) -> int: ...

    def open_range(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The object's bytes from `start` up to and including `end` (None: to its end), in chunks."""

    def presign(self, sha256: str, *, expires_s: int = 600, filename: str | None = None) -> str | None:
        """A URL that serves the object without the observatory, or None where the store has none."""

    def local_path(self, sha256: str) -> Path | None:
        """The object's file where the store is a local folder (served with range support), else None."""

    def objects(self) -> Iterator[tuple[str, int, float]]:
        """Every object: (sha256, size, when it was last written or put again, as a POSIX time)."""

    def delete(self, sha256: str) -> None:
        """Remove an object (nothing happens when it is not there)."""


class ArchiveUnavailable(Busy):
    """The archive cannot be reached or cannot take writes for now (its S3 endpoint refuses connections, its
    disk is full): an outage of the observatory's own, answered 503 with Retry-After, never a reason to fail a run."""

    def __init__(self, message: str, retry_after_s: int | None = 10) -> None:
        super().__init__(message, retry_after_s)


# Errors of a local archive folder that pass with time (a full disk, a network file system away); others, such as
# a permission refused, are a misconfiguration and are raised as they are.
PASSING_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.EAGAIN,
                            errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.ECONNRESET})


@contextmanager
def _local_outage() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in PASSING_ERRNOS:
            raise ArchiveUnavailable(f"the archive could not store the file ({exc.strerror or exc}); "
                                     "try again later") from exc
        raise


@contextmanager
def _s3_outage() -> Iterator[None]:
    """Connection failures, timeouts and the endpoint's own 5xx and throttling answers are an outage."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout", "ServiceUnavailable"):
            raise ArchiveUnavailable(f"the archive's store is unavailable ({code or status}); try again later") \
                from exc
        raise
    except (BotoCoreError, OSError) as exc:
        raise ArchiveUnavailable(f"the archive's store cannot be reached ({exc.__class__.__name__}); "
                                 "try again later") from exc


def object_key(sha256: str) -> str:
    if not SHA256.match(sha256 or ""):
        raise ValueError(f"not a sha256: {str(sha256)[:80]!r}")
    return f"objects/{sha256[:2]}/{sha256}"


def _spool(stream: BinaryIO, folder: Path, limit: int | None) -> tuple[Path, str, int]:
    """Copy a stream into a private temporary file while hashing it."""
    private_dir(folder)
    tmp = folder / f"{secrets.token_hex(8)}.part"
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
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest(), size


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / object_key(sha256)

    def local_path(self, sha256: str) -> Path | None:
        return self.path(sha256)

    def put(self, stream: BinaryIO, *, limit: int | None = None) -> tuple[str, int]:
        with _local_outage():
            tmp, sha, size = _spool(stream, self.root / "incoming", limit)
            try:
                target = self.path(sha)
                private_dir(target.parent)
                if target.exists():
                    os.utime(target)  # put again: young again, for the sweep
                else:
                    tmp.replace(target)
                return sha, size
            finally:
                tmp.unlink(missing_ok=True)

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        return self.path(sha256).stat().st_size

    def open_range(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        with self.path(sha256).open("rb") as handle:
            handle.seek(start)
            left = None if end is None else end - start + 1
            while left is None or left > 0:
                block = handle.read(CHUNK if left is None else min(CHUNK, left))
                if not block:
                    return
                if left is not None:
                    left -= len(block)
                yield block

    def presign(self, sha256: str, *, expires_s: int = 600, filename: str | None = None) -> str | None:
        return None

    def objects(self) -> Iterator[tuple[str, int, float]]:
        for path in sorted((self.root / "objects").glob("??/*")):
            if SHA256.match(path.name) and path.is_file():
                stat = path.stat()
                yield path.name, stat.st_size, stat.st_mtime

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)


class S3Store:
    """An S3-compatible bucket (AWS, MinIO, Ceph, Garage...) through boto3; `spool_dir` holds uploads in flight."""

    def __init__(self, *, bucket: str, spool_dir: Path, endpoint_url: str | None = None, region: str | None = None,
                 access_key_id: str | None = None, secret_access_key: str | None = None, prefix: str = "") -> None:
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix, self.spool_dir = bucket, prefix.strip("/"), spool_dir
        self.client: Any = boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region or "us-east-1", aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, signature_version="s3v4",
                          s3={"addressing_style": "path"}))

    def key(self, sha256: str) -> str:
        return f"{self.prefix}/{object_key(sha256)}" if self.prefix else object_key(sha256)

    def local_path(self, sha256: str) -> Path | None:
        return None

    def put(self, stream: BinaryIO, *, limit: int | None = None) -> tuple[str, int]:
        with _local_outage():
            tmp, sha, size = _spool(stream, self.spool_dir, limit)
        try:
            with _s3_outage():
                if self.exists(sha):  # put again: copied onto itself, so that it is young again for the sweep
                    self.client.copy_object(Bucket=self.bucket, Key=self.key(sha), MetadataDirective="REPLACE",
                                            CopySource={"Bucket": self.bucket, "Key": self.key(sha)})
                else:
                    self.client.upload_file(str(tmp), self.bucket, self.key(sha),
                                            ExtraArgs={"ChecksumAlgorithm": "SHA256"})
            return sha, size
        finally:
            tmp.unlink(missing_ok=True)

    def _head(self, sha256: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            with _s3_outage():
                return self.client.head_object(Bucket=self.bucket, Key=self.key(sha256))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def exists(self, sha256: str) -> bool:
        return self._head(sha256) is not None

    def size(self, sha256: str) -> int:
        head = self._head(sha256)
        if head is None:
            raise FileNotFoundError(sha256)
        return int(head["ContentLength"])

    def open_range(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        wanted = f"bytes={start}-{'' if end is None else end}"
        with _s3_outage():
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256), Range=wanted)["Body"]
        try:
            with _s3_outage():
                yield from iter(lambda: body.read(CHUNK), b"")
        finally:
            body.close()

    def objects(self) -> Iterator[tuple[str, int, float]]:
        prefix = f"{self.prefix}/objects/" if self.prefix else "objects/"
        with _s3_outage():
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    name = item["Key"].rsplit("/", 1)[-1]
                    if SHA256.match(name):
                        yield name, int(item["Size"]), item["LastModified"].timestamp()

    def delete(self, sha256: str) -> None:
        with _s3_outage():
            self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))

    def presign(self, sha256: str, *, expires_s: int = 600, filename: str | None = None) -> str | None:
        params = {"Bucket": self.bucket, "Key": self.key(sha256)}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)
