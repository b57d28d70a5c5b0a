"""Training step time of the observatory's train job versus a bare diffusers loop, same model and batch.

    python bench/train_overhead.py [--steps 40] [--rounds 3] [--batch-size 64] [--resolution 16]
                                   [--channels 32,64,64] [--precision auto] [--ema-decay 0.999]

Both run in this process, alternating rounds so that drift in the machine's speed hits both alike. The job's
figure is its own measured loop (resumable sampling, flips, weight average, progress lines); the bare loop is the
textbook one, in the same precision (on a GPU, `auto` is bf16 where the card has it). Prints the median seconds per
step of each, images/s, and their ratio (job / bare). Run it with --ema-decay 0 to see the average's cost.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from jobs import dataset as datasets
from jobs.config import TrainConfig
from jobs.model import build_noise_scheduler, build_unet, pick_device
from jobs.train import autocast_dtype, train


def bare_loop(cfg: TrainConfig, device: torch.device, steps: int) -> float:
    """The diffusers example's loop, nothing else; returns seconds per step."""
    images = datasets.load({}, None, cfg.resolution, name=cfg.dataset).images.to(device)
    unet = build_unet(cfg).to(device).train()
    noise_scheduler = build_noise_scheduler(cfg)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate)
    half = autocast_dtype(cfg, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    def step() -> None:
        clean = images[torch.randint(0, images.shape[0], (cfg.batch_size,), device=device)]
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), device=device)
        with torch.autocast(device.type, dtype=half or torch.float32, enabled=half is not None):
            predicted = unet(noise_scheduler.add_noise(clean, noise, timesteps), timesteps).sample
        loss = F.mse_loss(predicted.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # one warm-up step, as the job gets before its timed steps
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def job_loop(cfg: TrainConfig, device: torch.device, steps: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        warm = cfg.model_copy(update={"steps": 1, "checkpoint_every": 10**6})
        with contextlib.redirect_stdout(io.StringIO()):
            train(warm, Path(folder), device)  # warm-up step, then resume from it for the timed steps
            timed = cfg.model_copy(update={"steps": steps + 1, "checkpoint_every": 10**6})
            *_, result = train(timed, Path(folder), device)
        return result.seconds_per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--channels", default="32,64,64", help="UNet channels per block")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--ema-decay", type=float, default=0.999)
    args = parser.parse_args()
    cfg = TrainConfig(batch_size=args.batch_size, resolution=args.resolution, precision=args.precision,
                      block_out_channels=[int(c) for c in args.channels.split(",")], ema_decay=args.ema_decay)
    device = pick_device()
    parameters = sum(p.numel() for p in build_unet(cfg).parameters())
    precision = str(autocast_dtype(cfg, device) or torch.float32).removeprefix("torch.")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, UNet "
          f"{parameters / 1e6:.2f}M parameters, {cfg.resolution}x{cfg.resolution}, batch {cfg.batch_size}, "
          f"{precision}, EMA decay {cfg.ema_decay}, {args.steps} steps x {args.rounds} rounds")
    job, bare = [], []
    for round_ in range(args.rounds):
        bare.append(bare_loop(cfg, device, args.steps))
        job.append(job_loop(cfg, device, args.steps))
        print(f"round {round_ + 1}: bare {bare[-1] * 1000:.1f} ms/step, job {job[-1] * 1000:.1f} ms/step")
    job_s, bare_s = statistics.median(job), statistics.median(bare)
    print(f"bare diffusers loop: {bare_s * 1000:.1f} ms/step ({cfg.batch_size / bare_s:.0f} images/s)")
    print(f"observatory job:     {job_s * 1000:.1f} ms/step ({cfg.batch_size / job_s:.0f} images/s)")
    print(f"ratio job/bare:      {job_s / bare_s:.3f}")


if __name__ == "__main__":
    main()
