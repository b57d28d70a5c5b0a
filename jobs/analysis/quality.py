"""Sample quality: how the model's samples are distributed against its training images, in a feature space.

Run by jobs.runner as `python -m jobs.analysis.quality --config JSON --inputs JSON --output DIR`, with the model
version's checkpoint and its training set as inputs. It draws `samples` images (seeds seed, seed+1, …) and compares
them with the distinct training images (at most MAX_REFERENCE of them, a fixed random choice) by

- FID: the Fréchet distance between Gaussians fitted to the two sets of features;
- KID: the unbiased squared MMD with the cubic polynomial kernel, averaged over `kid_subsets` random subsets;
- precision and recall after Kynkäänniemi et al. (2019): the share of samples inside the real images' manifold
  (each real image's ball reaches its k-th nearest real neighbour), and the share of real images inside the
  samples' manifold.

FID and KID are biased upwards for small sets, so figures are comparable only at the same number of images. Beside
the model's figures against the whole training set it therefore puts two at equal sizes: half A of the training
set against half B (what a model matching its training distribution would reach), and as many samples as half A
has against half B. With fewer images than feature dimensions the FID's covariances are singular; the results
say so (`reliable`) and the report warns.

The features are the project's offline structure descriptor (jobs.analysis.descriptors) unless `features` is
`inception`: then the node's local TorchScript network at $OBSERVATORY_INCEPTION_WEIGHTS is used (called with
uint8 images and `return_features=True`, as StyleGAN's metrics call theirs). Figures on the descriptor are not
comparable with published Inception-FID, and the results and report say so; with the network, the file's sha256 is
recorded, and they are comparable only if that file is the standard Inception network.

Writes results.json (the same inputs and seed give the same bytes), report.html and outputs.json.
"""

from __future__ import annotations

import hashlib
import html
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jobs import progress
from jobs.analysis import descriptors, report, search
from jobs.analysis.common import model_analysis_arguments, rounded, subject, to_unit, training_set, write
from jobs.config import QualityConfig
from jobs.model import class_labels, draw_samples, pick_device

MAX_REFERENCE = 10_000  # training images compared with, at most (a fixed random choice of the distinct ones)
KID_SUBSET = 1000  # images per KID subset, at most
WEIGHTS_ENV = "OBSERVATORY_INCEPTION_WEIGHTS"
NOT_COMPARABLE = ("computed on the observatory's offline structure descriptor, not on Inception features: not "
                  "comparable with published FID or KID figures, only with this analysis's own at the same sizes")


# ---- the figures ----------------------------------------------------------------------------------------------


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2), the trace of the square
    root taken as the sum of the square roots of the eigenvalues of S_a^1/2 S_b S_a^1/2 (symmetric, so exact)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(sa)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ sb @ root_a), 0, None)).sum()
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * cross)


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, subsets: int, rng: np.random.Generator,
                              size: int = KID_SUBSET) -> tuple[float, float]:
    """KID's mean and standard deviation over random subsets: the unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    m = min(size, len(a), len(b))
    if m < 2:
        return float("nan"), float("nan")
    dims = a.shape[1]
    estimates = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T / dims + 1) ** 3, (y @ y.T / dims + 1) ** 3, (x @ y.T / dims + 1) ** 3)
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        estimates.append(within - 2 * kxy.mean())
    return float(np.mean(estimates)), float(np.std(estimates))


SEARCH_BLOCK = 1024  # reference images per block of the distance searches: 40 MB for 10,000 queries


def radii(features: np.ndarray, k: int) -> np.ndarray:
    """Each point's distance to its k-th nearest other point of the same set."""
    distances, _ = search.topk_l2(features, features, min(k, len(features) - 1) + 1, block=SEARCH_BLOCK)
    return distances[:, -1]  # the first column is the point itself


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, Any]:
    """Kynkäänniemi et al.'s improved precision and recall, and each sample's distance to its nearest real image
    (for the report's histogram)."""
    if len(real) < 2 or len(fake) < 2:
        return {"precision": float("nan"), "recall": float("nan"), "nearest_real": [0.0] * len(fake)}
    precision = float(search.within_any(fake, real, radii(real, k), block=SEARCH_BLOCK).mean())
    recall = float(search.within_any(real, fake, radii(fake, k), block=SEARCH_BLOCK).mean())
    nearest, _ = search.topk_l2(fake, real, 1, block=SEARCH_BLOCK)
    return {"precision": precision, "recall": recall, "nearest_real": nearest[:, 0].tolist()}


