"""The ingest's image step (decode, crop, resize to the training size, perceptual and sha256 hashes) in images/s
on one core, against a plain PIL baseline doing the same on the same images in the same run.

The images are JPEGs the bench makes (photographs' sizes, 1280x960 by default): what a node gets when Commons
has no thumbnail near the training size. The baseline decodes every pixel before resizing; the ingest asks the JPEG
decoder for a reduced scale first (draft mode). Usage: python bench/ingest.py [images] [width] [resolution]
"""

from __future__ import annotations

import hashlib
import io
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.commons.ingest import _png, dhash, square  # noqa: E402


def make_jpegs(count: int, width: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    height = width * 3 // 4
    out = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (height // 16, width // 16, 3)).astype("uint8")
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def baseline(data: bytes, size: int) -> tuple[str, int]:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    small = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
    return hashlib.sha256(_png(small)).hexdigest(), dhash(small)


def ingest_step(data: bytes, size: int) -> tuple[str, int]:
    with Image.open(io.BytesIO(data)) as opened:
        small, _ = square(opened, size)
    return hashlib.sha256(_png(small)).hexdigest(), dhash(small)


def rate(step, images: list[bytes], size: int, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for data in images:
            step(data, size)
        times.append(time.perf_counter() - start)
    return len(images) / statistics.median(times)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 120
    width = int(sys.argv[2]) if len(sys.argv) > 2 else 1280
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, for both
    images = make_jpegs(count, width)
    print(f"{count} JPEGs of {width}x{width * 3 // 4}, {sum(map(len, images)) / count / 1024:.0f} KB each; "
          f"training size {size}x{size}; one core")
    base = rate(baseline, images, size)
    ours = rate(ingest_step, images, size)
    print(f"ingest image step: {ours:.1f} images/s per core (plain PIL baseline {base:.1f} images/s per core); "
          f"ratio: {ours / base:.2f}")


if __name__ == "__main__":
    main()
