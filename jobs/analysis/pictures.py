"""Pictures for the planted-copy check and the copy measurement's tests: random coloured blocks, or natural pictures
cut from any photographs (a folder of images, or a dataset package's images), and their near duplicates.

Every picture is made with a pixel of margin on each side (`MARGIN`), so that a copy of it can be cut shifted by one
pixel from the same view: `view(picture)` is the picture itself, `view(picture, dy, dx)` the same view shifted.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

MARGIN = 1
BLOCKS = 4  # a block picture is a BLOCKS x BLOCKS grid of random colours: distinct pictures lie far apart
SCALE = 3  # a natural picture is cut from SCALE times its side of photograph and shrunk (box filter)
STEP = 8  # natural pictures are cut at least this many photograph pixels apart: no two are near duplicates
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
VARIANTS = ("nudged", "shifted", "rescaled")


@dataclass(frozen=True)
class Picture:
    """A picture with its margin (uint8, (side + 2 MARGIN)² x 3) and where it came from."""

    pixels: np.ndarray
    origin: dict
    region: np.ndarray | None = None  # the photograph's pixels it was shrunk from, when it was cut from one

    def view(self, dy: int = 0, dx: int = 0) -> np.ndarray:
        """The picture, or the same view shifted by (dy, dx) pixels (at most MARGIN each way)."""
        side = self.pixels.shape[0] - 2 * MARGIN
        return self.pixels[MARGIN + dy:MARGIN + dy + side, MARGIN + dx:MARGIN + dx + side]


@dataclass(frozen=True)
class Photograph:
    """A photograph natural pictures are cut from, with what its records say of it."""

    pixels: np.ndarray
    title: str
    author: str | None
    license: str | None


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def blocks(rng: np.random.Generator, count: int, side: int) -> list[Picture]:
    """`count` pictures of BLOCKS x BLOCKS random colours, `side` pixels (and the margin) each."""
    full = side + 2 * MARGIN
    out = []
    for _ in range(count):
        colours = rng.integers(0, 256, (BLOCKS, BLOCKS, 3), dtype=np.uint8)
        cells = (np.arange(full) - MARGIN).clip(0, side - 1) * BLOCKS // side
        out.append(Picture(colours[cells][:, cells], {"title": "generated blocks", "author": "generated",
                                                      "license": "CC0"}))
    return out


def photographs(folder: Path) -> list[Photograph]:
    """The images of a folder (sorted by name), or of a dataset package (a folder with manifest.jsonl and its
    shards: each distinct image once). A folder's `photos.json` (entries with file, title, author, license) says
    what each is; an image it does not describe has no author or license on record."""
    if (folder / "manifest.jsonl").exists():
        return _package_images(folder)
    described = {}
    if (folder / "photos.json").exists():
        described = {e["file"]: e for e in json.loads((folder / "photos.json").read_text()).get("photos", [])}
    out = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        entry = described.get(path.name, {})
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        out.append(Photograph(pixels, entry.get("title") or path.name, entry.get("author"), entry.get("license")))
    if not out:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) and is no dataset package")
    return out


def from_records(records: list[tuple[dict, bytes]]) -> list[Photograph]:
    """A dataset version's images (manifest record and image bytes, each distinct image once) as photographs."""
    out = []
    for record, data in records:
        with Image.open(io.BytesIO(data)) as image:
            out.append(Photograph(np.asarray(image.convert("RGB")), str(record.get("title") or record["image_sha256"]),
                                  record.get("author"), record.get("license")))
    if not out:
        raise ValueError("the dataset version has no images")
    return out


def _package_images(folder: Path) -> list[Photograph]:
    import tarfile

    records = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line.strip()]
    first = {}
    for record in records:
        first.setdefault(record["member"], record)
    found = {}
    for shard in sorted({r["shard"] for r in first.values()}):
        with tarfile.open(folder / shard) as tar:
            for member in tar:
                if member.name in first:
                    handle = tar.extractfile(member)
                    if handle is not None:
                        with Image.open(io.BytesIO(handle.read())) as image:
                            found[member.name] = np.asarray(image.convert("RGB"))
    return [Photograph(found[m], str(r.get("title") or m), r.get("author"), r.get("license"))
            for m, r in first.items() if m in found]


def natural(photos: list[Photograph], rng: np.random.Generator, count: int, side: int, scale: int = SCALE,
            step: int | None = STEP) -> list[Picture]:
    """`count` natural pictures cut from distinct places of the photographs (a grid `step` pixels apart; None: as
    far apart as they are wide, so that no two overlap), each from `scale` times its side of photograph (less, for
    photographs too small) shrunk to `side` pixels. Overlapping crops show much the same thing: where that matters
    (a copy of one is then nearly a copy of the other), cut them apart with `step` None."""
    full = side + 2 * MARGIN
    places = []
    for which, photo in enumerate(photos):
        reach = max(1, min(scale, min(photo.pixels.shape[:2]) // full)) * full
        apart = step or reach
        places += [(which, top, left, reach) for top in range(0, photo.pixels.shape[0] - reach + 1, apart)
                   for left in range(0, photo.pixels.shape[1] - reach + 1, apart)]
    if len(places) < count:
        raise ValueError(f"the photographs give {len(places)} distinct {side}-pixel pictures, not {count}")
    out = []
    for index in rng.choice(len(places), count, replace=False):
        which, top, left, reach = places[int(index)]
        photo = photos[which]
        part = Image.fromarray(photo.pixels[top:top + reach, left:left + reach])
        out.append(Picture(np.asarray(part.resize((full, full), Image.Resampling.BOX)),
                           {"title": f"crop of {photo.title} at ({left}, {top}), {reach} pixels",
                            "author": photo.author, "license": photo.license},
                           photo.pixels[top:top + reach, left:left + reach]))
    return out


def nudged(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every pixel moved by at most 2 levels of 255: a re-encoded copy."""
    return np.clip(pixels.astype(np.int16) + rng.integers(-2, 3, pixels.shape), 0, 255).astype(np.uint8)


def rescaled(picture: Picture) -> np.ndarray:
    """The same picture uploaded at another size: cut from a photograph, the view shrunk through twice its size
    (Lanczos, then a box filter), as a thumbnail of another size of the same file would be; generated, enlarged
    twice and shrunk back."""
    if picture.region is not None:
        full = picture.pixels.shape[0]
        larger = Image.fromarray(picture.region).resize((full * 2, full * 2), Image.Resampling.LANCZOS)
        again = Picture(np.asarray(larger.resize((full, full), Image.Resampling.BOX)), picture.origin)
        return np.ascontiguousarray(again.view())
    pixels = picture.view()
    side = pixels.shape[0]
    bigger = Image.fromarray(np.ascontiguousarray(pixels)).resize((side * 2, side * 2), Image.Resampling.BICUBIC)
    return np.asarray(bigger.resize((side, side), Image.Resampling.LANCZOS))


SHIFTS = ((0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1))


def near_duplicate(picture: Picture, variant: str, rng: np.random.Generator, turn: int = 0) -> np.ndarray:
    """A near duplicate of the picture: `nudged`, `shifted` by a pixel (the turn-th of SHIFTS) or `rescaled`."""
    if variant == "nudged":
        return nudged(picture.view(), rng)
    if variant == "shifted":
        return np.ascontiguousarray(picture.view(*SHIFTS[turn % len(SHIFTS)]))
    if variant == "rescaled":
        return rescaled(picture)
    raise ValueError(f"no near duplicate is called {variant!r}: {', '.join(VARIANTS)}")
