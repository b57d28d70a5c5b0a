"""Train the observatory's diffusion model on a registered dataset version, then draw a sample grid.

Run on a pool node by jobs.runner as `python -m jobs.train --config JSON --output DIR --inputs JSON`: the inputs
are the dataset's manifest and shards (checked against the plan's dataset digest) and, to fine-tune, the base
model's checkpoint. Each optimizer step sums the gradients of `gradient_accumulation` batches; an exponential
moving average of the weights (`ema_decay`) is kept beside them, and the samples and the checkpoint use it. On a
GPU the passes run in mixed precision (bf16 or fp16), every random draw comes from a generator on the GPU and the
losses are copied back without waiting for the card, so the loop never stalls it. Resumes exactly from
DIR/state.pt when it exists (same batches, same noise, same average), so a run moved to another node continues,
not restarts; each saved state is announced with a checkpoint line, which the runner ships off the node. On
SIGTERM it saves its state at the next step and stops. Writes: checkpoint.pt, samples.png, training_images.png,
metrics.json, attribution.json, and outputs.json declaring them (jobs.outputs).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from jobs import dataset as datasets
from jobs import partition, progress
from jobs.config import TrainConfig
from jobs.imaging import to_grid
from jobs.kinds import KINDS
from jobs.model import (
    build_noise_scheduler,
    build_unet,
    class_labels,
    draw_samples,
    pick_device,
    save_checkpoint,
)
from jobs.outputs import declare

# ---- arguments ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Args:
    cfg: TrainConfig
    output: Path
    inputs: dict[str, Path] = field(default_factory=dict)


def parse(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(prog="jobs.train", description=__doc__)
    parser.add_argument("--config", required=True, help="the train job plan, as JSON")
    parser.add_argument("--output", required=True, type=Path, help="folder for outputs and resume state")
    parser.add_argument("--inputs", default="{}", help="the plan's inputs fetched to this node, as JSON (none)")
    ns = parser.parse_args(argv)
    inputs = {name: Path(path) for name, path in json.loads(ns.inputs).items()}
    return Args(cfg=TrainConfig.model_validate_json(ns.config), output=ns.output, inputs=inputs)


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



class Losses:
    """The step losses, kept on the device and copied to the host without waiting for the card. A progress line
    shows the latest loss the card has finished, so the loop never stalls the GPU to read one (reading the newest
    step's loss waits for that step: on an H100, reporting every step that way cost a sixth of the step time)."""

    def __init__(self, values: list[float]) -> None:
        self.values = values  # every step's loss, from step 1, as far as read back
        self.pending: list[torch.Tensor] = []
        self.copies: list[tuple[torch.Tensor, torch.cuda.Event]] = []  # host copies under way, oldest first

    def add(self, loss: torch.Tensor) -> None:
        self.pending.append(loss)

    def poll(self) -> None:
        """Start copying the pending losses to the host, and take in the copies already done."""
        if self.pending:
            stacked, self.pending = torch.stack(self.pending), []
            if stacked.is_cuda:
                event = torch.cuda.Event()
                host = stacked.to("cpu", non_blocking=True)  # into pinned memory: the host does not wait
                event.record()
                self.copies.append((host, event))
            else:
                self.values.extend(stacked.tolist())
        while self.copies and self.copies[0][1].query():
            self.values.extend(self.copies.pop(0)[0].tolist())

    def latest(self) -> dict[str, float | int]:
        """For a progress line: the newest loss read back and its step (nothing before the first is)."""
        self.poll()
        return {"loss": round(self.values[-1], 5), "loss_step": len(self.values)} if self.values else {}

    def settle(self) -> list[float]:
        """Every loss so far, waiting for the card where it must."""
        self.poll()
        for host, event in self.copies:
            event.synchronize()
            self.values.extend(host.tolist())
        self.copies = []
        return self.values


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
                average: Average | None = None, scaler=None) -> None:  # type: ignore[no-untyped-def]
    tmp = path.with_suffix(".tmp")
    state = {"step": step, "unet": unet.state_dict(), "optimizer": optimizer.state_dict(),
             "generator": generator.get_state(), "generator_device": generator.device.type, "losses": losses}
    if average is not None:
        state["ema"] = average.state()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    torch.save(state, tmp)
    tmp.replace(path)
    progress.checkpoint(step, path)


