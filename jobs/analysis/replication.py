"""Replication search: does the model regenerate its training images?

Run by jobs.runner as `python -m jobs.analysis.replication --config JSON --inputs JSON --output DIR`; the inputs are
the model version's checkpoint (`checkpoint_sha256`) and its training set's manifest and shards (`dataset:…`).

It draws `samples` images (seeds seed, seed+1, …), or, for a plan naming a sample run (`samples_from`), reads the
images that run drew from its samples.png and metrics.json (inputs `samples_sha256`, `samples_metrics_sha256`), and
for each finds its nearest distinct training images by pixel L2, tiled L2 (the largest of the 4x4 tiles' distances)
and cosine similarity of an offline structure descriptor (jobs.analysis.descriptors): exactly, or for training sets
past 20,000 images among each sample's 256 nearest by pixel L2 found with an index (jobs.analysis.search). As
Carlini et al. (2023) do, a sample is a copy when its tiled distance to the nearest training image is small
*relative to* its distances to the next 50: generated images that are merely blurry come about equally near to many.
The threshold on that ratio is calibrated on the training set itself: `calibration_fraction` times the
`calibration_percentile`-th percentile of the same ratio for each distinct training image among the others (a copy
must be clearly nearer than the nearest pairs of distinct training images are).
Beside the numbers it puts the capacity figures (model bytes, training bytes, bits of model per training image).

Writes results.json (sorted keys, rounded numbers, no times: the same inputs and seed give the same bytes),
report.html (self-contained: inline pictures, no script), pairs.png (the shown pairs, a row each, for the portal's
marking page) and outputs.json declaring them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from jobs import dataset as datasets
from jobs import progress
from jobs.analysis import descriptors, neardups, report, search
from jobs.analysis.common import grid_for, model_analysis_arguments, rounded, subject, to_unit, training_set, write
from jobs.analysis.copytest import Descriptor, descriptor_for
from jobs.config import ExtractionConfig, ReplicationConfig
from jobs.imaging import from_grid
from jobs.model import class_labels, draw_samples, pick_device

NEIGHBOURHOOD = 50  # the nearest training images a distance is compared with (Carlini et al. use 50)
# Carlini et al. (2023) call a generation extracted when its distance to a training image is under alpha = 0.5 times
# its mean distance to its n = 50 nearest training images (that one included). In the ratio used here (the nearest
# over the mean of the next 50) that is a ratio under 49 alpha / (50 - alpha): the threshold never falls below it,
# whatever the calibration says (near duplicates the clustering missed can only drag the calibration down).
CARLINI_ALPHA = 0.5
LITERATURE_FLOOR = (NEIGHBOURHOOD - 1) * CARLINI_ALPHA / (NEIGHBOURHOOD - CARLINI_ALPHA)
SHOWN = 48  # pairs shown in the report and offered for marking
PAIR_SCALE, PAIR_GAP = 4, 4  # pairs.png: each image enlarged 4 times, 4 white pixels between sample and original
BACKGROUND = 64  # the most similar training images looked through for a sample's best one in another cluster
CALIBRATION_PERCENTILE, CALIBRATION_FRACTION = 1.0, 0.5  # the defaults, for analyses that do not set them
CALIBRATION_SAMPLE = 2000  # training images whose own ratios calibrate the threshold (all, when fewer)


def ratios(distances: np.ndarray) -> np.ndarray:
    """Each row's nearest distance over the mean of the next ones: near 1 for an image about as near to many
    training images, far below 1 for one much nearer to a single image than to the rest (a copy)."""
    rest = distances[:, 1:].mean(axis=1)
    return distances[:, 0] / np.maximum(rest, 1e-12)


def calibrate(train_tiles: np.ndarray, train_features: np.ndarray, percentile: float,
              fraction: float) -> dict[str, Any]:
    """Thresholds from the training images themselves, one per near-duplicate cluster (the caller's choice): how
    near each comes to its nearest other one, absolutely (tiled L2), relatively (the ratio above; the calibrated
    copy threshold is `fraction` of its percentile, and the threshold used is never under LITERATURE_FLOOR) and by
    descriptor similarity."""
    count = len(train_tiles)
    if count < 3:
        return {"tiled_l2": 0.0, "training_ratio": 0.0, "calibrated_ratio": 0.0, "literature_floor": LITERATURE_FLOOR,
                "ratio": LITERATURE_FLOOR, "similarity": 1.0, "pairs": count}
    k = min(NEIGHBOURHOOD, count - 1) + 1
    chosen = np.arange(count)
    if count > CALIBRATION_SAMPLE:  # a fixed random sample of them: the same inputs give the same thresholds
        chosen = np.sort(np.random.default_rng(0).choice(count, CALIBRATION_SAMPLE, replace=False))
    tiles_d, _ = search.tiled_nearest(train_tiles[chosen], train_tiles, k + 1)
    sims, _ = search.topk_similarity(train_features[chosen], train_features, 2)
    others = tiles_d[:, 1:]  # leave each image itself out
    training_ratio = float(np.percentile(ratios(others), percentile))
    return {"tiled_l2": float(np.percentile(others[:, 0], percentile)),
            "training_ratio": training_ratio, "calibrated_ratio": fraction * training_ratio,
            "literature_floor": LITERATURE_FLOOR, "ratio": max(fraction * training_ratio, LITERATURE_FLOOR),
            "similarity": float(np.percentile(sims[:, 1], 100 - percentile)), "pairs": count}


def summary(top_similarity: np.ndarray, copies: np.ndarray, thresholds: dict[str, Any]) -> dict[str, Any]:
    """Somepalli et al.'s figures on the top-1 similarity, and the share of samples counted as copies."""
    return {
        "similarity_mean": float(top_similarity.mean()),
        "similarity_p75": float(np.percentile(top_similarity, 75)),
        "similarity_p90": float(np.percentile(top_similarity, 90)),
        "similarity_p95": float(np.percentile(top_similarity, 95)),
        "over_similarity_threshold": float((top_similarity > thresholds["similarity"]).mean()),
        "copies": int(copies.sum()),
        "copy_fraction": float(copies.mean()),
    }


def by_repetition(times: list[int], copies_of: Counter) -> list[dict[str, Any]]:
    """How replication relates to duplication: the distinct training images grouped by how often each was repeated
    in training (1, 2-3, 4-7, … by powers of two), with how many of each group were regenerated, and by how many
    samples. `times[i]` is distinct image i's count; `copies_of[i]` the samples counted as copies of it."""
    rows: dict[int, dict[str, Any]] = {}
    for index, count in enumerate(times):
        low = 1 << (max(count, 1).bit_length() - 1)
        row = rows.setdefault(low, {"from": low, "to": 2 * low - 1, "images": 0, "copied": 0, "samples": 0})
        row["images"] += 1
        row["copied"] += copies_of[index] > 0
        row["samples"] += copies_of[index]
    return [{**row, "rate": row["copied"] / row["images"]} for _, row in sorted(rows.items())]


def capacity(unet, data: datasets.Dataset, png_bytes: int, pictures: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The model's size beside its training set's: per training image, and per distinct picture (near-duplicate
    cluster)."""
    parameters = sum(p.numel() for p in unet.parameters())
    images = len(data.entries)
    return {"parameters": parameters, "model_bytes": parameters * 4, "training_images": images,
            "distinct_pictures": pictures, "training_pixel_bytes": int(data.images.numel()),
            "training_png_bytes": png_bytes, "model_bits_per_training_image": parameters * 32 / max(images, 1),
            "model_bits_per_distinct_picture": parameters * 32 / max(pictures, 1)}


def calibrated(training: np.ndarray, train_tiles: np.ndarray, train_features: np.ndarray,
               cfg: ReplicationConfig | ExtractionConfig,
               descriptor: Descriptor | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The training images' near-duplicate clusters (each image's cluster, named by its first image), the first
    image of each, and the thresholds calibrated on those alone (with a learned descriptor's, where it decides)."""
    cluster = neardups.clusters(training, cfg.near_duplicate_rms, cfg.near_duplicate_shift)
    heads = np.flatnonzero(cluster == np.arange(len(cluster)))
    thresholds = calibrate(train_tiles[heads], train_features[heads],
                           getattr(cfg, "calibration_percentile", CALIBRATION_PERCENTILE),
                           getattr(cfg, "calibration_fraction", CALIBRATION_FRACTION))
    if descriptor is not None:
        thresholds.update({"descriptor": descriptor.operating_threshold, "descriptor_name": descriptor.name})
    return cluster, heads, thresholds


def cluster_ratios(sample_tiles: np.ndarray, train_tiles: np.ndarray, heads: np.ndarray, cluster: np.ndarray,
                   nearest_d: np.ndarray, nearest_i: np.ndarray) -> np.ndarray:
    """Each sample's tiled distance to its nearest training image over the mean of its distances to the next
    NEIGHBOURHOOD near-duplicate clusters (one image each), its nearest image's own cluster left out: a sample near a
    picture with many near twins is compared with other pictures, not with the twins."""
    wide = min(NEIGHBOURHOOD + 1, len(heads))
    if wide < 2:
        return np.ones(len(sample_tiles))
    head_d, head_i = search.tiled_nearest(sample_tiles, train_tiles[heads], wide)
    out = np.ones(len(sample_tiles))
    for row in range(len(sample_tiles)):
        own = cluster[nearest_i[row]]
        others = [d for d, i in zip(head_d[row], head_i[row], strict=True) if heads[i] != own][:NEIGHBOURHOOD]
        if others:
            out[row] = nearest_d[row] / max(float(np.mean(others)), 1e-12)
    return out


@dataclass(frozen=True)
class Verdicts:
    """Per sample: its k nearest distinct training images by tiled L2 and by descriptor similarity, its distance
    ratio (against other clusters), its normalised descriptor score, and whether the ratio, or a learned
    descriptor's score, calls it a copy."""

    tiled_d: np.ndarray
    tiled_i: np.ndarray
    ratio: np.ndarray
    similarity: np.ndarray
    similarity_i: np.ndarray
    score: np.ndarray  # the top similarity less the best one in another cluster (SSCD's normalised score)
    by_ratio: np.ndarray
    by_descriptor: np.ndarray

    @property
    def copy(self) -> np.ndarray:
        return self.by_ratio | self.by_descriptor

    @property
    def copy_of(self) -> np.ndarray:
        """The training image each sample copies: the tiled nearest where the ratio says so, else the
        descriptor's nearest."""
        return np.where(self.by_ratio, self.tiled_i[:, 0], self.similarity_i[:, 0])

    def tests(self, row: int) -> list[str]:
        """The tests that call sample `row` a copy."""
        return [test for test, said in (("ratio", self.by_ratio[row]), ("descriptor", self.by_descriptor[row]))
                if said]


def margin(similarities: np.ndarray, indices: np.ndarray, cluster: np.ndarray) -> float:
    """SSCD's normalised score of a ranked row of matches (most similar first): the first one's similarity less
    that of the first match in another near-duplicate cluster (the last one's, when all are in its cluster)."""
    own = cluster[indices[0]]
    return float(similarities[0] - next((s for s, i in zip(similarities, indices, strict=True) if cluster[i] != own),
                                        similarities[-1]))


def times_in_training(cluster: np.ndarray, exact: list[int]) -> Counter:
    """How often each near-duplicate cluster (by its first image) was in training: its images' counts summed."""
    seen: Counter = Counter()
    for index, head in enumerate(cluster):
        seen[int(head)] += exact[index]
    return seen


def decide(sample_tiles: np.ndarray, sample_vectors: np.ndarray, train_tiles: np.ndarray, train_vectors: np.ndarray,
           cluster: np.ndarray, heads: np.ndarray, thresholds: dict[str, Any], k: int) -> Verdicts:
    """The copy test of each sample against the training images (their clusters, heads and thresholds from
    `calibrated`, with `thresholds["descriptor"]` set where a learned descriptor decides)."""
    tiled_d, tiled_i = search.tiled_nearest(sample_tiles, train_tiles, k)
    relative = cluster_ratios(sample_tiles, train_tiles, heads, cluster, tiled_d[:, 0], tiled_i[:, 0])
    deciding = thresholds.get("descriptor") is not None  # the structure descriptor only reports similarity
    wide, wide_i = search.topk_similarity(sample_vectors, train_vectors,
                                          min(len(train_vectors), BACKGROUND if deciding else k))
    score = np.array([margin(wide[row], wide_i[row], cluster) for row in range(len(wide))]) if deciding \
        else np.zeros(len(wide))
    by_descriptor = score > thresholds["descriptor"] if deciding else np.zeros(len(wide), dtype=bool)
    return Verdicts(tiled_d, tiled_i, relative, wide[:, :k], wide_i[:, :k], score, relative < thresholds["ratio"],
                    by_descriptor)


def sampled(inputs: dict[str, Path], side: int, classes: list[str]) -> tuple[np.ndarray, list[int], list[int] | None]:
    """A sample run's images (cut from its samples.png), their seeds and class labels (from its metrics.json)."""
    metrics = json.loads(inputs["samples_metrics_sha256"].read_text())
    drawn = list(metrics.get("images") or [])
    with Image.open(inputs["samples_sha256"]) as grid:
        images = from_grid(grid, len(drawn), side)
    labels = [classes.index(str(i["class"])) for i in drawn] if classes and all("class" in i for i in drawn) \
        else None
    return images, [int(i["seed"]) for i in drawn], labels


def analyse(cfg: ReplicationConfig, checkpoint: Path | None, inputs: dict[str, Path]) -> tuple[dict[str, Any], dict]:
    """The results, and what the report shows (pictures and provenance)."""
    device = pick_device()
    unet, noise_scheduler, meta = subject(cfg, checkpoint, inputs, device)
    side = int(unet.config.sample_size)
    data = training_set(cfg, inputs, side)
    if "samples_sha256" in inputs:
        samples, seeds, labels = sampled(inputs, side, list(meta.get("classes") or []))
    else:
        seeds = [cfg.seed + i for i in range(cfg.samples)]
        labels = class_labels(list(meta.get("classes") or []), [], len(seeds))
        samples = to_unit(draw_samples(unet, noise_scheduler, seeds, cfg.inference_steps, device,
                                       lambda done, total: progress.report(done, total + 1, phase="sample"),
                                       sampler=cfg.sampler, labels=labels))
    # The search runs over distinct training images; how often each was repeated in training is reported with it.
    shas = [e["image_sha256"] for e in data.entries]
    repeats = Counter(shas)
    _, first = np.unique(shas, return_index=True)
    first = np.sort(first)
    training = to_unit(data.images[torch.from_numpy(first)])
    grid = grid_for(side)
    sample_tiles, train_tiles = descriptors.tiles(samples, grid), descriptors.tiles(training, grid)
    descriptor = descriptor_for(cfg, inputs)
    sample_vectors, train_vectors = descriptor.describe(samples), descriptor.describe(training)
    k = min(cfg.top_k, len(training))
    pixel_d, pixel_i = search.topk_l2(descriptors.pixels(samples), descriptors.pixels(training), k)
    # Near duplicates are one picture: the threshold is calibrated on one image per cluster, a sample's distance to
    # its nearest image is compared with its distances to other clusters, and repetition counts the whole cluster.
    cluster, heads, thresholds = calibrated(training, train_tiles, train_vectors, cfg, descriptor)
    if cfg.ratio_threshold is not None:  # people's marks on an earlier search set it: recorded with its origin
        thresholds.update({"calibrated_ratio": thresholds["ratio"], "ratio": cfg.ratio_threshold,
                           "adopted": {"from_run": cfg.threshold_from_run, "marks": cfg.threshold_marks}})
    verdicts = decide(sample_tiles, sample_vectors, train_tiles, train_vectors, cluster, heads, thresholds, k)
    tiled_d, tiled_i, relative, sims, sim_i = (verdicts.tiled_d, verdicts.tiled_i, verdicts.ratio,
                                               verdicts.similarity, verdicts.similarity_i)
    copies, copy_of = verdicts.copy, verdicts.copy_of
    progress.report(len(seeds) + 1, len(seeds) + 1, phase="search")
    exact = [repeats[shas[i]] for i in first]
    seen = times_in_training(cluster, exact)
    members = Counter(int(head) for head in cluster)

    def neighbour(index: int, **scores: float) -> dict[str, Any]:
        entry = data.entries[first[index]]
        head = int(cluster[index])
        return {"index": int(index), "title": entry.get("title"), "author": entry.get("author"),
                "license": entry.get("license"), "image_sha256": entry.get("image_sha256"),
                "times_in_training": seen[head], "exact_times_in_training": exact[index],
                "near_duplicates": members[head] - 1, **scores}

    per_sample = []
    for row, seed in enumerate(seeds):
        per_sample.append({
            "seed": seed, **({"class": meta["classes"][labels[row]]} if labels else {}),
            "tiled_l2": [neighbour(i, distance=float(d))
                         for d, i in zip(tiled_d[row, :k], tiled_i[row, :k], strict=True)],
            "ratio": float(relative[row]),
            "pixel_l2": [neighbour(i, distance=float(d)) for d, i in zip(pixel_d[row], pixel_i[row], strict=True)],
            "similarity": [neighbour(i, similarity=float(s)) for s, i in zip(sims[row], sim_i[row], strict=True)],
            **({"descriptor_score": float(verdicts.score[row])} if descriptor.decides else {}),
            "copy": bool(copies[row]),
            **({"by": verdicts.tests(row),
                "copy_of": neighbour(int(copy_of[row]))} if copies[row] else {}),
        })
    copies_of = Counter(int(cluster[int(copy_of[row])]) for row in range(len(per_sample)) if copies[row])
    copied = sorted(copies_of)
    shown = sorted(range(len(per_sample)), key=lambda i: (relative[i], i))[:SHOWN]
    results = rounded({
        "kind": "replication", "subject": cfg.subject, "config": cfg.model_dump(mode="json"),
        "model": {"classes": meta.get("classes") or [], "dataset_digest": meta.get("dataset_digest"),
                  "steps": meta.get("steps"), "weights": meta.get("weights")},
        "dataset": {"ref": cfg.dataset, "digest": data.digest, "images": len(data.entries),
                    "distinct_images": len(first), "near_duplicate_clusters": len(heads), "resolution": side},
        "thresholds": {**thresholds, "percentile": cfg.calibration_percentile,
                       "fraction": cfg.calibration_fraction, "tile_grid": grid,
                       "near_duplicate_rms": cfg.near_duplicate_rms, "near_duplicate_shift": cfg.near_duplicate_shift},
        "summary": {**summary(sims[:, 0], copies, thresholds), "training_images_copied": len(copied),
                    "copies_by_ratio": int(verdicts.by_ratio.sum()),
                    "copies_by_descriptor_alone": int((verdicts.by_descriptor & ~verdicts.by_ratio).sum())},
        "descriptor": {"name": descriptor.name, "decides": descriptor.decides, **(descriptor.about or {})},
        "copied": [{**neighbour(i), "samples": copies_of[i]} for i in copied],
        "by_repetition": by_repetition([seen[int(h)] for h in heads],
                                       Counter({n: copies_of[int(h)] for n, h in enumerate(heads)})),
        "capacity": capacity(unet, data, sum(p.stat().st_size for n, p in inputs.items() if n.endswith(".tar")),
                             len(heads)),
        "samples": per_sample,
        # The pairs people are shown and may mark, most copy-like first: rows of pairs.png, by sample index.
        "shown": shown, "pair_picture": {"scale": PAIR_SCALE, "gap": PAIR_GAP, "side": side},
    })
    return results, {"samples": samples, "training": training}


def pairs_picture(results: dict[str, Any], samples: np.ndarray, training: np.ndarray) -> Image.Image:
    """The shown pairs as one picture: a row each, the sample left, its nearest training image right."""
    side, scale, gap = (results["pair_picture"][key] for key in ("side", "scale", "gap"))
    tile = side * scale
    sheet = Image.new("RGB", (2 * tile + gap, max(1, len(results["shown"])) * tile), "white")
    for row, index in enumerate(results["shown"]):
        nearest = results["samples"][index]["tiled_l2"][0]["index"]
        for column, image in enumerate((samples[index], training[nearest])):
            picture = Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
            sheet.paste(picture.resize((tile, tile), Image.Resampling.NEAREST), (column * (tile + gap), row * tile))
    return sheet


def main(cfg: ReplicationConfig, checkpoint: Path, inputs: dict[str, Path], output: Path) -> dict[str, Any]:
    results, pictures = analyse(cfg, checkpoint, inputs)
    output.mkdir(parents=True, exist_ok=True)
    pairs_picture(results, pictures["samples"], pictures["training"]).save(output / "pairs.png")
    write(output, "replication", results, report.replication(results, pictures["samples"], pictures["training"]))
    s = results["summary"]
    print(f"done: {s['copies']} of {len(results['samples'])} samples are copies (distance ratio under "
          f"{results['thresholds']['ratio']:.4g}); top-1 similarity mean {s['similarity_mean']:.3f}, "
          f"95th percentile {s['similarity_p95']:.3f}", flush=True)
    return results


def parse(argv: list[str] | None = None) -> tuple[ReplicationConfig, Path, dict[str, Path], Path]:
    return model_analysis_arguments("jobs.analysis.replication", __doc__, ReplicationConfig, argv)


if __name__ == "__main__":
    main(*parse())
