"""The planted-copy dataset: distinct pictures plus a few planted ones, each repeated many times, as a dataset
package (jobs.package). A model trained on it long enough memorises the planted pictures; the replication search
must find those and no others.

The pictures are generated blocks (from a seed: nothing in them comes from anywhere else), or natural pictures cut
from photographs (a folder of images, or a dataset package's images: jobs.analysis.pictures), whose records name the
photograph, its author and license. A planted picture's repetitions may be near duplicates of it rather than
identical bytes (`variants`: that share of them nudged, shifted by a pixel or rescaled), as Commons holds one
picture re-encoded, re-cropped and uploaded at several sizes; `near` of the distinct pictures get one near twin each.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from itertools import cycle
from pathlib import Path

import numpy as np

from jobs.analysis import pictures as made
from jobs.package import DESCRIPTION, MANIFEST, write_manifest, write_tar

ORIGIN = "generated for the planted-copy check"
NATURAL_ORIGIN = "cut from photographs for the planted-copy check"


def package(out: Path, *, distinct: int, planted: int, copies: int, side: int = 16, seed: int = 0,
            held_out: int = 0, near: int = 0, photos: Path | list[made.Photograph] | None = None,
            variants: float = 0.0, scale: int = made.SCALE, step: int | None = made.STEP) -> Path:
    """Write the package: `distinct` pictures once each and `planted` pictures `copies` times each (a `variants`
    share of those repetitions near duplicates), `near` of the distinct ones with a near twin, and beside it in
    held_out.json `held_out` pictures never trained on, as a control. `photos`: cut natural pictures from this
    folder or dataset package (or these photographs) instead of generating blocks, each from `scale` times its side
    of photograph, `step` pixels apart (None: none overlapping)."""
    if not 0 <= variants <= 1:
        raise ValueError("variants is a share of the repetitions, from 0 to 1")
    if near > distinct:
        raise ValueError(f"{near} near twins asked for {distinct} distinct pictures")
    rng = np.random.default_rng(seed)
    source = made.photographs(photos) if isinstance(photos, Path) else photos
    if source is None:  # in this order, so that a seed gives the pictures it always gave
        planted_pictures, distinct_pictures = made.blocks(rng, planted, side), made.blocks(rng, distinct, side)
    else:  # from distinct places of the photographs, the controls too
        everything = made.natural(source, rng, planted + distinct + held_out, side, scale, step)
        planted_pictures, distinct_pictures = everything[:planted], everything[planted:planted + distinct]
    pictures: list[tuple[str, np.ndarray, dict, bool]] = []
    exact = copies - round(copies * variants)
    for i, picture in enumerate(planted_pictures):
        kinds = cycle(made.VARIANTS)
        for copy in range(copies):
            variant = "exact" if copy < exact else next(kinds)
            pixels = picture.view() if variant == "exact" else made.near_duplicate(picture, variant, rng, copy)
            label = f"copy {copy + 1}" + ("" if variant == "exact" else f", {variant}") if copies > 1 else ""
            pictures.append((f"planted-{i}" + (f" ({label})" if label else ""), pixels, picture.origin,
                             copies > 1))
    pictures += [(f"distinct-{i}", p.view(), p.origin, False) for i, p in enumerate(distinct_pictures)]
    kinds = cycle(made.VARIANTS if source is not None else ("nudged",))
    pictures += [(f"near-{i}", made.near_duplicate(distinct_pictures[i], next(kinds), rng, i),
                  distinct_pictures[i].origin, False) for i in range(near)]
    controls = [p.view() for p in (made.blocks(rng, held_out, side) if source is None
                                   else everything[planted + distinct:])]

    members, records = {}, []
    for title, pixels, origin, is_planted in pictures:
        data = made.png(np.ascontiguousarray(pixels))
        sha = hashlib.sha256(data).hexdigest()
        members[f"{sha}.png"] = data
        described = {} if source is None else {"source": origin["title"]}
        records.append({"title": title, "author": origin["author"], "license": origin["license"],
                        "image_sha256": sha, "width": side, "height": side, "shard": "shard-00000.tar",
                        "member": f"{sha}.png", "planted": is_planted, **described})
    out.mkdir(parents=True, exist_ok=True)
    write_tar(out / "shard-00000.tar", sorted(members.items()))
    digest = write_manifest(out / MANIFEST, records)
    authors = sorted({str(r["author"]) for r in records if r["author"]})
    (out / "attribution.txt").write_text(
        f"planted-copy check: {len(records)} generated images, no author.\n" if source is None else
        f"planted-copy check: {len(records)} pictures cut from photographs by {', '.join(authors) or 'no one named'}"
        " (each record names its photograph and license).\n")
    (out / "rejected.jsonl").write_text("")
    (out / "duplicates.jsonl").write_text("")
    (out / "held_out.json").write_text(json.dumps([made.png(np.ascontiguousarray(c)).hex() for c in controls]))
    (out / DESCRIPTION).write_text(json.dumps({
        "name": "planted-copies", "digest": digest, "images": len(records),
        "origin": ORIGIN if source is None else NATURAL_ORIGIN,
        "licenses": dict(Counter(str(r["license"]) for r in records)), "rejected": {}, "duplicates": 0,
        "source": {"distinct": distinct, "planted": planted, "copies": copies, "seed": seed, "variants": variants,
                   "near": near, "pictures": "blocks" if photos is None else
                   photos.name if isinstance(photos, Path) else f"{len(photos)} photographs"},
        "resolution": side, "shards": ["shard-00000.tar"], "classes": []}, indent=2, sort_keys=True) + "\n")
    return out
