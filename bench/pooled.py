"""Pooled training, measured: one model trained alone (the monolith) against families of K experts trained on the
clusters of the same data, with the same total training compute (steps x batch summed over the experts equals the
monolith's), and a router each.

    python bench/pooled.py [--ks 4,8] [--images 512] [--held-out 256] [--themes 8] [--side 16] [--steps 1200]
                           [--batch-size 32] [--router-steps 400] [--samples 256] [--inference-steps 25] [--seed 0]
                           [--workers 4] [--diloco-hs 50,100,500] [--diloco-dtypes fp32,fp16,int8]
                           [--diloco-down fp32,int8] [--uplink-mbit 20] [--outer-lr 0.7] [--outer-momentum 0.9]

The data are generated scenes (not Commons images): `themes` palettes, each picture a two-colour gradient of its
theme with a shape of another colour on it, so that the data have regions a partition can find and a held-out set
drawn from the same distribution. For each method it prints:
- the bytes each worker exchanges per training step: 0 for experts (they train in isolation), and, for the monolith
  trained data-parallel on as many workers as the family has experts, a ring all-reduce of its fp32 gradients;
- the held-out denoising loss per tenth of the noise schedule (least noise first): the same held-out images, noise
  and timesteps for every method; a family's noise prediction is its router-weighted mixture;
- FID and KID of its samples against the held-out images on the project's offline descriptor (the quality analysis's
  figures; not comparable with published Inception figures), beside the training set's own;
- the training seconds to honour one withdrawal: the monolith retrains whole, a family retrains the expert whose
  cluster held the image, and its router.
Each figure is also given as a ratio to the monolith's, and the line
`experts: K=4 fid ratio F, withdrawal cost W of the monolith` (the first K given, when 4 is not among them).

Then one model trained by several nodes together (DiLoCo, jobs.rounds), simulated in one process with the
observatory's own worker and coordinator code: `--workers` workers, each on its shard with batch / workers, the
monolith's steps (so the same samples in all), for each H in `--diloco-hs`, each pseudo-gradient precision in
`--diloco-dtypes` and each way down of the global weights in `--diloco-down` (fp32 weights, or int8 updates), outer
lr 0.7 and momentum 0.9 (DiLoCo's; `--outer-lr`, `--outer-momentum`). For each: the bytes each worker sends and
receives per step (its contribution up, the global weights or their update down, over H) against data-
parallel training's ring all-reduce of fp32 gradients on as many workers; the held-out denoising loss against the
monolith's last-step weights (neither averaged); and the wall time of one round with a `--uplink-mbit` home link
(the compute of H steps of one worker, plus its bytes up and down at that rate), beside data-parallel's H steps over
the same link. Ends with `diloco: R x fewer bytes than data-parallel, loss +P%` for the setting with the most saving
whose loss is within 2% of the monolith's (or the lowest loss, said so, when none is).
"""

from __future__ import annotations

import argparse
import colorsys
import contextlib
import hashlib
import io
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from jobs import clusters, diloco, family, partition, rounds
from jobs import router as routing
from jobs.analysis import descriptors
from jobs.analysis.common import to_unit
from jobs.analysis.quality import frechet_distance, kernel_inception_distance
from jobs.config import RouterConfig, TrainConfig
from jobs.model import draw_samples, pick_device
from jobs.package import INPUT_PREFIX, MANIFEST, write_manifest, write_tar
from jobs.train import build_trainer, train, with_weights

DECILES = 10


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def scene(rng: np.random.Generator, hue: float, side: int) -> bytes:
    """A picture of one theme: a vertical gradient between two shades of its hue, a shape of another colour on it."""
    def colour(h: float, s: float, v: float) -> tuple[int, int, int]:
        r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
        return int(r * 255), int(g * 255), int(b * 255)

    top = np.array(colour(hue + rng.normal(0, 0.02), rng.uniform(0.5, 1), rng.uniform(0.6, 1)), dtype=np.float32)
    bottom = np.array(colour(hue + rng.normal(0, 0.02), rng.uniform(0.3, 0.8), rng.uniform(0.2, 0.6)),
                      dtype=np.float32)
    ramp = np.linspace(0, 1, side, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (side, side, 3)).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    size = rng.uniform(0.2, 0.5) * side
    x, y = rng.uniform(0, side - size, 2)
    fill = colour(hue + 0.5 + rng.normal(0, 0.05), rng.uniform(0.6, 1), rng.uniform(0.6, 1))
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x, y, x + size, y + size], fill=fill)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def scenes(count: int, themes: int, side: int, seed: int) -> list[bytes]:
    """`count` distinct scenes, the themes taken in turn; the themes' hues are fixed, whatever the seed."""
    rng = np.random.default_rng(seed)
    pictures: dict[str, bytes] = {}
    while len(pictures) < count:
        data = scene(rng, (len(pictures) % themes) / themes, side)
        pictures.setdefault(hashlib.sha256(data).hexdigest(), data)
    return list(pictures.values())


