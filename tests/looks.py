"""Images of three looks that a descriptor tells apart (vertical stripes, horizontal stripes, a smooth blob), for
the tests of partitions and routers; and a dataset package of them, as a job is sent one."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from jobs.package import INPUT_PREFIX, MANIFEST, write_manifest, write_tar


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray((np.clip(array, 0, 1) * 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def looks(count: int, seed: int = 0) -> tuple[list[dict], list[bytes], list[int]]:
    """`count` images of each of three looks (vertical stripes, horizontal stripes, a smooth blob), noisy and in
    different colours, shuffled: their records, PNGs and true looks."""
    rng = np.random.default_rng(seed)
    grid = np.arange(32)
    made = []
    for look in range(3):
        for _ in range(count):
            colour = rng.uniform(0.2, 1.0, 3)
            if look == 0:
                shape = ((grid[None, :] + rng.integers(8)) // 4 % 2).repeat(32, 0)
            elif look == 1:
                shape = ((grid[:, None] + rng.integers(8)) // 4 % 2).repeat(32, 1)
            else:
                centre = rng.uniform(8, 24, 2)
                shape = np.exp(-((grid[:, None] - centre[0]) ** 2 + (grid[None, :] - centre[1]) ** 2) / 60)
            image = shape[..., None] * colour + rng.normal(0, 0.03, (32, 32, 3))
            made.append((look, _png(image)))
    order = rng.permutation(len(made))
    looks = [made[i][0] for i in order]
    pngs = [made[i][1] for i in order]
    records = [{"image_sha256": hashlib.sha256(data).hexdigest()} for data in pngs]
    return records, pngs, looks


def package(folder: Path, records: list[dict], pngs: list[bytes]) -> tuple[str, dict[str, Path]]:
    """The images as a dataset package in `folder` (one shard): its digest, and the job inputs naming its files."""
    folder.mkdir(parents=True, exist_ok=True)
    shard = "shard-00000.tar"
    full = [{**record, "title": f"look {index}", "author": "the tests", "license": "CC0",
             "shard": shard, "member": f"{record['image_sha256']}.png"} for index, record in enumerate(records)]
    write_tar(folder / shard, [(r["member"], data) for r, data in zip(full, pngs, strict=True)])
    digest = write_manifest(folder / MANIFEST, full)
    return digest, {f"{INPUT_PREFIX}{MANIFEST}": folder / MANIFEST, f"{INPUT_PREFIX}{shard}": folder / shard}