def figures(real: np.ndarray, fake: np.ndarray, cfg: QualityConfig,
            rng: np.random.Generator) -> tuple[dict[str, Any], list[float]]:
    """The four figures of `fake` against `real`, and each fake's distance to its nearest real."""
    kid, kid_std = kernel_inception_distance(real, fake, cfg.kid_subsets, rng)
    found = precision_recall(real, fake, cfg.nearest_k)
    return {"fid": frechet_distance(real, fake), "kid": kid, "kid_std": kid_std, "precision": found["precision"],
            "recall": found["recall"], "images": [len(real), len(fake)]}, found["nearest_real"]


# ---- features -------------------------------------------------------------------------------------------------


def feature_network() -> tuple[Any, str]:
    """The node's local Inception network (TorchScript) and its file's sha256."""
    path = os.environ.get(WEIGHTS_ENV, "")
    if not path or not Path(path).is_file():
        raise ValueError(f"this node has no Inception weights file: its operator sets {WEIGHTS_ENV} to a local "
                         "TorchScript file (nothing is downloaded); use features 'descriptor' instead")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return torch.jit.load(path, map_location="cpu").eval(), digest


def embed(images: np.ndarray, network: Any, device: torch.device, batch: int = 200) -> np.ndarray:
    """The network's features of N x H x W x 3 images in [0, 1], given to it as uint8 N x 3 x H x W."""
    network = network.to(device)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            chunk = torch.from_numpy((images[start:start + batch] * 255).round().astype(np.uint8))
            out.append(network(chunk.permute(0, 3, 1, 2).to(device), return_features=True).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64)


# ---- the job --------------------------------------------------------------------------------------------------


def analyse(cfg: QualityConfig, checkpoint: Path | None, inputs: dict[str, Path]) -> tuple[dict[str, Any], dict]:
    device = pick_device()
    unet, noise_scheduler, meta = subject(cfg, checkpoint, inputs, device)
    side = int(unet.config.sample_size)
    network, weights = feature_network() if cfg.features == "inception" else (None, None)
    seeds = [cfg.seed + i for i in range(cfg.samples)]
    labels = class_labels(list(meta.get("classes") or []), [], len(seeds))
    drawn = draw_samples(unet, noise_scheduler, seeds, cfg.inference_steps, device,
                         lambda done, total: progress.report(done, total + 1, phase="sample"),
                         sampler=cfg.sampler, labels=labels)
    data = training_set(cfg, inputs, side)
    _, first = np.unique([e["image_sha256"] for e in data.entries], return_index=True)
    if len(first) < 4:
        raise ValueError(f"the training set has {len(first)} distinct images; comparing distributions needs 4")
    rng = np.random.default_rng(cfg.seed)
    chosen = np.sort(first if len(first) <= MAX_REFERENCE else rng.choice(first, MAX_REFERENCE, replace=False))
    samples, training = to_unit(drawn), to_unit(data.images[torch.from_numpy(chosen)])

    def features(images: np.ndarray) -> np.ndarray:
        return descriptors.features(images) if network is None else embed(images, network, device)

    real, fake = features(training), features(samples)
    model_figures, nearest = figures(real, fake, cfg, rng)
    # The floor at equal sizes: half B of the training set against half A, and against as many samples as A has.
    order = rng.permutation(len(real))
    half = len(real) // 2
    half_a, half_b = real[order[:half]], real[order[half:2 * half]]
    floor_figures, real_nearest = figures(half_b, half_a, cfg, rng)
    matched_figures, _ = figures(half_b, fake[np.sort(rng.permutation(len(fake))[:half])], cfg, rng)
    progress.report(cfg.samples + 1, cfg.samples + 1, phase="compare")
    label = NOT_COMPARABLE if network is None else (
        f"computed on the features of the node's TorchScript network (sha256 {weights}): comparable with published "
        "Inception figures only if that file is the standard Inception network, and at the same image counts")
    results = rounded({
        "kind": "quality", "subject": cfg.subject, "config": cfg.model_dump(mode="json"),
        "model": {"classes": meta.get("classes") or [], "steps": meta.get("steps"), "weights": meta.get("weights")},
        "dataset": {"ref": cfg.dataset, "digest": data.digest, "distinct_images": len(first),
                    "compared": len(chosen), "resolution": side},
        "features": {"name": cfg.features, "dimensions": int(real.shape[1]), "weights_sha256": weights,
                     "comparable_with_published": False if network is None else None, "note": label},
        "model_vs_training": model_figures,
        "model_vs_half": matched_figures,
        "training_half_vs_half": floor_figures,
        "reliable": min(len(real), len(fake)) > real.shape[1],  # fewer images than dimensions: singular covariances
        "nearest_real": {"samples": sorted(nearest), "training_half": sorted(real_nearest)},
    })
    return results, {"samples": samples, "training": training}


