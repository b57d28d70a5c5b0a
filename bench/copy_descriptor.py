"""Copy detection, learned descriptor against the structure descriptor, evaluated as DISC21 evaluates it.

    python bench/copy_descriptor.py [--pictures tests/data/photos] [--train 192] [--held-out 96] [--side 16]
                                    [--steps 600] [--batch-size 128] [--seed 0]

Natural pictures are cut from photographs (jobs.analysis.pictures), side by side and none overlapping another (two
overlapping crops of one photograph are copies of each other, whatever the benchmark's labels say): those the
descriptor learns from from the top half of each photograph, the held-out ones from the bottom half. The descriptor
trains as the `descriptor` job trains it (jobs.descriptor). Queries are edited copies of the held-out pictures
(crops, shifts, mirror images, colour, blur, JPEG: jobs.analysis.augment): half of them copy a reference picture,
half are distractors whose original is not among the references. Every descriptor answers the same queries; the
figure is micro-average precision over the ranked predictions of all queries together (jobs.analysis.copy_eval), on
the raw similarity and on SSCD's normalised score (less the query's best similarity among the other references),
with the operating threshold (above every false match, normalised) and the recall there. Pixel L2 is shown as a
floor. The last line reads `copy detection: learned muAP X, structure muAP Y`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from jobs.analysis import copy_eval, descriptors, learned, pictures
from jobs.config import DescriptorConfig
from jobs.descriptor import train_network
from jobs.model import pick_device

PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "photos"


def halves(folder: Path) -> tuple[list[pictures.Photograph], list[pictures.Photograph]]:
    """Each photograph's top half and bottom half."""
    photos = pictures.photographs(folder)
    cut = [(p, p.pixels.shape[0] // 2) for p in photos]
    return ([pictures.Photograph(p.pixels[:h], p.title, p.author, p.license) for p, h in cut],
            [pictures.Photograph(p.pixels[h:], p.title, p.author, p.license) for p, h in cut])


def natural(photos: list[pictures.Photograph], count: int, side: int, seed: int) -> np.ndarray:
    made = pictures.natural(photos, np.random.default_rng(seed), count, side, scale=1, step=None)
    return np.stack([p.view() for p in made]).astype(np.float32) / 255


def pixel_vectors(images: np.ndarray) -> np.ndarray:
    flat = descriptors.pixels(images) - 0.5
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pictures", type=Path, default=PHOTOS)
    parser.add_argument("--train", type=int, default=192)
    parser.add_argument("--held-out", type=int, default=96)
    parser.add_argument("--side", type=int, default=16)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = pick_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    top, bottom = halves(args.pictures)
    train = natural(top, args.train, args.side, args.seed)
    held = natural(bottom, args.held_out, args.side, args.seed + 1)
    cfg = DescriptorConfig(dataset="bench", resolution=args.side, steps=args.steps, batch_size=args.batch_size,
                           seed=args.seed)
    print(f"device {device} ({name}); {len(train)} pictures learned from, {len(held)} held out, {args.side}x"
          f"{args.side}, {args.steps} steps of batch {args.batch_size}")
    started = time.perf_counter()
    model, losses = train_network(cfg, train, device, report=False)
    print(f"trained in {time.perf_counter() - started:.1f} s; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    model = model.cpu()
    bench = copy_eval.benchmark(held, train, args.seed)
    print(f"{len(bench.truth)} queries ({int((bench.truth >= 0).sum())} copies of a reference), "
          f"{len(bench.references)} references")
    print(f"{'descriptor':<12} {'muAP':>6} {'normalised':>10} {'threshold':>9} {'recall':>10}")
    found = {}
    for label, describe in (("learned", lambda x: learned.embed(model, x)), ("structure", descriptors.features),
                            ("pixels", pixel_vectors)):
        found[label] = copy_eval.evaluate(describe, bench)
        f = found[label]
        print(f"{label:<12} {f['muap']:>6.3f} {f['muap_normalised']:>10.3f} {f['threshold']:>9.3f} "
              f"{f['recall_at_threshold']:>10.3f}")
    print(f"copy detection: learned muAP {found['learned']['muap']:.3f}, structure muAP "
          f"{found['structure']['muap']:.3f}")


if __name__ == "__main__":
    main()
