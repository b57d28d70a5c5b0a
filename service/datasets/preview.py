"""A dataset version at a glance: a contact sheet of its first images, read from its shards in the archive."""

from __future__ import annotations

import io
import json
import math
import tarfile

from PIL import Image

from service.archive.service import read_object
from service.archive.store import ArchiveStore
from service.models import DatasetVersion

SHOWN = 64
TILE = 48  # pixels a side for each image on the sheet


_sheets: dict[str, bytes] = {}  # by digest: a version never changes, so its sheet is made once
KEPT = 16


def contact_sheet(store: ArchiveStore, version: DatasetVersion) -> bytes:
    """A PNG grid of the version's first images (in manifest order), each scaled to a tile."""
    sheet = _sheets.get(version.digest)
    if sheet is None:
        sheet = _sheet(store, version.files)
        if len(_sheets) >= KEPT:
            _sheets.pop(next(iter(_sheets)))
        _sheets[version.digest] = sheet
    return sheet


def _sheet(store: ArchiveStore, files: dict[str, dict]) -> bytes:
    manifest = read_object(store, files["manifest.jsonl"]["sha256"]).decode().splitlines()
    records = [json.loads(line) for line in manifest[:SHOWN] if line.strip()]
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
