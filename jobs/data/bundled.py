"""The bundled `skimage-samples` set as a dataset package (jobs.package), so that it is registered, fetched and
checked like any other dataset version. Its images are scikit-image's sample images, not Commons files: its origin
says so, and so does its attribution file."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from jobs.package import DESCRIPTION, MANIFEST, write_manifest, write_tar

NAME = "skimage-samples"
FOLDER = Path(__file__).parent / "skimage_samples"
ORIGIN = "scikit-image sample images"
SHARD = "shard-00000.tar"


def package(out: Path) -> Path:
    """Write the package into `out` (the same bytes every time); returns `out`."""
    described = json.loads((FOLDER / "manifest.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    records, members = [], []
    for entry in sorted(described["images"], key=lambda e: e["title"]):
        data = (FOLDER / entry["file"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ValueError(f"{entry['file']} does not match its manifest checksum")
        member = f"{entry['sha256']}.png"
        members.append((member, data))
        records.append({
            "title": entry["title"], "author": entry["author"], "author_url": None, "credit": None,
            "license": entry["license"], "license_url": entry["license_url"], "description_url": entry["source_url"],
            "attribution_required": False, "class": entry["class"], "image_sha256": entry["sha256"],
            "width": described["side"], "height": described["side"], "shard": SHARD, "member": member,
        })
    write_tar(out / SHARD, members)
    digest = write_manifest(out / MANIFEST, records)
    lines = [f"{NAME}: {len(records)} images from scikit-image's sample data (not from Wikimedia Commons), each "
             "under the license named with it.", ""]
    lines += [f"{r['title']} — by {r['author']} — {r['license']} ({r['license_url']}) — {r['description_url']}"
              for r in records]
    (out / "attribution.txt").write_text("\n".join(lines) + "\n")
    (out / "rejected.jsonl").write_text("")
    (out / "duplicates.jsonl").write_text("")
    (out / DESCRIPTION).write_text(json.dumps({
        "name": NAME, "digest": digest, "images": len(records), "origin": ORIGIN,
        "licenses": dict(Counter(r["license"] for r in records)), "rejected": {}, "duplicates": 0,
        "source": {"bundled": "scikit-image sample images, reduced to 32x32"}, "resolution": described["side"],
        "shards": [SHARD], "classes": sorted({r["class"] for r in records})}, indent=2, sort_keys=True) + "\n")
    return out
