"""The GPU path of the jobs, checked on a CUDA card: what the CPU tests cannot see.

    python bench/gpu_path.py [--out DIR]

On the bundled set at 32x32, with a weight average:
- resume: a run stopped and resumed on the card against one that ran straight through, in fp32, bf16 and fp16
  (with its loss scaler); the gap is set beside the gap between two straight runs (the card's own
  nondeterminism), so "exact" means bit for bit and anything else is measured;
- a state written on the CPU resumes on the card and the reverse (the generator is re-seeded and says so);
- the whole train job on the card (checkpoint, samples, metrics), then sampling its checkpoint twice: the same
  bytes; the same seed and class give the same image alone and in a batch of others;
- the replication analysis of the model twice with the same seed: the same result digest.
Prints one line per check (ok / FAILED and the figures) and exits non-zero when any failed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import sys
import tempfile
from pathlib import Path

import torch

from jobs.analysis.replication import main as replication_main
from jobs.config import ReplicationConfig, SampleConfig, TrainConfig
from jobs.data import bundled
from jobs.dataset import local_inputs
from jobs.model import draw_samples, load_checkpoint
from jobs.sample import main as sample_main
from jobs.train import main as train_main
from jobs.train import train

BASE = {"resolution": 32, "batch_size": 16, "block_out_channels": [32, 64], "num_train_timesteps": 100,
        "ema_decay": 0.9, "steps": 6, "checkpoint_every": 3, "sample_count": 4, "sample_inference_steps": 5}
failures: list[str] = []


def check(name: str, ok: bool, detail: str) -> None:
    print(f"{'ok' if ok else 'FAILED':6} {name}: {detail}", flush=True)
    if not ok:
        failures.append(name)


def gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float().cpu() - b[k].float().cpu()).abs().max()) for k in a)


def quiet():  # type: ignore[no-untyped-def]
    return contextlib.redirect_stdout(io.StringIO())


def resume(folder: Path, cuda: torch.device) -> None:
    for precision in ("fp32", "bf16", "fp16"):
        cfg = TrainConfig.model_validate({**BASE, "precision": precision})
        with quiet():
            a, *_, ra = train(cfg, folder / f"{precision}-a", cuda, report=False)
            b, *_, rb = train(cfg, folder / f"{precision}-b", cuda, report=False)
            train(cfg.model_copy(update={"steps": 3}), folder / f"{precision}-r", cuda, report=False)
            r, *_, rr = train(cfg, folder / f"{precision}-r", cuda, report=False)
        straight, resumed = gap(a.state_dict(), b.state_dict()), gap(a.state_dict(), r.state_dict())
        average = gap(ra.ema, rr.ema)
        check(f"resume on the card, {precision}", resumed <= straight and average <= gap(ra.ema, rb.ema),
              f"resumed vs straight max |dw| {resumed:.3g} (average {average:.3g}); two straight runs {straight:.3g}")


def across_devices(folder: Path, cuda: torch.device) -> None:
    cfg = TrainConfig.model_validate(BASE)
    for first, then in ((torch.device("cpu"), cuda), (cuda, torch.device("cpu"))):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            train(cfg.model_copy(update={"steps": 3}), folder / f"{first.type}-{then.type}", first, report=False)
            unet, *_, result = train(cfg, folder / f"{first.type}-{then.type}", then, report=False)
        said = "differ from an unbroken run's" in out.getvalue()
        finite = all(torch.isfinite(v).all() for v in unet.state_dict().values())
        check(f"a state from {first.type} resumes on {then.type}", said and finite and result.steps_run == 3,
              f"steps run {result.steps_run}, re-seeded and said so: {said}")


def job_and_sampling(folder: Path, cuda: torch.device) -> Path:
    cfg = TrainConfig.model_validate({**BASE, "conditioning": "class", "steps": 20})
    with quiet():
        result = train_main(cfg, folder / "job")
    checkpoint = folder / "job" / "checkpoint.pt"
    check("train job on the card", result is not None and checkpoint.exists(),
          f"{result.seconds_per_step * 1000:.1f} ms/step" if result else "no result")
    digests = []
    for name in ("s1", "s2"):
        with quiet():
            sample_main(SampleConfig(checkpoint_sha256="0" * 64, count=6, inference_steps=10, sampler="ddim",
                                     classes=["texture"]), checkpoint, folder / name)
        digests.append(hashlib.sha256((folder / name / "samples.png").read_bytes()).hexdigest())
    check("sampling twice gives the same grid", digests[0] == digests[1], digests[0][:16])
    unet, scheduler, meta = load_checkpoint(checkpoint, cuda)
    texture = meta["classes"].index("texture")
    alone = draw_samples(unet, scheduler, [7], 10, cuda, sampler="ddim", labels=[texture])
    batch = draw_samples(unet, scheduler, [3, 7, 11, 12], 10, cuda, sampler="ddim", labels=[0, texture, 1, 2])
    difference = float((alone[0] - batch[1]).abs().max())
    check("a seed and class give the same image alone and in a batch", difference < 2 / 255,
          f"max difference {difference:.2g} of the range [-1, 1] (a batch may pick other kernels)")
    return checkpoint


def replication_twice(folder: Path, checkpoint: Path) -> None:
    inputs = local_inputs(bundled.NAME, folder / "bundled")
    digests = []
    for name in ("r1", "r2"):
        with quiet():
            replication_main(ReplicationConfig(model="job@1", samples=32, inference_steps=10,
                                               dataset=bundled.NAME), checkpoint, inputs, folder / name)
        digests.append(hashlib.sha256((folder / name / "results.json").read_bytes()).hexdigest())
    check("replication twice with one seed gives one result digest", digests[0] == digests[1],
          f"{digests[0][:16]} / {digests[1][:16]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="keep the runs' files here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA card here: this script checks the GPU path")
    cuda = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(cuda)}, torch {torch.__version__}, bf16 "
          f"{torch.cuda.is_bf16_supported()}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.out or Path(scratch)
        resume(folder, cuda)
        across_devices(folder, cuda)
        checkpoint = job_and_sampling(folder, cuda)
        replication_twice(folder, checkpoint)
    print(f"{len(failures)} failed" + (f": {', '.join(failures)}" if failures else ""))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
