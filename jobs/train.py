"""Train the observatory's diffusion model on a bundled dataset, then draw a sample grid.

Run on a pool node by jobs.runner as `python -m jobs.train --config JSON --output DIR`. Each optimizer step sums
the gradients of `gradient_accumulation` batches; an exponential moving average of the weights (`ema_decay`) is
kept beside them, and the samples and the checkpoint use it. Resumes exactly from DIR/state.pt when it exists
(same batches, same noise, same average), so a run moved to another node continues, not restarts;
each saved state is announced with a checkpoint line, which the runner ships off the node. On SIGTERM it saves
its state at the next step and stops. Writes: checkpoint.pt, samples.png, training_images.png, metrics.json,
attribution.json, and outputs.json declaring them (jobs.outputs).
"""

from __future__ import annotations

import argparse
import copy
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from jobs import dataset as datasets
from jobs import progress
from jobs.config import TrainConfig
from jobs.imaging import to_grid
from jobs.kinds import KINDS
from jobs.model import build_noise_scheduler, build_unet, draw_samples, pick_device, save_checkpoint
from jobs.outputs import declare

# ---- arguments ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Args:
    cfg: TrainConfig
    output: Path


def parse(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(prog="jobs.train", description=__doc__)
    parser.add_argument("--config", required=True, help="the train job plan, as JSON")
    parser.add_argument("--output", required=True, type=Path, help="folder for outputs and resume state")
    parser.add_argument("--inputs", default="{}", help="the plan's inputs fetched to this node, as JSON (none)")
    ns = parser.parse_args(argv)
    return Args(cfg=TrainConfig.model_validate_json(ns.config), output=ns.output)


# ---- the training loop -------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    steps_run: int
    final_loss: float
    seconds_per_step: float
    ema: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # the averaged weights, by name


class Average:
    """An exponential moving average of a model's parameters, warmed up over the first steps (the decay at step t
    is min(decay, (1 + t) / (10 + t))), so that short runs are not dominated by their random start."""

    def __init__(self, unet, decay: float) -> None:  # type: ignore[no-untyped-def]
        self.decay = decay
        self.names = [name for name, _ in unet.named_parameters()]
        self.params = [p for _, p in unet.named_parameters()]
        self.shadow = [p.detach().clone().float() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_mul_(self.shadow, decay)
        torch._foreach_add_(self.shadow, [p.detach().float() for p in self.params], alpha=1 - decay)

    def state(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.shadow, strict=True))

    def load(self, state: dict[str, torch.Tensor]) -> None:
        for tensor, name in zip(self.shadow, self.names, strict=True):
            tensor.copy_(state[name])



def with_weights(unet, weights: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    """A copy of `unet` carrying `weights` (parameters by name), such as the average."""
    averaged = copy.deepcopy(unet)
    with torch.no_grad():
        for name, param in averaged.named_parameters():
            param.copy_(weights[name])
    return averaged


class Stopped(Exception):
    """Asked to stop (SIGTERM): the state is saved and announced, and no outputs are made."""


_stop_requested = {"signal": False}


def _on_sigterm(signum, frame) -> None:  # type: ignore[no-untyped-def]
    _stop_requested["signal"] = True


def _save_state(path: Path, step: int, unet, optimizer, generator: torch.Generator, losses: list[float],
                average: Average | None = None) -> None:
    tmp = path.with_suffix(".tmp")
    state = {"step": step, "unet": unet.state_dict(), "optimizer": optimizer.state_dict(),
             "generator": generator.get_state(), "losses": losses}
    if average is not None:
        state["ema"] = average.state()
    torch.save(state, tmp)
    tmp.replace(path)
    progress.checkpoint(step)


def restore_state(path: Path, unet, optimizer, generator: torch.Generator,
                  average: Average | None = None) -> tuple[int, list[float]]:
    """Load a resume state written on any device into a model on any device.

    The file is read onto the CPU: the model and optimizer copy their tensors to wherever they live, and the
    random generator, a CPU generator, takes its state as the CPU byte tensor it must be (mapping the file onto a
    GPU would hand it a CUDA tensor, which it refuses).
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    unet.load_state_dict(state["unet"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    if average is not None:
        if "ema" not in state:
            raise ValueError(f"{path} holds no weight average; it was written by a run without one")
        average.load(state["ema"])
    return state["step"], list(state["losses"])


def _gpu_memory(device: torch.device) -> dict[str, float]:
    """The most GPU memory the job has held so far, in GB (nothing on a CPU)."""
    if device.type != "cuda":
        return {}
    return {"gpu_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)}


def train(cfg: TrainConfig, output: Path, device: torch.device | None = None, report: bool = True):
    """Train to cfg.steps, resuming from output/state.pt; returns the model, schedule, dataset and timing."""
    device = device or pick_device()
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    data = datasets.load(cfg.dataset, cfg.resolution, cfg.exclude_authors)
    images = data.images.to(device)
    unet = build_unet(cfg).to(device)
    noise_scheduler = build_noise_scheduler(cfg)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate)
    generator = torch.Generator("cpu").manual_seed(cfg.seed)
    average = Average(unet, cfg.ema_decay) if cfg.ema_decay > 0 else None
    losses: list[float] = []
    step = 0

    state_path = output / "state.pt"
    if state_path.exists():
        step, losses = restore_state(state_path, unet, optimizer, generator, average)
        print(f"resumed from step {step}", flush=True)

    report_every = max(1, cfg.steps // 100)
    unet.train()
    started, first_step = time.perf_counter(), step
    last_report = started
    while step < cfg.steps:
        if _stop_requested["signal"]:
            _save_state(state_path, step, unet, optimizer, generator, losses, average)
            print(f"stopped on request at step {step}; state saved", flush=True)
            raise Stopped
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(cfg.gradient_accumulation):
            # Every random draw comes from one CPU generator, so a resumed run sees the same batches and noise.
            index = torch.randint(0, images.shape[0], (cfg.batch_size,), generator=generator)
            flip = torch.rand(cfg.batch_size, generator=generator) < 0.5
            noise = torch.randn((cfg.batch_size, *images.shape[1:]), generator=generator)
            timesteps = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=generator)
            clean = images[index.to(device)]
            clean = torch.where(flip.to(device)[:, None, None, None], clean.flip(-1), clean)
            noise, timesteps = noise.to(device), timesteps.to(device)
            noisy = noise_scheduler.add_noise(clean, noise, timesteps)
            loss = F.mse_loss(unet(noisy, timesteps).sample, noise) / cfg.gradient_accumulation
            loss.backward()
            step_loss += loss.item()
        optimizer.step()
        step += 1
        if average is not None:
            average.update(step)
        losses.append(step_loss)
        # Report every 1% of the steps, and at least every 2 seconds so that long runs still show life.
        if report and (step % report_every == 0 or step == cfg.steps or time.perf_counter() - last_report > 2):
            per_step = (time.perf_counter() - started) / (step - first_step)
            progress.report(step, cfg.steps, phase="train", loss=round(losses[-1], 5),
                            eta_s=round(per_step * (cfg.steps - step)),
                            images_per_s=round(cfg.batch_size * cfg.gradient_accumulation / per_step, 1),
                            **_gpu_memory(device))
            last_report = time.perf_counter()
        if step % cfg.checkpoint_every == 0 and step < cfg.steps:
            _save_state(state_path, step, unet, optimizer, generator, losses, average)
    elapsed = time.perf_counter() - started
    steps_run = step - first_step
    _save_state(state_path, step, unet, optimizer, generator, losses, average)
    result = TrainResult(steps_run, losses[-1] if losses else float("nan"), elapsed / max(steps_run, 1),
                         average.state() if average is not None else None)
    return unet, noise_scheduler, data, losses, result


# ---- main --------------------------------------------------------------------------------------------------


OUTPUTS = tuple(spec.name for spec in KINDS["train"].outputs)


def _already_done(cfg: TrainConfig, output: Path) -> TrainResult | None:
    """A rerun after the pool lost a finished job: the outputs are complete, so nothing is trained twice."""
    if not all((output / name).exists() for name in OUTPUTS) or (output / "state.pt").exists():
        return None
    metrics = json.loads((output / "metrics.json").read_text())
    if metrics.get("config") != cfg.model_dump(mode="json"):
        return None
    return TrainResult(0, metrics["final_loss"], metrics["seconds_per_step"])


def main(cfg: TrainConfig, output: Path) -> TrainResult | None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    done = _already_done(cfg, output)
    if done is not None:
        declare(output, KINDS["train"].outputs)
        progress.report(cfg.steps, cfg.steps, phase="done")
        print("outputs already complete; nothing to do", flush=True)
        return done
    device = pick_device()
    print(f"training on {device} with {torch.get_num_threads()} CPU threads: {cfg.model_dump_json()}", flush=True)
    try:
        unet, noise_scheduler, data, losses, result = train(cfg, output, device)
    except Stopped:
        return None

    if result.ema is not None:  # the average is what is kept and sampled from
        unet = with_weights(unet, result.ema)
    meta = {"dataset": data.name, "dataset_digest": data.digest, "images": len(data.entries),
            "steps": cfg.steps, "config": cfg.model_dump(),
            "weights": f"average (EMA, decay {cfg.ema_decay})" if cfg.ema_decay > 0 else "last step"}
    save_checkpoint(output / "checkpoint.pt", unet, noise_scheduler, meta)
    to_grid(data.images).save(output / "training_images.png")

    def on_sample_step(done: int, total: int) -> None:
        if done % max(1, total // 20) == 0 or done == total:
            progress.report(cfg.steps, cfg.steps, phase="sample", sample_step=done, sample_total=total)

    samples = draw_samples(unet, noise_scheduler, cfg.sample_count, cfg.sample_inference_steps, cfg.seed,
                           device, on_sample_step, sampler=cfg.sampler)
    to_grid(samples).save(output / "samples.png")

    metrics = {
        "device": str(device), "parameters": sum(p.numel() for p in unet.parameters()),
        "steps": cfg.steps, "final_loss": result.final_loss, "seconds_per_step": result.seconds_per_step,
        "images_per_s": round(cfg.batch_size * cfg.gradient_accumulation / max(result.seconds_per_step, 1e-9), 1),
        **_gpu_memory(device),
        "loss_curve": losses[:: max(1, len(losses) // 200)], "dataset_digest": data.digest,
        "config": cfg.model_dump(mode="json"),
    }
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (output / "attribution.json").write_text(json.dumps(
        {"dataset": data.name, "digest": data.digest, "images": data.entries}, indent=2, ensure_ascii=False))
    declare(output, KINDS["train"].outputs)
    # The resume state goes last: outputs count as complete only once it is gone.
    (output / "state.pt").unlink(missing_ok=True)
    print(f"done: {cfg.steps} steps, final loss {result.final_loss:.4f}", flush=True)
    return result


if __name__ == "__main__":
    args = parse()
    main(args.cfg, args.output)