def restore_state(path: Path, unet, optimizer, generator: torch.Generator, average: Average | None = None,
                  scaler=None, seed: int = 0) -> tuple[int, list[float]]:  # type: ignore[no-untyped-def]
    """Load a resume state written on any device into a model on any device.

    The file is read onto the CPU: the model and optimizer copy their tensors to wherever they live, and the
    random generator (on the CPU, or on the GPU) takes its state as the CPU byte tensor it must be (mapping the file
    onto a GPU would hand it a CUDA tensor, which it refuses). A state written by a generator of the other kind
    (a GPU run resumed on a CPU, or the reverse) cannot continue its random stream: the generator is seeded from
    the seed and the step instead, and the job says so.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    unet.load_state_dict(state["unet"])
    optimizer.load_state_dict(state["optimizer"])
    if state.get("generator_device", "cpu") == generator.device.type:
        generator.set_state(state["generator"])
    else:
        generator.manual_seed(seed + int(state["step"]))
        print(f"the saved state's random generator was on {state.get('generator_device', 'cpu')}, this one is on "
              f"{generator.device.type}: batches and noise from step {state['step']} on differ from an unbroken "
              "run's", flush=True)
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
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


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The mixed-precision type of the passes on a GPU (None: fp32, as on every CPU)."""
    if device.type != "cuda" or cfg.precision == "fp32":
        return None
    if cfg.precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cfg.precision == "bf16" else torch.float16


def load_base(unet, path: Path, classes: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Start from a registered model version's weights; the architecture and classes must be the same."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    base_classes = list(payload.get("meta", {}).get("classes") or [])
    if base_classes != classes:
        raise ValueError(f"the base model's classes ({', '.join(base_classes) or 'none'}) are not this dataset's "
                         f"({', '.join(classes) or 'none'})")
    try:
        unet.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"the base model's weights do not fit this plan's UNet: {str(exc)[:300]}") from None


def cluster_images(cfg: TrainConfig, inputs: dict[str, Path]) -> set[str] | None:
    """The images (sha256) of the plan's cluster of its partition, checked against the partition's digest and the
    dataset's; None for a plan without a partition (the whole dataset)."""
    if cfg.partition is None:
        return None
    return partition.cluster_images(inputs, cfg.partition, cfg.dataset_digest, cfg.cluster)


@dataclass
class Trainer:
    """Everything one training loop holds (model, optimizer, random generator, weight average, data on the device),
    and one optimizer step at a time: plain training runs it to the end, a DiLoCo worker (jobs.rounds) H steps at a
    time between synchronisations."""

    cfg: TrainConfig
    device: torch.device
    data: datasets.Dataset
    images: torch.Tensor
    labels: torch.Tensor | None
    unet: Any
    noise_scheduler: Any
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    average: Average | None
    scaler: Any
    half: torch.dtype | None
    losses: Losses
    step: int = 0

    def save(self, path: Path) -> None:
        _save_state(path, self.step, self.unet, self.optimizer, self.generator, self.losses.settle(), self.average,
                    self.scaler)

    def restore(self, path: Path) -> None:
        self.step, restored = restore_state(path, self.unet, self.optimizer, self.generator, self.average,
                                            self.scaler, self.cfg.seed)
        self.losses = Losses(restored)

    def step_once(self) -> None:
        """One optimizer step over `gradient_accumulation` batches drawn from the generator."""
        cfg, device, generator = self.cfg, self.device, self.generator
        self.optimizer.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), device=device)
        shape = (cfg.batch_size, *self.images.shape[1:])
        for _ in range(cfg.gradient_accumulation):
            index = torch.randint(0, self.images.shape[0], (cfg.batch_size,), generator=generator, device=device)
            flip = torch.rand(cfg.batch_size, generator=generator, device=device) < 0.5
            noise = torch.randn(shape, generator=generator, device=device)
            timesteps = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=generator,
                                      device=device)
            clean = self.images[index]
            clean = torch.where(flip[:, None, None, None], clean.flip(-1), clean)
            noisy = self.noise_scheduler.add_noise(clean, noise, timesteps)
            labels = self.labels[index] if self.labels is not None else None
            with torch.autocast(device.type, dtype=self.half or torch.float32, enabled=self.half is not None):
                predicted = self.unet(noisy, timesteps, class_labels=labels).sample
            loss = F.mse_loss(predicted.float(), noise) / cfg.gradient_accumulation
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            step_loss += loss.detach()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.step += 1
        if self.average is not None:
            self.average.update(self.step)
        self.losses.add(step_loss)

    @property
    def images_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.gradient_accumulation


def shard(data: datasets.Dataset, worker: int, workers: int) -> datasets.Dataset:
    """Worker `worker`'s share of the images (every `workers`-th, from its own index on): each worker of a run
    trained in rounds learns from its own shard."""
    if workers <= 1:
        return data
    if worker >= data.images.shape[0]:
        raise ValueError(f"the dataset has {data.images.shape[0]} images: too few for worker {worker} of {workers}")
    return dataclasses.replace(data, images=data.images[worker::workers], entries=data.entries[worker::workers],
                               labels=data.labels[worker::workers] if data.labels is not None else None)


