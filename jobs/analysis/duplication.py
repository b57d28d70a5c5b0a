"""Duplication audit: how much of a dataset version is repeated, exactly or nearly.

Run by jobs.runner as `python -m jobs.analysis.duplication --config JSON --inputs JSON --output DIR`, with the
version's manifest and shards as inputs. Exact duplicates are manifest records that share an image (the same
sha256); near duplicates are pairs of distinct images whose every 4x4 tile, at `resolution`, differs by at most
`max_tile_rms` (root-mean-square, on a 0 to 1 scale): a tiled comparison, so two pictures that differ in one
corner are not called duplicates. Duplicated training images are the ones a model copies first; a replication
search's results (`times_in_training`) show how often each copied image was repeated.

Writes results.json (the same inputs give the same bytes), report.html and outputs.json declaring them.
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jobs import dataset as datasets
from jobs import progress
from jobs.analysis import descriptors, report, search
from jobs.analysis.common import arguments, grid_for, rounded, to_unit, write
from jobs.config import DuplicationConfig

NEIGHBOURS = 10  # near duplicates looked for per image


def audit(cfg: DuplicationConfig, inputs: dict[str, Path]) -> tuple[dict[str, Any], np.ndarray]:
    data = datasets.load(inputs, cfg.dataset_digest, cfg.resolution, name=cfg.dataset)
    shas = [e["image_sha256"] for e in data.entries]
    repeats = Counter(shas)
    _, first = np.unique(shas, return_index=True)
    first = np.sort(first)
    images = to_unit(data.images[torch.from_numpy(first)])
    grid = grid_for(cfg.resolution)
    tiles = descriptors.tiles(images, grid)
    tile_values = tiles.shape[2]
    k = min(NEIGHBOURS, len(images) - 1) + 1
    distances, nearest = search.tiled_l2(tiles, tiles, k) if len(images) > 1 else (np.zeros((1, 1)), np.zeros((1, 1)))
    progress.report(1, 1, phase="search")
    limit = cfg.max_tile_rms * np.sqrt(tile_values)
    pairs = sorted({(min(a, int(b)), max(a, int(b))) for a in range(len(images))
                    for d, b in zip(distances[a, 1:], nearest[a, 1:], strict=True) if d <= limit})

    def who(index: int) -> dict[str, Any]:
        entry = data.entries[first[index]]
        return {"index": index, "title": entry.get("title"), "author": entry.get("author"),
                "license": entry.get("license"), "image_sha256": entry.get("image_sha256"),
                "times_in_manifest": repeats[entry.get("image_sha256")]}

    repeated = [who(i) for i in range(len(first)) if repeats[shas[first[i]]] > 1]
    near = [{"a": who(a), "b": who(b), "tile_rms": float(distances[a][list(nearest[a]).index(b)] /
                                                        np.sqrt(tile_values))} for a, b in pairs]
    linked: dict[int, set[int]] = defaultdict(set)
    for a, b in pairs:
        linked[a].add(b)
        linked[b].add(a)
    results = rounded({
        "kind": "duplication", "config": cfg.model_dump(mode="json"),
        "dataset": {"ref": cfg.dataset, "digest": data.digest, "records": len(shas), "distinct_images": len(first)},
        "summary": {"records_repeating_an_image": len(shas) - len(first), "images_repeated": len(repeated),
                    "most_repeats": max(repeats.values()), "near_duplicate_pairs": len(pairs),
                    "images_with_a_near_duplicate": len(linked),
                    "duplicated_fraction": (len(shas) - len(first) + len(linked)) / max(len(shas), 1)},
        "repeated": sorted(repeated, key=lambda r: (-r["times_in_manifest"], r["index"])),
        "near_duplicates": near,
        "repeats_histogram": {str(times): n for times, n in sorted(Counter(repeats.values()).items())},
    })
    return results, images


def render(results: dict[str, Any], images: np.ndarray, shown: int = 40) -> str:
    s, d = results["summary"], results["dataset"]
    rows = "".join(
        f'<tr><td><img src="{report.png(images[p["a"]["index"]], 3)}" alt="first image"></td>'
        f'<td><img src="{report.png(images[p["b"]["index"]], 3)}" alt="second image"></td>'
        f'<td>{p["tile_rms"]:.4f}</td><td>{report.who(p["a"])}<br>{report.who(p["b"])}</td></tr>'
        for p in results["near_duplicates"][:shown])
    repeated = "".join(f"<li>{report.who(r)}: {r['times_in_manifest']} times</li>" for r in results["repeated"][:50])
    counts = [int(times) for times, n in results["repeats_histogram"].items() for _ in range(int(n))]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Duplication audit · {html.escape(str(d["ref"]))}</title><style>{report.STYLE}</style></head><body>
<h1>Duplication audit: {html.escape(str(d["ref"]))}</h1>
<p>{d["records"]} records, {d["distinct_images"]} distinct images ({html.escape(str(d["digest"]))}).
{s["records_repeating_an_image"]} records repeat an image already in the set ({s["images_repeated"]} images
repeated, at most {s["most_repeats"]} times); {s["near_duplicate_pairs"]} pairs of distinct images are near
duplicates (every tile within {results["config"]["max_tile_rms"]:g} RMS). In all, {s["duplicated_fraction"]:.1%}
of the records are duplicated in one way or the other.</p>
<h2>How often each image appears</h2><p>{report.histogram(counts, None, "times each image appears", bins=20)}</p>
<h2>Images repeated in the manifest</h2><ul>{repeated or "<li>none</li>"}</ul>
<h2>Near duplicates</h2>
<table><tr><th>Image</th><th>Its near duplicate</th><th>Largest tile RMS</th><th>Provenance</th></tr>{rows}</table>
</body></html>
"""


def main(cfg: DuplicationConfig, inputs: dict[str, Path], output: Path) -> dict[str, Any]:
    results, images = audit(cfg, inputs)
    write(output, "duplication", results, render(results, images))
    s = results["summary"]
    print(f"done: {s['records_repeating_an_image']} repeated records, {s['near_duplicate_pairs']} near-duplicate "
          f"pairs", flush=True)
    return results


def parse(argv: list[str] | None = None) -> tuple[DuplicationConfig, dict[str, Path], Path]:
    config, inputs, output = arguments("jobs.analysis.duplication", __doc__, argv)
    return DuplicationConfig.model_validate_json(config), inputs, output


if __name__ == "__main__":
    main(*parse())
