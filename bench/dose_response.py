"""Dose-response of memorisation: how many planted pictures a model regenerates, by how often each was repeated in
its training set (k) and how long it trained, on generated block pictures or on natural pictures cut from
photographs (--pictures: a folder of images or a dataset package; the tests' photographs are tests/data/photos).

    python bench/dose_response.py [--copies 1,30,100] [--steps 250,500,750] [--seeds 0,1,2] [--distinct 300]
                                  [--planted 5] [--samples 256] [--side 16] [--batch-size 64]
                                  [--pictures blocks|FOLDER] [--variants 0.5]

For each seed and k, a planted-copy dataset (jobs.analysis.planted: `distinct` pictures once each, `planted` pictures
k times each) is trained from scratch with the train job's own loop, and after each step count in --steps the
weight average is searched by the replication analysis, as a model version would be. A planted picture counts as
regenerated when at least one sample is a copy of it, and as "10+" when at least ten are (the bar the tooling was
first measured against). Other pictures flagged are false positives. Prints a row per (seed, k, steps) and ends
with one line: planted pictures regenerated at the last step count, by k, summed over the seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from jobs.analysis import planted
from jobs.analysis.replication import analyse
from jobs.config import ReplicationConfig, TrainConfig
from jobs.model import pick_device, save_checkpoint
from jobs.package import INPUT_PREFIX
from jobs.train import train, with_weights


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def regenerated(results: dict) -> tuple[Counter, int]:
    """Copies per planted picture (by its title), and the samples counted as copies of anything else."""
    per_picture: Counter = Counter()
    others = 0
    for sample in results["samples"]:
        if not sample["copy"]:
            continue
        title = str(sample["tiled_l2"][0]["title"]).split(" (")[0]
        if title.startswith("planted-"):
            per_picture[title] += 1
        else:
            others += 1
    return per_picture, others


def lowest(results: dict) -> float:
    """The lowest distance ratio of a sample whose nearest training image is a planted one (1 when none is)."""
    return min((s["ratio"] for s in results["samples"]
                if str(s["tiled_l2"][0]["title"]).startswith("planted-")), default=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=_ints, default=[1, 30, 100])
    parser.add_argument("--steps", type=_ints, default=[250, 500, 750])
    parser.add_argument("--seeds", type=_ints, default=[0])
    parser.add_argument("--distinct", type=int, default=300)
    parser.add_argument("--planted", type=int, default=5)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--side", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pictures", default="blocks",
                        help="blocks, or a folder of photographs (or a dataset package) to cut natural pictures from")
    parser.add_argument("--variants", type=float, default=0.0,
                        help="the share of a planted picture's repetitions that are near duplicates of it")
    parser.add_argument("--lr", type=float, default=None, help="the learning rate (the train job's default)")
    args = parser.parse_args()
    photos = None if args.pictures == "blocks" else Path(args.pictures)
    device = pick_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device {device} ({name}); {args.pictures}: {args.distinct} distinct + {args.planted} planted x k "
          f"({args.variants:.0%} near duplicates), {args.side}x{args.side}, batch {args.batch_size}, EMA 0.995, "
          f"{args.samples} DDIM-25 samples per check")
    print(f"{'seed':>4} {'k':>4} {'steps':>6} {'regenerated':>11} {'10+':>4} {'copies':>6} {'others':>6} "
          f"{'lowest':>6} {'thresh':>6} {'train s':>8} {'search s':>8}")
    last: dict[int, list[int]] = {k: [] for k in args.copies}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            for k in args.copies:
                folder = Path(scratch) / f"seed{seed}-k{k}"
                package = planted.package(folder / "package", distinct=args.distinct, planted=args.planted,
                                          copies=k, side=args.side, seed=seed, photos=photos,
                                          variants=args.variants)
                digest = json.loads((package / "dataset.json").read_text())["digest"]
                inputs = {f"{INPUT_PREFIX}{n}": package / n for n in ("manifest.jsonl", "shard-00000.tar")}
                for steps in sorted(args.steps):
                    cfg = TrainConfig(dataset="planted-copies", dataset_digest=digest, resolution=args.side,
                                      steps=steps, batch_size=args.batch_size, ema_decay=0.995, seed=seed,
                                      sample_count=1, sample_inference_steps=2, checkpoint_every=10**6,
                                      **({"learning_rate": args.lr} if args.lr else {}))
                    started = time.perf_counter()
                    # Resumes from the state the last step count left, so each k trains once from scratch.
                    with contextlib.redirect_stdout(io.StringIO()):
                        unet, scheduler, _, _, result = train(cfg, folder / "train", device, report=False,
                                                              inputs=inputs)
                    trained = time.perf_counter() - started
                    checkpoint = folder / f"checkpoint-{steps}.pt"
                    save_checkpoint(checkpoint, with_weights(unet, result.ema or {}), scheduler,
                                    {"dataset": "planted-copies", "dataset_digest": digest, "steps": steps,
                                     "classes": []})
                    started = time.perf_counter()
                    with contextlib.redirect_stdout(io.StringIO()):
                        results, _ = analyse(ReplicationConfig(model="planted@1", samples=args.samples,
                                                               inference_steps=25, dataset_digest=digest, seed=seed),
                                             checkpoint, inputs)
                    searched = time.perf_counter() - started
                    per_picture, others = regenerated(results)
                    many = sum(1 for count in per_picture.values() if count >= 10)
                    print(f"{seed:>4} {k:>4} {steps:>6} {len(per_picture):>8}/{args.planted:<2} {many:>4} "
                          f"{results['summary']['copies']:>6} {others:>6} {lowest(results):>6.3f} "
                          f"{results['thresholds']['ratio']:>6.3f} {trained:>8.1f} {searched:>8.1f}",
                          flush=True)
                    if steps == max(args.steps):
                        last[k].append(len(per_picture))
    total = args.planted * len(args.seeds)
    print("regenerated at step " + str(max(args.steps)) + ": "
          + ", ".join(f"k={k} {sum(found)}/{total}" for k, found in last.items()))


if __name__ == "__main__":
    main()
