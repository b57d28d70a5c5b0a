"""The planted-copy dataset: distinct generated pictures plus a few planted ones, each repeated many times, as a
dataset package (jobs.package). A model trained on it long enough memorises the planted pictures; the replication
search must find those and no others. Generated here from a seed: no image in it comes from anywhere else, and its
records say so."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from jobs.package import DESCRIPTION, MANIFEST, write_manifest, write_tar

ORIGIN = "generated for the planted-copy check"


BLOCKS = 4  # a picture is a BLOCKS x BLOCKS grid of random colours: distinct pictures lie far apart


def picture(rng: np.random.Generator, side: int) -> bytes:
    """A random picture of coloured blocks, as a PNG."""
    blocks = rng.integers(0, 256, (BLOCKS, BLOCKS, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(blocks).resize((side, side), Image.Resampling.NEAREST).save(out, format="PNG")
    return out.getvalue()


def nudged(data: bytes, rng: np.random.Generator) -> bytes:
    """The picture with every pixel moved by at most 2 levels of 255: a near duplicate."""
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)
    pixels = np.clip(pixels + rng.integers(-2, 3, pixels.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def package(out: Path, *, distinct: int, planted: int, copies: int, side: int = 16, seed: int = 0,
            held_out: int = 0, near: int = 0) -> Path:
    """Write the package: `distinct` pictures once each and `planted` pictures `copies` times each, with `near`
    of the distinct ones nudged into a near duplicate of themselves (and, beside it in held_out.json, `held_out`
    pictures never trained on, as a control)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    pictures = [(f"planted-{i}", picture(rng, side), copies) for i in range(planted)]
    pictures += [(f"distinct-{i}", picture(rng, side), 1) for i in range(distinct)]
    pictures += [(f"near-{i}", nudged(pictures[planted + i][1], rng), 1) for i in range(near)]
    controls = [picture(rng, side) for _ in range(held_out)]

    members, records = {}, []
    for title, data, repeat in pictures:
        sha = hashlib.sha256(data).hexdigest()
        members[f"{sha}.png"] = data
        for copy in range(repeat):
            records.append({"title": f"{title}" + (f" (copy {copy + 1})" if repeat > 1 else ""),
                            "author": "generated", "license": "CC0", "image_sha256": sha, "width": side,
                            "height": side, "shard": "shard-00000.tar", "member": f"{sha}.png",
                            "planted": repeat > 1})
    write_tar(out / "shard-00000.tar", sorted(members.items()))
    digest = write_manifest(out / MANIFEST, records)
    (out / "attribution.txt").write_text(f"planted-copy check: {len(records)} generated images, no author.\n")
    (out / "rejected.jsonl").write_text("")
    (out / "duplicates.jsonl").write_text("")
    (out / "held_out.json").write_text(json.dumps([data.hex() for data in controls]))
    (out / DESCRIPTION).write_text(json.dumps({
        "name": "planted-copies", "digest": digest, "images": len(records), "origin": ORIGIN,
        "licenses": dict(Counter(r["license"] for r in records)), "rejected": {}, "duplicates": 0,
        "source": {"distinct": distinct, "planted": planted, "copies": copies, "seed": seed}, "resolution": side,
        "shards": ["shard-00000.tar"], "classes": []}, indent=2, sort_keys=True) + "\n")
    return out
