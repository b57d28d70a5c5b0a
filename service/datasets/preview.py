"""A dataset version at a glance: a contact sheet of its first images (or of one cluster's of a partition), read
from its shards in the archive."""

from __future__ import annotations

import io
import json
import math
import tarfile
from collections.abc import Callable

from PIL import Image

from service.archive.service import read_object
from service.archive.store import ArchiveStore
from service.datasets.partitions import cluster_records
from service.models import DatasetPartition, DatasetVersion

SHOWN = 64
TILE = 48  # pixels a side for each image on the sheet


_sheets: dict[str, bytes] = {}  # by digest: a version (or a partition) never changes, so its sheet is made once
KEPT = 16


def contact_sheet(store: ArchiveStore, version: DatasetVersion) -> bytes:
    """A PNG grid of the version's first images (in manifest order), each scaled to a tile."""
    return _kept(version.digest, lambda: _sheet(store, version.files, _first_records(store, version.files)))


def cluster_sheet(store: ArchiveStore, version: DatasetVersion, partition: DatasetPartition, cluster: int) -> bytes:
    """A PNG grid of the first images (in manifest order) of one cluster of a partition of the version."""
    return _kept(f"{partition.digest}:{cluster}", lambda: _sheet(
        store, version.files, cluster_records(store, version, partition, cluster)[:SHOWN]))


def _kept(key: str, make: Callable[[], bytes]) -> bytes:
    sheet = _sheets.get(key)
    if sheet is None:
        sheet = make()
        if len(_sheets) >= KEPT:
            _sheets.pop(next(iter(_sheets)))
        _sheets[key] = sheet
    return sheet


def _first_records(store: ArchiveStore, files: dict[str, dict]) -> list[dict]:
    manifest = read_object(store, files["manifest.jsonl"]["sha256"]).decode().splitlines()
    return [json.loads(line) for line in manifest[:SHOWN] if line.strip()]


def _sheet(store: ArchiveStore, files: dict[str, dict], records: list[dict]) -> bytes:
    wanted: dict[str, set[str]] = {}
    for record in records:
        wanted.setdefault(record["shard"], set()).add(record["member"])
    images: dict[str, Image.Image] = {}
    for shard, members in wanted.items():
        with tarfile.open(fileobj=io.BytesIO(read_object(store, files[shard]["sha256"], limit=1 << 30)),
                          mode="r:") as tar:
            for entry in tar:
                if entry.isfile() and entry.name in members:
                    with Image.open(tar.extractfile(entry)) as image:
                        images[entry.name] = image.convert("RGB").resize((TILE, TILE), Image.Resampling.LANCZOS)
    tiles = [images[r["member"]] for r in records if r["member"] in images]
    columns = max(1, min(8, math.ceil(math.sqrt(len(tiles)))))
    rows = max(1, math.ceil(len(tiles) / columns))
    sheet = Image.new("RGB", (columns * (TILE + 2) + 2, rows * (TILE + 2) + 2), "white")
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        sheet.paste(tile, (2 + column * (TILE + 2), 2 + row * (TILE + 2)))
    out = io.BytesIO()
    sheet.save(out, format="PNG")
    return out.getvalue()