def render(results: dict[str, Any], pictures: dict[str, np.ndarray]) -> str:
    model, matched, floor = (results[k] for k in ("model_vs_training", "model_vs_half", "training_half_vs_half"))

    def row(name: str, key: str, better: str) -> str:
        extra = f" ± {model['kid_std']:.3g}" if key == "kid" else ""
        return (f"<tr><td>{name}</td><td>{model[key]:.4g}{extra}</td><td>{matched[key]:.4g}</td>"
                f"<td>{floor[key]:.4g}</td><td class=muted>{better}</td></tr>")

    caution = "" if results["reliable"] else (
        f'<p class="copy">Fewer images than the {results["features"]["dimensions"]} feature dimensions: the '
        "covariances FID rests on are singular and its value is dominated by the sizes. Read precision, recall and "
        "the equal-size columns rather than the FID's value; draw more samples or use a larger training set.</p>")

    def strip(images: np.ndarray, alt: str) -> str:
        return "".join(f'<img src="{report.png(image, 2)}" alt="{alt}">' for image in images[:32])

    nearest = results["nearest_real"]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Sample quality · {html.escape(results["subject"])}</title><style>{report.STYLE}</style></head><body>
<h1>Sample quality: {html.escape(results["subject"])}</h1>
<p>{model["images"][1]} samples against {model["images"][0]} distinct training images of
{html.escape(str(results["dataset"]["ref"] or results["dataset"]["digest"]))}, on {results["features"]["dimensions"]}
features ({html.escape(results["features"]["name"])}).</p>
<p><strong>These figures are {html.escape(results["features"]["note"])}.</strong></p>{caution}
<table><tr><th>Figure</th><th>Model vs training</th><th>Model vs half B ({matched["images"][1]} samples)</th>
<th>Half A vs half B</th><th></th></tr>
{row("FID", "fid", "lower is closer")}{row("KID", "kid", "lower is closer")}
{row("Precision", "precision", "share of samples that look like training images")}
{row("Recall", "recall", "share of the training images' variety the samples cover")}</table>
<p class=muted>The last two columns are measured at equal sizes: as many samples as half A has, and half A
itself, each against half B of the training set ({floor["images"][0]} images). Half A is what a model matching
its training distribution would reach; compare the model with it there.</p>
<h2>Distance to the nearest training image, in feature space</h2>
<p>Samples {report.histogram(nearest["samples"], None, "samples' nearest training image")}</p>
<p>Training images (one half to the other) {report.histogram(nearest["training_half"], None,
                                                           "training images' nearest other training image")}</p>
<h2>Samples</h2><p>{strip(pictures["samples"], "a sample")}</p>
<h2>Training images</h2><p>{strip(pictures["training"], "a training image")}</p>
</body></html>
"""


def main(cfg: QualityConfig, checkpoint: Path, inputs: dict[str, Path], output: Path) -> dict[str, Any]:
    results, pictures = analyse(cfg, checkpoint, inputs)
    write(output, "quality", results, render(results, pictures))
    m = results["model_vs_training"]
    print(f"done: FID {m['fid']:.4g}, KID {m['kid']:.4g}, precision {m['precision']:.3f}, recall "
          f"{m['recall']:.3f} ({results['features']['name']} features)", flush=True)
    return results


def parse(argv: list[str] | None = None) -> tuple[QualityConfig, Path, dict[str, Path], Path]:
    return model_analysis_arguments("jobs.analysis.quality", __doc__, QualityConfig, argv)


if __name__ == "__main__":
    main(*parse())
