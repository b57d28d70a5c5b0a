"""Extraction attack, after Carlini et al. (2023): what does the model regenerate again and again, and is it a
training image?

Run by jobs.runner as `python -m jobs.analysis.extraction --config JSON --inputs JSON --output DIR`, with the model
version's checkpoint and its training set as inputs. It draws `samples_per_class` images per class (seeds seed,
seed+1, …). Two generations are near duplicates of each other when their tiled L2 distance is under half the
distance at which the closest pairs of distinct training images lie (the 1st percentile; a memorised image comes
out nearly the same every time, a learned one does not). As in the paper, a group is a clique: at least
`min_group` generations, each a near duplicate of every other (among its NEIGHBOURS nearest). A group is matched,
by its medoid, against the training set with the replication search's copy test (near-duplicate training images
counted as one picture; a learned descriptor, where the plan names one, deciding beside the distance ratio): a match
is an extracted training image.

Writes results.json (the same inputs and seed give the same bytes), report.html and outputs.json.
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jobs import progress
from jobs.analysis import descriptors, report, search
from jobs.analysis.common import grid_for, model_analysis_arguments, rounded, subject, to_unit, training_set, write
from jobs.analysis.copytest import descriptor_for
from jobs.analysis.replication import calibrated, decide, times_in_training
from jobs.config import ExtractionConfig
from jobs.model import draw_samples, pick_device

GENERATION_FRACTION = 0.5  # near duplicates among generations: under this fraction of the training pairs' distance


EXACT_CLIQUE_LIMIT = 120  # components up to this size get an exact largest clique; larger ones a greedy one
NEIGHBOURS = 64  # each generation's nearest others examined for near duplicates


def components(edges: list[tuple[int, int]], count: int) -> list[list[int]]:
    """Connected components of the near-duplicate graph, largest first (then by their first member)."""
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in edges:
        parent[root(a)] = root(b)
    members: dict[int, list[int]] = {}
    for i in range(count):
        members.setdefault(root(i), []).append(i)
    return sorted(members.values(), key=lambda g: (-len(g), g[0]))


def largest_clique(nodes: set[int], adjacent: dict[int, set[int]]) -> list[int]:
    """A largest set of `nodes` that are all near duplicates of one another: exact (Bron–Kerbosch with a pivot)
    for small sets, greedy by degree past EXACT_CLIQUE_LIMIT. Ties go to the smallest members, so the same graph
    gives the same clique."""
    if len(nodes) > EXACT_CLIQUE_LIMIT:
        clique: list[int] = []
        for node in sorted(nodes, key=lambda n: (-len(adjacent[n] & nodes), n)):
            if all(node in adjacent[member] for member in clique):
                clique.append(node)
        return sorted(clique)
    best: list[int] = []

    def expand(chosen: list[int], candidates: set[int], excluded: set[int]) -> None:
        nonlocal best
        if not candidates and not excluded:
            if len(chosen) > len(best) or (len(chosen) == len(best) and sorted(chosen) < best):
                best = sorted(chosen)
            return
        if len(chosen) + len(candidates) < len(best):
            return
        pivot = max(candidates | excluded, key=lambda n: (len(adjacent[n] & candidates), -n))
        for node in sorted(candidates - adjacent[pivot]):
            expand([*chosen, node], candidates & adjacent[node], excluded & adjacent[node])
            candidates = candidates - {node}
            excluded = excluded | {node}

    expand([], set(nodes), set())
    return best


def cliques_of(edges: list[tuple[int, int]], count: int, smallest: int) -> list[list[int]]:
    """Groups of generations all near duplicates of one another (cliques, as Carlini et al. ask), at least
    `smallest` strong: within each connected component the largest clique is taken, then the largest among the
    rest, and so on. Largest first."""
    adjacent: dict[int, set[int]] = {i: set() for i in range(count)}
    for a, b in edges:
        if a != b:
            adjacent[a].add(b)
            adjacent[b].add(a)
    found = []
    for component in components(edges, count):
        rest = set(component)
        while len(rest) >= smallest:
            clique = largest_clique(rest, adjacent)
            if len(clique) < smallest:
                break
            found.append(clique)
            rest -= set(clique)
    return sorted(found, key=lambda g: (-len(g), g[0]))


def _group(group: list[int], medoid: int, row: int, verdicts: Any, entries: list[dict], first: np.ndarray,
           cluster: np.ndarray, seen: Counter, repeats: Counter, seeds: list[int], classes: list[str],
           labels: list[int]) -> dict[str, Any]:
    """A group of near-identical generations, matched by its medoid (row `row` of the verdicts)."""
    nearest = int(verdicts.copy_of[row]) if verdicts.copy[row] else int(verdicts.tiled_i[row, 0])
    entry = entries[first[nearest]]
    return {
        "size": len(group), "seeds": [seeds[m] for m in group], "medoid": medoid, "medoid_seed": seeds[medoid],
        **({"class": classes[labels[medoid]]} if classes else {}),
        "nearest": {"index": nearest, "title": entry.get("title"), "author": entry.get("author"),
                    "license": entry.get("license"), "image_sha256": entry.get("image_sha256"),
                    "times_in_training": seen[int(cluster[nearest])],
                    "exact_times_in_training": repeats[entry.get("image_sha256")],
                    "distance": float(verdicts.tiled_d[row, 0]), "similarity": float(verdicts.similarity[row, 0])},
        "ratio": float(verdicts.ratio[row]), "extracted": bool(verdicts.copy[row]),
        "by": verdicts.tests(row)}


def analyse(cfg: ExtractionConfig, checkpoint: Path | None, inputs: dict[str, Path]) -> tuple[dict[str, Any], dict]:
    device = pick_device()
    unet, scheduler, meta = subject(cfg, checkpoint, inputs, device)
    side = int(unet.config.sample_size)
    classes = list(meta.get("classes") or [])
    per = cfg.samples_per_class
    drawn, seeds, labels = [], [], []
    for c in range(max(1, len(classes))):
        batch_seeds = [cfg.seed + c * per + i for i in range(per)]
        batch_labels = [c] * per if classes else None
        drawn.append(draw_samples(unet, scheduler, batch_seeds, cfg.inference_steps, device, sampler=cfg.sampler,
                                  labels=batch_labels))
        seeds += batch_seeds
        labels += [c] * per
        progress.report(c + 1, max(1, len(classes)) + 1, phase="sample")
    samples = to_unit(torch.cat(drawn))
    data = training_set(cfg, inputs, side)
    shas = [e["image_sha256"] for e in data.entries]
    repeats = Counter(shas)
    _, first = np.unique(shas, return_index=True)
    first = np.sort(first)
    training = to_unit(data.images[torch.from_numpy(first)])
    grid = grid_for(side)
    sample_tiles, train_tiles = descriptors.tiles(samples, grid), descriptors.tiles(training, grid)
    descriptor = descriptor_for(cfg, inputs)
    train_vectors = descriptor.describe(training)
    # Calibrated on one image per near-duplicate cluster, as the replication search is; a group is matched with the
    # same test, and a cluster's images count as one picture, repeated as often as all of them together.
    cluster, heads, thresholds = calibrated(training, train_tiles, train_vectors, cfg, descriptor)
    limit = GENERATION_FRACTION * thresholds["tiled_l2"]
    near_d, near_i = search.tiled_nearest(sample_tiles, sample_tiles, min(len(samples), NEIGHBOURS + 1))
    edges = [(a, int(b)) for a in range(len(samples)) for d, b in zip(near_d[a], near_i[a], strict=True)
             if d < limit and int(b) != a]
    groups = cliques_of(edges, len(samples), cfg.min_group)
    medoids = []
    for group in groups:
        inner, _ = search.tiled_l2(sample_tiles[group], sample_tiles[group], len(group))
        medoids.append(group[int(inner.sum(axis=1).argmin())])
    seen = times_in_training(cluster, [repeats[shas[i]] for i in first])
    found = []
    verdicts = decide(sample_tiles[medoids], descriptor.describe(samples[medoids]), train_tiles, train_vectors,
                      cluster, heads, thresholds, 1) if medoids else None
    for row, (group, medoid) in enumerate(zip(groups, medoids, strict=True)):
        found.append(_group(group, medoid, row, verdicts, data.entries, first, cluster, seen, repeats, seeds,
                            classes, labels))
    progress.report(1, 1, phase="match")
    extracted = sorted({g["nearest"]["index"] for g in found if g["extracted"]})
    results = rounded({
        "kind": "extraction", "subject": cfg.subject, "config": cfg.model_dump(mode="json"),
        "dataset": {"ref": cfg.dataset, "digest": data.digest, "distinct_images": len(first),
                    "near_duplicate_clusters": len(heads)},
        "descriptor": {"name": descriptor.name, "decides": descriptor.decides, **(descriptor.about or {})},
        "thresholds": {**thresholds, "generation_distance": limit, "tile_grid": grid},
        "summary": {"samples": len(samples), "groups": len(found), "extracted_images": len(extracted),
                    "generations_in_extracted_groups": sum(g["size"] for g in found if g["extracted"])},
        "groups": found,
    })
    return results, {"samples": samples, "training": training}


def render(results: dict[str, Any], pictures: dict[str, np.ndarray]) -> str:
    s, cfg = results["summary"], results["config"]
    rows = "".join(
        f'<tr><td><img src="{report.png(pictures["samples"][g["medoid"]])}" alt="the group\'s medoid"></td>'
        f'<td><img src="{report.png(pictures["training"][g["nearest"]["index"]])}" alt="nearest training image">'
        f'</td><td>{g["size"]}</td><td>{g["nearest"]["distance"]:.4g} ({g["ratio"]:.2f})</td>'
        f'<td>{"<strong>extracted</strong>" if g["extracted"] else "not a training image"}</td>'
        f'<td>{report.who(g["nearest"])}</td></tr>' for g in results["groups"][:60])
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Extraction attack · {html.escape(results["subject"])}</title><style>{report.STYLE}</style></head><body>
<h1>Extraction attack: {html.escape(results["subject"])}</h1>
<p>{s["samples"]} generations; {s["groups"]} groups of at least {cfg["min_group"]} near-identical ones (tiled L2
under {results["thresholds"]["generation_distance"]:.4g}); <strong>{s["extracted_images"]} training images
extracted</strong>, regenerated {s["generations_in_extracted_groups"]} times in all.</p>
<table><tr><th>Group (medoid)</th><th>Nearest training image</th><th>Size</th><th>Tiled L2 (ratio)</th>
<th>Verdict</th><th>Training image</th></tr>{rows}</table>
</body></html>
"""


def main(cfg: ExtractionConfig, checkpoint: Path, inputs: dict[str, Path], output: Path) -> dict[str, Any]:
    results, pictures = analyse(cfg, checkpoint, inputs)
    write(output, "extraction", results, render(results, pictures))
    s = results["summary"]
    print(f"done: {s['groups']} groups of near-identical generations, {s['extracted_images']} training images "
          f"extracted", flush=True)
    return results


def parse(argv: list[str] | None = None) -> tuple[ExtractionConfig, Path, dict[str, Path], Path]:
    return model_analysis_arguments("jobs.analysis.extraction", __doc__, ExtractionConfig, argv)


if __name__ == "__main__":
    main(*parse())
