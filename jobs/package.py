"""The dataset package: the files a dataset version is made of, and how a job checks them. Pure: no torch.

A package is `manifest.jsonl` (one record per image: its provenance, `image_sha256`, and the `shard` and `member`
that hold its PNG), tar shards of PNGs, `attribution.txt`, `rejected.jsonl`, `duplicates.jsonl` and
`dataset.json` (name, digest, counts, classes). Its digest is one sha256 over the manifest's records without their
retrieval times, so the same images with the same provenance give the same digest whenever they are fetched.

A job is sent the manifest and the shards as inputs named `dataset:FILE`, fetched by their own sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

VOLATILE = frozenset({"retrieved_at"})  # left out of the digest: the same data fetched twice is the same version
INPUT_PREFIX = "dataset:"  # a job's inputs that are files of its dataset: dataset:manifest.jsonl, dataset:shard-…
MANIFEST = "manifest.jsonl"
DESCRIPTION = "dataset.json"
SIDE_FILES = ("attribution.txt", "rejected.jsonl", "duplicates.jsonl")
MAX_IMAGE_BYTES = 64 << 20  # one image in a shard: a training-size PNG is a few KB, a full Commons file some MB
# Magic numbers of compressed files: a package and its shards are plain tar, so that what a member says it holds
# is what is read (a 1 MB gzip can expand to gigabytes).
COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


def compression_of(path: Path) -> str | None:
    """The compression a file is in, by its first bytes, or None for a plain file."""
    with path.open("rb") as handle:
        head = handle.read(6)
    return next((name for magic, name in COMPRESSED.items() if head.startswith(magic)), None)


def open_plain_tar(path: Path) -> tarfile.TarFile:
    """A tar file opened for reading only if it is not compressed (ValueError otherwise)."""
    compression = compression_of(path)
    if compression is not None:
        raise ValueError(f"{path.name} is {compression}-compressed; only plain tar files are taken")
    try:
        return tarfile.open(path, "r:")
    except tarfile.TarError as exc:
        raise ValueError(f"{path.name} is not a readable tar file ({exc})") from None


def digest_of(records: list[dict[str, Any]]) -> str:
    lines = [json.dumps({k: v for k, v in r.items() if k not in VOLATILE}, sort_keys=True) for r in records]
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A tar file whose bytes depend only on its members (fixed times, owners and modes)."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            entry = tarfile.TarInfo(name)
            entry.size, entry.mtime, entry.mode, entry.uid, entry.gid = len(data), 0, 0o644, 0, 0
            tar.addfile(entry, io.BytesIO(data))


def write_manifest(path: Path, records: list[dict[str, Any]]) -> str:
    """Write the manifest; returns the package's digest."""
    path.write_text("".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records))
    return digest_of(records)


def read_manifest(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def job_inputs(files: dict[str, Any]) -> dict[str, str]:
    """The inputs a job needs from a package's files (name -> {"sha256": …}): the manifest and the shards."""
    return {f"{INPUT_PREFIX}{name}": str(entry["sha256"]) for name, entry in files.items()
            if name == MANIFEST or name.endswith(".tar")}


def _wanted(records: list[dict[str, Any]], shards: dict[str, Path]) -> dict[str, set[str]]:
    wanted: dict[str, set[str]] = {}
    for record in records:
        wanted.setdefault(record["shard"], set()).add(record["member"])
    for shard in wanted:
        if shard not in shards:
            raise ValueError(f"the dataset's shard {shard} was not sent to the job")
    return wanted


def _members(shards: dict[str, Path], wanted: dict[str, set[str]]) -> Iterator[tuple[str, str, bytes]]:
    """(shard, member, bytes) for each wanted member, one at a time; each member's size is checked before it is
    read."""
    for shard, members in wanted.items():
        with open_plain_tar(shards[shard]) as tar:
            for entry in tar:
                if entry.isfile() and entry.name in members:
                    if entry.size > MAX_IMAGE_BYTES:
                        raise ValueError(f"{entry.name} in {shard} is {entry.size} bytes, over the "
                                         f"{MAX_IMAGE_BYTES} an image may have")
                    yield shard, entry.name, tar.extractfile(entry).read()


def _check(records: list[dict[str, Any]], digest: str | None) -> str:
    actual = digest_of(records)
    if digest is not None and actual != digest:
        raise ValueError(f"the dataset's manifest does not have the digest {digest}")
    return actual


def _verify_member(record: dict[str, Any], sha256: str | None) -> None:
    if sha256 is None:
        raise ValueError(f"{record['member']} is missing from {record['shard']}")
    if sha256 != record["image_sha256"]:
        raise ValueError(f"{record['member']} in {record['shard']} does not match its manifest checksum")


def verify(manifest: Path, shards: dict[str, Path], digest: str | None) -> tuple[str, list[dict[str, Any]]]:
    """The manifest's digest and records, with every image checked as `read_images` does, without holding them."""
    records = read_manifest(manifest)
    actual = _check(records, digest)
    hashes = {(shard, name): hashlib.sha256(data).hexdigest()
              for shard, name, data in _members(shards, _wanted(records, shards))}
    for record in records:
        _verify_member(record, hashes.get((record["shard"], record["member"])))
    return actual, records


def read_images(manifest: Path, shards: dict[str, Path],
                digest: str | None) -> tuple[str, list[tuple[dict[str, Any], bytes]]]:
    """The manifest's digest, and every record with its image's bytes, checked: the manifest against the digest it
    must have (when given), each image against its record's sha256. Raises ValueError naming what does not match."""
    records = read_manifest(manifest)
    actual = _check(records, digest)
    found = {(shard, name): data for shard, name, data in _members(shards, _wanted(records, shards))}
    out = []
    for record in records:
        data = found.get((record["shard"], record["member"]))
        _verify_member(record, hashlib.sha256(data).hexdigest() if data is not None else None)
        out.append((record, data))
    return actual, out
