"""Duplication audit: how much of a dataset version is repeated, exactly or nearly.

Run by jobs.runner as `python -m jobs.analysis.duplication --config JSON --inputs JSON --output DIR`, with the
version's manifest and shards as inputs. Exact duplicates are manifest records that share an image (the same
sha256); near duplicates are pairs of distinct images whose every 4x4 tile, at `resolution` and at some shift of
at most `max_shift` pixels, differs by at most `max_tile_rms` (root-mean-square, on a 0 to 1 scale): a tiled
comparison, so two pictures that differ in one corner are not called duplicates (jobs.analysis.neardups). Connected
near duplicates are one picture: the audit counts pictures and how many records each has. With a learned copy
descriptor (`descriptor: name@N`), pairs it calls copies that the pixel test does not (crops, mirror images, colour
changes) are listed too. Duplicated training images are the ones a model copies first; a replication
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
from jobs.analysis import neardups, report, search
from jobs.analysis.common import plan_arguments, rounded, to_unit, write
from jobs.analysis.copytest import descriptor_for
from jobs.analysis.replication import margin
from jobs.config import DuplicationConfig

NEIGHBOURS = 10  # near duplicates looked for per image


def copies_by_descriptor(vectors: np.ndarray, cluster: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Pairs of images of different clusters that a learned descriptor calls copies: (a, b, score), a < b, where
    b is a's most similar image outside a's cluster and the score is that similarity less a's best one in a third
    cluster (SSCD's normalised score), above `threshold`."""
    sims, nearest = search.topk_similarity(vectors, vectors, min(NEIGHBOURS * 6, len(vectors)))
    found: dict[tuple[int, int], float] = {}
    for a in range(len(vectors)):
        outside = cluster[nearest[a]] != cluster[a]
        if outside.sum() < 2:
            continue
        score, b = margin(sims[a][outside], nearest[a][outside], cluster), int(nearest[a][outside][0])
        if score > threshold:
            key = (min(a, b), max(a, b))
            found[key] = max(found.get(key, -1.0), score)
    return [(a, b, score) for (a, b), score in sorted(found.items())]


def audit(cfg: DuplicationConfig, inputs: dict[str, Path]) -> tuple[dict[str, Any], np.ndarray]:
    data = datasets.load(inputs, cfg.dataset_digest, cfg.resolution, name=cfg.dataset)
    shas = [e["image_sha256"] for e in data.entries]
    repeats = Counter(shas)
    _, first = np.unique(shas, return_index=True)
    first = np.sort(first)
    images = to_unit(data.images[torch.from_numpy(first)])
    pairs = neardups.near_pairs(images, cfg.max_tile_rms, cfg.max_shift)
    cluster = neardups.clusters(images, cfg.max_tile_rms, cfg.max_shift, pairs=pairs)
    descriptor = descriptor_for(cfg, inputs)
    progress.report(1, 2, phase="search")
    learned_pairs: list[tuple[int, int, float]] = []
    if descriptor.decides and len(images) > 2:
        learned_pairs = copies_by_descriptor(descriptor.describe(images), cluster,
                                             float(descriptor.operating_threshold or 1.0))
    progress.report(2, 2, phase="search")

    def who(index: int) -> dict[str, Any]:
        entry = data.entries[first[index]]
        return {"index": index, "title": entry.get("title"), "author": entry.get("author"),
                "license": entry.get("license"), "image_sha256": entry.get("image_sha256"),
                "times_in_manifest": repeats[entry.get("image_sha256")]}

    repeated = [who(i) for i in range(len(first)) if repeats[shas[first[i]]] > 1]
    near = [{"a": who(a), "b": who(b), "tile_rms": rms} for a, b, rms in pairs]
    linked = {i for a, b, _ in pairs for i in (a, b)}
    members: dict[int, list[int]] = defaultdict(list)
    for index, head in enumerate(cluster):
        members[int(head)].append(index)
    pictures = [{"images": [who(i) for i in group], "records": sum(repeats[shas[first[i]]] for i in group)}
                for group in members.values() if len(group) > 1]
    pictures.sort(key=lambda p: (-p["records"], p["images"][0]["index"]))
    records_per_picture = Counter(sum(repeats[shas[first[i]]] for i in group) for group in members.values())
    results = rounded({
        "kind": "duplication", "config": cfg.model_dump(mode="json"),
        "dataset": {"ref": cfg.dataset, "digest": data.digest, "records": len(shas), "distinct_images": len(first)},
        "descriptor": {"name": descriptor.name, "decides": descriptor.decides, **(descriptor.about or {})},
        "summary": {"records_repeating_an_image": len(shas) - len(first), "images_repeated": len(repeated),
                    "most_repeats": max(repeats.values()), "near_duplicate_pairs": len(pairs),
                    "images_with_a_near_duplicate": len(linked), "pictures": len(members),
                    "pictures_with_near_duplicates": len(pictures),
                    "most_records_of_one_picture": max(records_per_picture),
                    "descriptor_pairs": len(learned_pairs),
                    "duplicated_fraction": (len(shas) - len(first) + len(linked)) / max(len(shas), 1)},
        "repeated": sorted(repeated, key=lambda r: (-r["times_in_manifest"], r["index"])),
        "near_duplicates": near,
        "pictures_with_near_duplicates": pictures[:200],
        "descriptor_pairs": [{"a": who(a), "b": who(b), "score": score} for a, b, score in learned_pairs[:500]],
        "repeats_histogram": {str(times): n for times, n in sorted(Counter(repeats.values()).items())},
        "records_per_picture_histogram": {str(times): n for times, n in sorted(records_per_picture.items())},
    })
    return results, images