def load_data(cfg: TrainConfig, inputs: dict[str, Path]) -> datasets.Dataset:
    """The plan's images: its dataset version (or one cluster of it), less the authors, classes and withdrawn
    images it leaves out."""
    return datasets.load(inputs, cfg.dataset_digest, cfg.resolution, name=cfg.dataset,
                         exclude_authors=cfg.exclude_authors, conditional=cfg.conditioning == "class",
                         exclude_classes=cfg.exclude_classes, only=cluster_images(cfg, inputs),
                         withdrawn=set(cfg.withdrawn_images))


def build_trainer(cfg: TrainConfig, device: torch.device, inputs: dict[str, Path] | None = None, *,
                  worker: int = 0, workers: int = 1) -> Trainer:
    """The model (seeded by the plan, or the base model's weights), optimizer and data of a fresh training loop; a
    worker of a run trained in rounds gets its shard of the data and its own random stream (seed + worker)."""
    torch.manual_seed(cfg.seed)
    inputs = dict(inputs or {})
    data = shard(load_data(cfg, inputs), worker, workers)
    unet = build_unet(cfg, len(data.classes)).to(device)
    if cfg.base_checkpoint_sha256:
        if "base_checkpoint_sha256" not in inputs:
            raise ValueError("the plan fine-tunes a base model, but its checkpoint was not sent to the job")
        load_base(unet, inputs["base_checkpoint_sha256"], data.classes)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    noise_scheduler = build_noise_scheduler(cfg)
    noise_scheduler.alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)  # add_noise reads it every step
    half = autocast_dtype(cfg, device)
    unet.train()
    # Every random draw comes from one generator on the training device, so a resumed run sees the same batches
    # and noise, and a GPU never waits for draws made on the host.
    return Trainer(cfg, device, data, data.images.to(device),
                   data.labels.to(device) if data.labels is not None else None, unet, noise_scheduler,
                   torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate),
                   torch.Generator(device).manual_seed(cfg.seed + worker),
                   Average(unet, cfg.ema_decay) if cfg.ema_decay > 0 else None,
                   torch.amp.GradScaler("cuda") if half == torch.float16 else None, half, Losses([]))


SAY_EVERY_S = 30.0  # a line a person reads, at least this often (besides every tenth of the run)
_said = {"at": 0.0, "step": -1}