def write_package(folder: Path, pictures: list[bytes], side: int) -> tuple[dict[str, Path], str, list[dict]]:
    """The pictures as a dataset package, and the inputs a job would have been sent."""
    folder.mkdir(parents=True, exist_ok=True)
    members, records = [], []
    for index, data in enumerate(pictures):
        sha = hashlib.sha256(data).hexdigest()
        members.append((f"{sha}.png", data))
        records.append({"title": f"scene-{index}", "author": "generated", "license": "CC0", "image_sha256": sha,
                        "width": side, "height": side, "shard": "shard-00000.tar", "member": f"{sha}.png"})
    write_tar(folder / "shard-00000.tar", sorted(members))
    digest = write_manifest(folder / MANIFEST, records)
    return ({f"{INPUT_PREFIX}{name}": folder / name for name in (MANIFEST, "shard-00000.tar")}, digest, records)


def unit_images(pictures: list[bytes]) -> torch.Tensor:
    """PNG pictures as N x 3 x H x W in [-1, 1]."""
    arrays = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 127.5 - 1
              for data in pictures]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def trained(cfg: TrainConfig, folder: Path, inputs: dict[str, Path], device: torch.device) -> tuple[Any, Any, float]:
    """The weight average of a plan trained from scratch, its noise schedule and the seconds it took."""
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        unet, scheduler, _, _, result = train(cfg, folder, device, report=False, inputs=inputs)
    seconds = time.perf_counter() - started
    _LAST["model"] = unet.eval()  # the last step's weights, which DiLoCo's global weights are compared with
    return with_weights(unet, result.ema or {}).eval(), scheduler, seconds


_LAST: dict[str, Any] = {}