def _thumbnails(images: np.ndarray, shown: list[dict[str, Any]]) -> str:
    return "".join(f'<img src="{report.png(images[i["index"]], 3)}" alt="a version">' for i in shown)


def render(results: dict[str, Any], images: np.ndarray, shown: int = 40) -> str:
    s, d = results["summary"], results["dataset"]
    rows = "".join(
        f'<tr><td><img src="{report.png(images[p["a"]["index"]], 3)}" alt="first image"></td>'
        f'<td><img src="{report.png(images[p["b"]["index"]], 3)}" alt="second image"></td>'
        f'<td>{p["tile_rms"]:.4f}</td><td>{report.who(p["a"])}<br>{report.who(p["b"])}</td></tr>'
        for p in results["near_duplicates"][:shown])
    repeated = "".join(f"<li>{report.who(r)}: {r['times_in_manifest']} times</li>" for r in results["repeated"][:50])
    versions = "".join(
        f"<tr><td>{_thumbnails(images, p['images'][:8])}</td><td>{len(p['images'])}</td><td>{p['records']}</td>"
        f"<td>{report.who(p['images'][0])}</td></tr>" for p in results["pictures_with_near_duplicates"][:shown])
    learned = "".join(
        f'<tr><td><img src="{report.png(images[p["a"]["index"]], 3)}" alt="first image"></td>'
        f'<td><img src="{report.png(images[p["b"]["index"]], 3)}" alt="second image"></td>'
        f'<td>{p["score"]:.3f}</td><td>{report.who(p["a"])}<br>{report.who(p["b"])}</td></tr>'
        for p in results["descriptor_pairs"][:shown])
    descriptor = results["descriptor"]
    learned_section = (f"""<h2>Copies the descriptor {html.escape(str(descriptor["name"]))} finds</h2>
<p>{s["descriptor_pairs"]} pairs of images from different pictures where the second is the first's most similar
image and stands out from the rest by at least the descriptor's operating threshold
({descriptor.get("operating_threshold", 0):.3f}, on its similarity less the next picture's): crops, mirror images or
colour changes of one another that the pixel test does not call near duplicates.</p>
<table><tr><th>Image</th><th>Its copy?</th><th>Score</th><th>Provenance</th></tr>{learned}</table>"""
                       if descriptor["decides"] else "")
    counts = [int(times) for times, n in results["repeats_histogram"].items() for _ in range(int(n))]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Duplication audit · {html.escape(str(d["ref"]))}</title><style>{report.STYLE}</style></head><body>
<h1>Duplication audit: {html.escape(str(d["ref"]))}</h1>
<p>{d["records"]} records, {d["distinct_images"]} distinct images ({html.escape(str(d["digest"]))}).
{s["records_repeating_an_image"]} records repeat an image already in the set ({s["images_repeated"]} images
repeated, at most {s["most_repeats"]} times); {s["near_duplicate_pairs"]} pairs of distinct images are near
duplicates (every tile within {results["config"]["max_tile_rms"]:g} RMS, at a shift of at most
{results["config"]["max_shift"]} pixels). In all, {s["duplicated_fraction"]:.1%}
of the records are duplicated in one way or the other.</p>
<h2>How often each image appears</h2><p>{report.histogram(counts, None, "times each image appears", bins=20)}</p>
<h2>Images repeated in the manifest</h2><ul>{repeated or "<li>none</li>"}</ul>
<h2>Pictures with several versions</h2>
<p>{s["pictures"]} distinct pictures (near duplicates joined); {s["pictures_with_near_duplicates"]} of them have
several versions, the most-repeated {s["most_records_of_one_picture"]} records.</p>
<table><tr><th>Versions</th><th>Images</th><th>Records</th><th>First</th></tr>{versions}</table>
{learned_section}
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
    return plan_arguments("jobs.analysis.duplication", __doc__, DuplicationConfig, argv)


if __name__ == "__main__":
    main(*parse())
