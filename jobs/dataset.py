"""The bundled `skimage-samples` dataset: images plus a manifest with license, author and source for each."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

DATA_ROOT = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Dataset:
    name: str
    images: torch.Tensor  # N x 3 x R x R in [-1, 1]
    entries: list[dict[str, Any]]  # manifest entries of the images used, in order
    digest: str  # sha256 over the manifest entries used


def load_manifest(name: str) -> dict[str, Any]:
    folder = DATA_ROOT / name.replace("-", "_")
    return json.loads((folder / "manifest.json").read_text())


def load(name: str, resolution: int, exclude_authors: list[str] | None = None) -> Dataset:
    """Load, verify and resize a bundled dataset, leaving out the named authors' images."""
    folder = DATA_ROOT / name.replace("-", "_")
    manifest = load_manifest(name)
    excluded = {author.casefold() for author in exclude_authors or []}
    entries = [e for e in manifest["images"] if e["author"].casefold() not in excluded]
    if not entries:
        raise ValueError(f"dataset {name!r} has no images left after excluding {sorted(excluded)}")
    arrays = []
    for entry in entries:
        raw = (folder / entry["file"]).read_bytes()
        if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
            raise ValueError(f"{entry['file']} does not match its manifest checksum")
        with Image.open(folder / entry["file"]) as image:
            image = image.convert("RGB").resize((resolution, resolution), Image.Resampling.BICUBIC)
            arrays.append(np.asarray(image, dtype=np.float32) / 127.5 - 1.0)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    digest = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
    return Dataset(name=name, images=images, entries=entries, digest=digest)