@torch.no_grad()
def held_out_loss(model: Any, scheduler: Any, images: torch.Tensor, seed: int, device: torch.device) -> list[float]:
    """Mean squared error of the predicted noise per tenth of the schedule, least noise first; the same noise and
    timesteps for every model (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    length = scheduler.config.num_train_timesteps
    losses = []
    for decile in range(DECILES):
        low, high = decile * length // DECILES, (decile + 1) * length // DECILES
        steps = torch.randint(low, max(high, low + 1), (len(images),), generator=generator)
        noise = torch.randn(images.shape, generator=generator)
        noisy = scheduler.add_noise(images, noise, steps).to(device)
        total = 0.0
        for start in range(0, len(images), 128):
            part = slice(start, start + 128)
            predicted = model(noisy[part], steps[part].to(device)).sample
            total += float(((predicted.float().cpu() - noise[part]) ** 2).sum())
        losses.append(total / noise.numel())
    return losses


def quality(model: Any, scheduler: Any, args: argparse.Namespace, real: np.ndarray, device: torch.device,
            seed: int) -> tuple[float, float]:
    """FID and KID of the model's samples against the held-out images' descriptors."""
    seeds = [seed + i for i in range(args.samples)]
    drawn = to_unit(draw_samples(model, scheduler, seeds, args.inference_steps, device, sampler="ddim"))
    fake = descriptors.features(drawn)
    kid, _ = kernel_inception_distance(real, fake, 20, np.random.default_rng(seed))
    return frechet_distance(real, fake), kid


def mb(count: float) -> str:
    return f"{count / 1e6:.2f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", type=_ints, default=[4, 8])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--held-out", type=int, default=256)
    parser.add_argument("--themes", type=int, default=8)
    parser.add_argument("--side", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1200, help="the monolith's steps; each of K experts trains "
                                                                 "steps / K")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--router-steps", type=int, default=400)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--inference-steps", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=4, help="DiLoCo's workers (0: no DiLoCo)")
    parser.add_argument("--diloco-hs", type=_ints, default=[50, 100, 500], help="inner steps per round")
    parser.add_argument("--diloco-dtypes", default="fp32,fp16,int8")
    parser.add_argument("--diloco-down", default="fp32,int8", help="how the global weights travel down")
    parser.add_argument("--uplink-mbit", type=float, default=20.0, help="the emulated home link, Mbit/s")
    parser.add_argument("--outer-lr", type=float, default=0.7, help="DiLoCo's outer learning rate")
    parser.add_argument("--outer-momentum", type=float, default=0.9, help="DiLoCo's outer Nesterov momentum")
    args = parser.parse_args()
    args.diloco_dtypes = [d for d in args.diloco_dtypes.split(",") if d]
    if any(d not in diloco.SYNC_DTYPES for d in args.diloco_dtypes):
        parser.error(f"--diloco-dtypes: each one of {', '.join(diloco.SYNC_DTYPES)}")
    args.diloco_down = [d for d in args.diloco_down.split(",") if d]
    if not args.diloco_down or any(d not in diloco.DOWN_DTYPES for d in args.diloco_down):
        parser.error(f"--diloco-down: each one of {', '.join(diloco.DOWN_DTYPES)}")
    if args.workers and args.batch_size % args.workers:
        parser.error("--batch-size must be a multiple of --workers (each worker trains batch / workers)")
    if any(k < 2 or args.steps < k for k in args.ks):
        parser.error("--ks: each K must be at least 2 and at most --steps")
    device = pick_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    plan = TrainConfig(dataset="scenes", resolution=args.side, steps=args.steps, batch_size=args.batch_size,
                       ema_decay=0.995, seed=args.seed, sample_count=1, sample_inference_steps=2,
                       checkpoint_every=10**6)
    print(f"device {device} ({name}); {args.images} generated scenes of {args.themes} themes, {args.side}x{args.side}"
          f", {args.held_out} held out; monolith {args.steps} steps x batch {args.batch_size}; experts the same "
          f"compute in all; {args.samples} DDIM-{args.inference_steps} samples per model", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        pictures = scenes(args.images + args.held_out, args.themes, args.side, args.seed)
        training, held = pictures[:args.images], pictures[args.images:]
        inputs, digest, records = write_package(folder / "package", training, args.side)
        plan = plan.model_copy(update={"dataset_digest": digest})
        held_images = unit_images(held)
        real = descriptors.features(to_unit(held_images))
        floor = frechet_distance(real, descriptors.features(to_unit(unit_images(training))))
        print(f"the training set against the held-out images: FID {floor:.4f} (the best a model can be expected "
              "to come)", flush=True)

        unet, scheduler, mono_seconds = trained(plan, folder / "monolith", inputs, device)
        params = sum(p.numel() for p in unet.parameters())
        last_step = held_out_loss(_last_step_model, scheduler, held_images, args.seed, device) \
            if (_last_step_model := _LAST.pop("model", None)) is not None else None
        rows = [("monolith", held_out_loss(unet, scheduler, held_images, args.seed, device),
                 *quality(unet, scheduler, args, real, device, args.seed), mono_seconds, 0.0, None)]
        points = clusters.descriptors(training)
        for k in args.ks:
            cut = clusters.make(digest, records, points, k, args.seed)
            (folder / f"partition-{k}.json").write_bytes(partition.encode(cut))
            with_cut = {**inputs, "partition_sha256": folder / f"partition-{k}.json"}
            experts, seconds = [], []
            for cluster in range(k):
                expert_plan = plan.model_copy(update={"steps": args.steps // k, "partition": cut["digest"],
                                                      "cluster": cluster, "partition_sha256": "0" * 64})
                model, _, spent = trained(expert_plan, folder / f"k{k}-expert{cluster}", with_cut, device)
                experts.append(model)
                seconds.append(spent)
            router_plan = RouterConfig(dataset="scenes", dataset_digest=digest, partition=cut["digest"],
                                       resolution=args.side, num_train_timesteps=plan.num_train_timesteps,
                                       steps=args.router_steps, seed=args.seed)
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                metrics = routing.main(router_plan, folder / f"k{k}-router", with_cut)
            router_seconds = time.perf_counter() - started
            weigher, _ = routing.load(folder / f"k{k}-router" / "router.pt", device)
            whole = family.Family(experts, weigher).eval()
            withdrawn_cluster = cut["assignment"][records[0]["image_sha256"]]
            rebuild = seconds[withdrawn_cluster] + router_seconds
            print(f"K={k}: cluster sizes {partition.sizes(cut)}; router held-out accuracy "
                  f"{metrics['accuracy_by_noise_decile'][0]:.2f} at the least noise, "
                  f"{metrics['accuracy_by_noise_decile'][-1]:.2f} at the most (chance {metrics['chance']:.2f}); "
                  f"experts trained {sum(seconds):.1f} s, router {router_seconds:.1f} s", flush=True)
            rows.append((f"K={k}", held_out_loss(whole, scheduler, held_images, args.seed, device),
                         *quality(whole, scheduler, args, real, device, args.seed), sum(seconds) + router_seconds,
                         rebuild, k))
        report(rows, params, args)
        if args.workers and last_step is not None:
            table = DilocoTable(last_step, params, args, mono_seconds / args.steps)
            for h in args.diloco_hs:
                for dtype in args.diloco_dtypes:
                    for down in args.diloco_down:
                        model, seconds, sent, received = trained_in_rounds(
                            plan.model_copy(update={"outer_lr": args.outer_lr, "outer_momentum": args.outer_momentum,
                                                    "sync_down_dtype": down}),
                            inputs, device, args.workers, h, dtype)
                        table.row(h, dtype, down, held_out_loss(model, scheduler, held_images, args.seed, device),
                                  seconds, sent, received)
            table.best()


def trained_in_rounds(plan: TrainConfig, inputs: dict[str, Path], device: torch.device, workers: int, h: int,
                      dtype: str) -> tuple[Any, float, float, float]:
    """The plan trained by `workers` simulated nodes with DiLoCo (each batch / workers on its shard, the plan's
    steps); returns the global model, one worker's compute seconds per step, and the bytes one worker sends and
    receives per round (mean over rounds)."""
    cfg = plan.model_copy(update={"workers": workers, "sync_every": h, "sync_dtype": dtype, "ema_decay": 0.0,
                                  "batch_size": plan.batch_size // workers})
    coordinator = diloco.LocalCoordinator(diloco.Outer(cfg.outer_lr, cfg.outer_momentum), expected=workers,
                                          down=cfg.sync_down_dtype, total_steps=cfg.steps)
    team = [rounds.Worker(build_trainer(cfg, device, inputs, worker=i, workers=workers)) for i in range(workers)]
    coordinator.begin(rounds.weights_of(team[0].trainer.unet))
    compute, sent, received = 0.0, 0, 0
    while coordinator.step < cfg.steps:
        state = rounds.GlobalState(coordinator.round, coordinator.step, coordinator.weights)
        update = coordinator.last_update
        for index, worker in enumerate(team):
            worker.adopt(state)
            steps = worker.span(state)
            started = time.perf_counter()
            for _ in range(steps):
                worker.trainer.step_once()
            compute += time.perf_counter() - started
            payload, samples, loss = worker.contribution(steps)
            sent += len(payload)
            # What came down to start this round: the int8 update, or the weights whole (the first round's too).
            received += len(update) if update is not None else len(
                diloco.pack_weights(state.weights, round_number=state.round, step=state.step))
            coordinator.contribute(index, state.round, payload, samples, loss, steps)
    model = team[0].trainer.unet
    rounds.load_weights(model, coordinator.weights)
    count = len(coordinator.rounds)
    return model.eval(), compute / (workers * cfg.steps), sent / (workers * count), received / (workers * count)


class DilocoTable:
    """The DiLoCo table, a row as each setting is measured, and its last line (see the module's docstring)."""

    def __init__(self, mono_loss: list[float], params: int, args: argparse.Namespace, mono_step_s: float) -> None:
        self.workers, self.link = args.workers, args.uplink_mbit * 1e6 / 8  # bytes per second
        self.parallel = 2 * (self.workers - 1) / self.workers * 4 * params  # ring all-reduce of fp32 gradients
        self.base, self.mono_step_s, self.results = float(np.mean(mono_loss)), mono_step_s, []
        print(f"\none model trained by {self.workers} nodes together (DiLoCo, outer lr {args.outer_lr:g}, momentum "
              f"{args.outer_momentum:g}), the same "
              f"samples as the monolith; data-parallel on {self.workers} workers exchanges {mb(self.parallel)} per "
              f"worker per step; the monolith's last-step weights have held-out loss {self.base:.4f}; rounds over a "
              f"{args.uplink_mbit:g} Mbit/s link")
        print(f"  {'H':>5} {'dtype':>5} {'down':>5} {'up/round':>10} {'down/round':>10} {'bytes/step':>10} "
              f"{'fewer':>7} {'loss':>7} {'vs mono':>8} {'round s':>8} {'DP H steps s':>12}", flush=True)

    def row(self, h: int, dtype: str, down: str, losses: list[float], step_s: float, sent: float,
            received: float) -> None:
        per_step = (sent + received) / h
        ratio = self.parallel / per_step
        loss = float(np.mean(losses))
        change = 100 * (loss / self.base - 1)
        round_s = h * step_s + (sent + received) / self.link
        parallel_s = h * (self.mono_step_s / self.workers + self.parallel / self.link)
        self.results.append((ratio, change, h, dtype, down))
        print(f"  {h:>5} {dtype:>5} {down:>5} {mb(sent):>10} {mb(received):>10} {mb(per_step):>10} {ratio:>6.0f}x "
              f"{loss:>7.4f} {change:>+7.1f}% {round_s:>8.1f} {parallel_s:>12.1f}", flush=True)

    def best(self) -> None:
        within = [r for r in self.results if r[1] <= 2.0]
        best = max(within) if within else min(self.results, key=lambda r: r[1])
        note = "" if within else " (no setting came within 2% of the monolith's loss: the lowest loss is shown)"
        print(f"best: H={best[2]}, {best[3]} pseudo-gradients, global weights down in {best[4]}{note}")
        print(f"diloco: {best[0]:.0f} x fewer bytes than data-parallel, loss {best[1]:+.1f}%")


def report(rows: list[tuple], params: int, args: argparse.Namespace) -> None:
    mono_loss, mono_fid, mono_kid, mono_seconds = rows[0][1], rows[0][2], rows[0][3], rows[0][4]
    print("\nbytes each worker exchanges per training step (fp32 gradients; the monolith data-parallel on K "
          "workers, ring all-reduce)")
    for *_, k in rows[1:]:
        print(f"  K={k}: monolith {mb(2 * (k - 1) / k * 4 * params)}, experts 0 (each uploads its checkpoint once at "
              f"the end: {mb(4 * params)})")
    print("\nheld-out denoising loss per tenth of the noise schedule (least noise first), and its ratio to the "
          "monolith's")
    for label, losses, *_ in rows:
        ratios = " ".join(f"{loss / base:.2f}" for loss, base in zip(losses, mono_loss, strict=True))
        print(f"  {label:>8}: " + " ".join(f"{loss:.4f}" for loss in losses) + f"  ratio {ratios}"
              f"  mean {np.mean(losses):.4f} ({np.mean(losses) / np.mean(mono_loss):.3f})")
    print("\nquality on the offline descriptor, training seconds and the cost of one withdrawal")
    print(f"  {'method':>8} {'FID':>8} {'ratio':>6} {'KID':>9} {'ratio':>6} {'train s':>8} {'withdrawal s':>12} "
          f"{'of the monolith':>15}")
    for label, _, fid, kid, seconds, rebuild, k in rows:
        withdrawal = mono_seconds if k is None else rebuild
        print(f"  {label:>8} {fid:>8.4f} {fid / mono_fid:>6.2f} {kid:>9.5f} {kid / mono_kid if mono_kid else 0:>6.2f} "
              f"{seconds:>8.1f} {withdrawal:>12.1f} {withdrawal / mono_seconds:>15.2f}")
    if len(rows) < 2:
        return
    chosen = next((row for row in rows[1:] if row[-1] == 4), rows[1])
    print(f"experts: K={chosen[-1]} fid ratio {chosen[2] / mono_fid:.2f}, withdrawal cost "
          f"{chosen[5] / mono_seconds:.2f} of the monolith")


if __name__ == "__main__":
    main()