def report_progress(trainer: Trainer, started: float, first_step: int, **extra: Any) -> None:
    """The progress record the portal draws, and now and then a plain line for the run's log."""
    cfg, step = trainer.cfg, trainer.step
    per_step = (time.perf_counter() - started) / max(step - first_step, 1)
    eta_s = round(per_step * (cfg.steps - step))
    latest = trainer.losses.latest()
    progress.report(step, cfg.steps, phase="train", **latest, eta_s=eta_s,
                    images_per_s=round(trainer.images_per_step / per_step, 1), **_gpu_memory(trainer.device), **extra)
    tenth = max(1, cfg.steps // 10)
    now = time.monotonic()
    if step != _said["step"] and (step // tenth != _said["step"] // tenth or now - _said["at"] >= SAY_EVERY_S):
        loss = f", loss {latest['loss']:.4f}" if isinstance(latest.get("loss"), float) else ""
        print(f"step {step} of {cfg.steps}{loss}, {1 / per_step:.2f} steps/s, about {_duration(eta_s)} left",
              flush=True)
        _said.update(at=now, step=step)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 \
        else f"{seconds / 3600:.1f} h"


def train(cfg: TrainConfig, output: Path, device: torch.device | None = None, report: bool = True,
          inputs: dict[str, Path] | None = None):
    """Train to cfg.steps, resuming from output/state.pt; returns the model, schedule, dataset and timing."""
    device = device or pick_device()
    output.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(cfg, device, inputs)
    state_path = output / "state.pt"
    if state_path.exists():
        trainer.restore(state_path)
        print(f"resumed from step {trainer.step}", flush=True)

    report_every = max(1, cfg.steps // 100)
    started, first_step = time.perf_counter(), trainer.step
    last_report = started
    while trainer.step < cfg.steps:
        if _stop_requested["signal"]:
            trainer.save(state_path)
            print(f"stopped on request at step {trainer.step}; state saved", flush=True)
            raise Stopped
        trainer.step_once()
        step = trainer.step
        # Report every 1% of the steps, and at least every 2 seconds so that long runs still show life.
        if report and (step % report_every == 0 or step == cfg.steps or time.perf_counter() - last_report > 2):
            report_progress(trainer, started, first_step)
            last_report = time.perf_counter()
        if step % cfg.checkpoint_every == 0 and step < cfg.steps:
            trainer.save(state_path)
    trainer.save(state_path)
    elapsed = time.perf_counter() - started
    steps_run = trainer.step - first_step
    values = trainer.losses.settle()
    result = TrainResult(steps_run, values[-1] if values else float("nan"), elapsed / max(steps_run, 1),
                         trainer.average.state() if trainer.average is not None else None)
    return trainer.unet, trainer.noise_scheduler, trainer.data, values, result


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


def write_outputs(cfg: TrainConfig, output: Path, unet, noise_scheduler, data: datasets.Dataset,  # type: ignore[no-untyped-def]
                  losses: list[float], result: TrainResult, device: torch.device, *, weights: str,
                  extra_metrics: dict[str, Any] | None = None) -> None:
    """The checkpoint (of `unet` as given), sample grid, training images, metrics and attribution, declared."""
    meta = {"dataset": data.name, "dataset_digest": data.digest, "images": len(data.entries),
            "classes": data.classes, "steps": cfg.steps, "config": cfg.model_dump(), "weights": weights}
    save_checkpoint(output / "checkpoint.pt", unet, noise_scheduler, meta)
    to_grid(data.images).save(output / "training_images.png")

    def on_sample_step(done: int, total: int) -> None:
        if done % max(1, total // 20) == 0 or done == total:
            progress.report(cfg.steps, cfg.steps, phase="sample", sample_step=done, sample_total=total)
        if done == 1 or done == total:
            print(f"drawing {len(seeds)} samples: denoising step {done} of {total}", flush=True)

    seeds = [cfg.seed + i for i in range(cfg.sample_count)]
    samples = draw_samples(unet, noise_scheduler, seeds, cfg.sample_inference_steps, device, on_sample_step,
                           sampler=cfg.sampler, labels=class_labels(data.classes, [], len(seeds)))
    to_grid(samples).save(output / "samples.png")
    progress.report(cfg.steps, cfg.steps, phase="writing outputs")

    metrics = {
        "device": str(device), "parameters": sum(p.numel() for p in unet.parameters()),
        "steps": cfg.steps, "final_loss": result.final_loss, "seconds_per_step": result.seconds_per_step,
        "images_per_s": round(cfg.batch_size * cfg.gradient_accumulation / max(result.seconds_per_step, 1e-9), 1),
        **_gpu_memory(device), "precision": str(autocast_dtype(cfg, device) or torch.float32).removeprefix("torch."),
        "loss_curve": losses[:: max(1, len(losses) // 200)], "dataset_digest": data.digest,
        "config": cfg.model_dump(mode="json"), **(extra_metrics or {}),
    }
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (output / "attribution.json").write_text(json.dumps(
        {"dataset": data.name, "digest": data.digest, "partition": cfg.partition, "cluster": cfg.cluster,
         "images": data.entries}, indent=2, ensure_ascii=False))
    declare(output, KINDS["train"].outputs)
    # The resume state goes last: outputs count as complete only once it is gone.
    (output / "state.pt").unlink(missing_ok=True)


def main(cfg: TrainConfig, output: Path, inputs: dict[str, Path] | None = None) -> TrainResult | None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    done = _already_done(cfg, output)
    if done is not None:
        declare(output, KINDS["train"].outputs)
        progress.report(cfg.steps, cfg.steps, phase="done")
        print("outputs already complete; nothing to do", flush=True)
        return done
    device = pick_device()
    print(f"training on {device} with {torch.get_num_threads()} CPU threads: {cfg.model_dump_json()}", flush=True)
    if cfg.workers > 1:  # one of several nodes training the model together, in rounds
        from jobs import rounds

        exchange = rounds.ChannelExchange(rounds.channel_from_environment(), output)
        try:
            return rounds.run_worker(cfg, output, dict(inputs or {}), device, exchange,
                                     stop=lambda: _stop_requested["signal"])
        except Stopped:
            print("stopped on request; the run's global weights are the observatory's", flush=True)
            return None
    try:
        unet, noise_scheduler, data, losses, result = train(cfg, output, device, inputs=inputs)
    except Stopped:
        return None

    if result.ema is not None:  # the average is what is kept and sampled from
        unet = with_weights(unet, result.ema)
    write_outputs(cfg, output, unet, noise_scheduler, data, losses, result, device,
                  weights=f"average (EMA, decay {cfg.ema_decay})" if cfg.ema_decay > 0 else "last step")
    print(f"done: {cfg.steps} steps, final loss {result.final_loss:.4f}", flush=True)
    return result


if __name__ == "__main__":
    args = parse()
    main(args.cfg, args.output, args.inputs)
