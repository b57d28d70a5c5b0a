"""The real jobs on a tiny model: train, sample, exact resume, data provenance, plan validation."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from jobs import dataset as datasets
from jobs import progress
from jobs.config import JobPlanError, SampleConfig, TrainConfig, parse_job_plan
from jobs.data import bundled
from jobs.model import build_unet, load_checkpoint
from jobs.package import write_tar
from jobs.sample import main as sample_main
from jobs.train import main as train_main
from jobs.train import restore_state, train
from tests.factories import TINY_TRAIN


def test_train_then_sample_writes_every_output(tmp_path: Path, capsys) -> None:
    cfg = TrainConfig.model_validate(TINY_TRAIN)
    train_main(cfg, tmp_path / "train")
    outputs = {p.name for p in (tmp_path / "train").iterdir()}
    assert outputs == {"checkpoint.pt", "samples.png", "training_images.png", "metrics.json", "attribution.json",
                       "outputs.json"}
    declared = json.loads((tmp_path / "train" / "outputs.json").read_text())["outputs"]
    assert {d["name"] for d in declared} == outputs - {"outputs.json"}
    assert all(d["sha256"] == hashlib.sha256((tmp_path / "train" / d["name"]).read_bytes()).hexdigest()
               for d in declared)
    assert Image.open(tmp_path / "train" / "samples.png").size[0] > 0
    attribution = json.loads((tmp_path / "train" / "attribution.json").read_text())
    assert len(attribution["images"]) == 12 and all(e["license"] in {"PD", "CC0-1.0"} for e in attribution["images"])
    out = capsys.readouterr().out
    record = progress.latest(out)
    assert record and record["fraction"] == 1.0
    records = [found[1] for found in map(progress.parse, out.splitlines()) if found and found[0] == "progress"]
    training = [r for r in records if r.get("phase") == "train"]
    assert training and all(r["images_per_s"] > 0 and "gpu_memory_gb" not in r for r in training)  # a CPU: no GPU
    # Besides the records the portal draws, lines a person reads in the run's log: training, then the samples.
    plain = [line for line in out.splitlines() if not line.startswith("@@")]
    assert any(line.startswith("step 1 of 2, loss ") and "steps/s, about" in line for line in plain), plain
    assert any(re.fullmatch(r"drawing \d+ samples: denoising step (\d+) of \1", line) for line in plain), plain
    assert [r["phase"] for r in records][-2:] == ["sample", "writing outputs"]
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert metrics["images_per_s"] > 0 and metrics["steps"] == 2

    sample_main(SampleConfig(checkpoint_sha256="0" * 64, count=3, inference_steps=2),
                tmp_path / "train" / "checkpoint.pt", tmp_path / "sample")
    assert (tmp_path / "sample" / "samples.png").exists()


@pytest.mark.parametrize("accumulation", [1, 3])
def test_resume_is_exact_weights_and_average_alike(tmp_path: Path, accumulation: int) -> None:
    cfg = TrainConfig.model_validate({**TINY_TRAIN, "steps": 4, "checkpoint_every": 2, "ema_decay": 0.9,
                                      "gradient_accumulation": accumulation})
    straight, _, _, _, straight_result = train(cfg, tmp_path / "straight", report=False)
    half = cfg.model_copy(update={"steps": 2})
    train(half, tmp_path / "resumed", report=False)
    resumed, _, _, losses, result = train(cfg, tmp_path / "resumed", report=False)
    assert result.steps_run == 2 and len(losses) == 4
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert straight_result.ema.keys() == result.ema.keys()
    for key, value in straight_result.ema.items():
        assert torch.equal(value, result.ema[key]), key
    # The average is not the last weights: it lags behind them.
    assert not all(torch.equal(v, dict(straight.named_parameters())[k]) for k, v in straight_result.ema.items())


def test_the_checkpoint_keeps_the_average_and_samples_come_from_it(tmp_path: Path) -> None:
    averaged = TrainConfig.model_validate({**TINY_TRAIN, "steps": 3, "ema_decay": 0.5})
    train_main(averaged, tmp_path / "ema")
    unet, _, meta = load_checkpoint(tmp_path / "ema" / "checkpoint.pt", torch.device("cpu"))
    assert meta["weights"] == "average (EMA, decay 0.5)"
    last = TrainConfig.model_validate({**TINY_TRAIN, "steps": 3, "ema_decay": 0})
    raw, *_ = train(last, tmp_path / "raw", report=False)
    train_main(last, tmp_path / "plain")
    plain, _, plain_meta = load_checkpoint(tmp_path / "plain" / "checkpoint.pt", torch.device("cpu"))
    assert plain_meta["weights"] == "last step"
    assert all(torch.equal(v, raw.state_dict()[k]) for k, v in plain.state_dict().items())
    assert not all(torch.equal(v, plain.state_dict()[k]) for k, v in unet.state_dict().items())


def test_a_state_without_an_average_is_refused_by_a_run_with_one(tmp_path: Path) -> None:
    train(TrainConfig.model_validate({**TINY_TRAIN, "steps": 2, "ema_decay": 0}), tmp_path, report=False)
    with pytest.raises(ValueError, match="holds no weight average"):
        train(TrainConfig.model_validate({**TINY_TRAIN, "steps": 4, "ema_decay": 0.9}), tmp_path, report=False)


def test_ddim_sampling_is_deterministic_and_differs_from_ddpm(tmp_path: Path) -> None:
    train_main(TrainConfig.model_validate({**TINY_TRAIN, "steps": 2}), tmp_path / "train")
    checkpoint = tmp_path / "train" / "checkpoint.pt"
    for name, sampler in (("a", "ddim"), ("b", "ddim"), ("c", "ddpm")):
        sample_main(SampleConfig(checkpoint_sha256="0" * 64, count=2, inference_steps=4, sampler=sampler),
                    checkpoint, tmp_path / name)
    grid = {name: (tmp_path / name / "samples.png").read_bytes() for name in "abc"}
    assert grid["a"] == grid["b"] and grid["a"] != grid["c"]
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["sampler"] == "ddim"


def test_gradient_accumulation_counts_in_the_estimate() -> None:
    from jobs.config import estimated_seconds

    one = TrainConfig.model_validate({**TINY_TRAIN, "steps": 100, "sample_count": 1, "sample_inference_steps": 1})
    four = one.model_copy(update={"gradient_accumulation": 4})
    assert estimated_seconds(four) == pytest.approx(4 * estimated_seconds(one), rel=0.01)


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_a_resume_state_loads_into_a_model_on_another_device(tmp_path: Path) -> None:
    """A state written on one device resumes on any other. The model here lives on the `meta` device, standing in
    for a GPU on a machine without one: had the state been mapped onto the model's device (as a resume that crashed
    on every CUDA node did), the CPU generator would be handed a non-CPU tensor and refuse it."""
    cfg = TrainConfig.model_validate({**TINY_TRAIN, "steps": 3})
    train(cfg, tmp_path, report=False)
    unet = build_unet(cfg).to("meta")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate)
    generator = torch.Generator("cpu")
    step, losses = restore_state(tmp_path / "state.pt", unet, optimizer, generator)
    assert step == 3 and len(losses) == 3
    saved = torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)
    assert torch.equal(generator.get_state(), saved["generator"])
    assert all(p.device.type == "meta" for p in unet.parameters())
    with pytest.raises(TypeError, match="ByteTensor"):  # what mapping onto the model's device does
        torch.Generator("cpu").set_state(saved["generator"].to("meta"))


def test_a_state_from_a_generator_of_the_other_kind_reseeds_and_says_so(tmp_path: Path, capsys) -> None:
    """A GPU run's generator state cannot continue on a CPU (nor the reverse): the generator is seeded from the seed
    and the step, so the run goes on, and the log says its batches now differ from an unbroken run's."""
    cfg = TrainConfig.model_validate({**TINY_TRAIN, "steps": 2, "seed": 5})
    train(cfg, tmp_path, report=False)
    state = torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)
    assert state["generator_device"] == "cpu"
    state["generator_device"] = "cuda"
    state["generator"] = torch.zeros(16, dtype=torch.uint8)  # a Philox state, which a CPU generator refuses
    torch.save(state, tmp_path / "state.pt")
    unet = build_unet(cfg)
    generator = torch.Generator("cpu")
    step, _ = restore_state(tmp_path / "state.pt", unet, torch.optim.AdamW(unet.parameters()), generator, seed=5)
    assert step == 2 and "batches and noise from step 2 on differ" in capsys.readouterr().out
    assert torch.equal(generator.get_state(), torch.Generator("cpu").manual_seed(7).get_state())


def test_step_losses_are_read_back_in_order_and_reported_with_their_step() -> None:
    from jobs.train import Losses

    losses = Losses([0.9, 0.8])  # as restored from a state at step 2
    assert losses.latest() == {"loss": 0.8, "loss_step": 2}
    for value in (0.7, 0.6, 0.5):
        losses.add(torch.tensor(value))
    assert losses.latest() == {"loss": 0.5, "loss_step": 5}  # on a CPU the copy is done at once
    losses.add(torch.tensor(0.4))
    assert losses.settle() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    assert Losses([]).latest() == {}


def test_mixed_precision_is_for_gpus(monkeypatch) -> None:
    from jobs.train import autocast_dtype

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    for precision in ("auto", "bf16", "fp16", "fp32"):
        assert autocast_dtype(TrainConfig(precision=precision), cpu) is None  # CPUs train in fp32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert autocast_dtype(TrainConfig(), gpu) == torch.bfloat16
    assert autocast_dtype(TrainConfig(precision="fp16"), gpu) == torch.float16
    assert autocast_dtype(TrainConfig(precision="fp32"), gpu) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # a 1080 Ti
    assert autocast_dtype(TrainConfig(), gpu) == torch.float16


def test_a_class_conditional_resume_is_exact(tmp_path: Path) -> None:
    cfg = TrainConfig.model_validate({**TINY_TRAIN, "steps": 4, "checkpoint_every": 2, "ema_decay": 0.9,
                                      "conditioning": "class"})
    straight, _, data, _, straight_result = train(cfg, tmp_path / "straight", report=False)
    assert data.classes == ["drawing", "photograph", "scientific", "texture"] and data.labels.shape == (12,)
    train(cfg.model_copy(update={"steps": 2}), tmp_path / "resumed", report=False)
    resumed, _, _, _, result = train(cfg, tmp_path / "resumed", report=False)
    assert "class_embedding.weight" in straight.state_dict()
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    for key, value in straight_result.ema.items():
        assert torch.equal(value, result.ema[key]), key


def test_a_job_asked_to_stop_saves_its_state_and_announces_it(tmp_path: Path, capsys) -> None:
    from jobs import train as train_module

    cfg = TrainConfig.model_validate({**TINY_TRAIN, "steps": 50, "checkpoint_every": 1000})
    train_module._stop_requested["signal"] = True
    try:
        assert train_main(cfg, tmp_path) is None
    finally:
        train_module._stop_requested["signal"] = False
    out = capsys.readouterr().out
    assert "stopped on request at step 0" in out and '@@checkpoint {"step": 0, "sha256": ' in out
    assert (tmp_path / "state.pt").exists() and not (tmp_path / "checkpoint.pt").exists()


def test_a_rerun_of_a_finished_job_trains_nothing(tmp_path: Path, capsys) -> None:
    cfg = TrainConfig.model_validate(TINY_TRAIN)
    train_main(cfg, tmp_path)
    before = (tmp_path / "checkpoint.pt").stat().st_mtime_ns
    capsys.readouterr()
    train_main(cfg, tmp_path)
    assert "nothing to do" in capsys.readouterr().out
    assert (tmp_path / "checkpoint.pt").stat().st_mtime_ns == before
    train_main(cfg.model_copy(update={"seed": 1}), tmp_path)  # another plan in the same folder does train
    assert (tmp_path / "checkpoint.pt").stat().st_mtime_ns != before


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    cfg = TrainConfig.model_validate(TINY_TRAIN)
    train_main(cfg, tmp_path)
    unet, noise_scheduler, meta = load_checkpoint(tmp_path / "checkpoint.pt", torch.device("cpu"))
    assert meta["dataset"] == "skimage-samples" and meta["dataset_digest"].startswith("sha256:")
    assert meta["classes"] == []  # unconditional
    assert noise_scheduler.config.num_train_timesteps == 20 and unet.config.sample_size == 8


def test_leaving_out_an_author() -> None:
    full = datasets.load({}, None, 8, name="skimage-samples")
    without = datasets.load({}, None, 8, name="skimage-samples", exclude_authors=["nasa"])
    assert full.images.shape[0] == 12 and without.images.shape[0] == 10
    assert "NASA" not in {e["author"] for e in without.entries}
    assert without.digest == full.digest  # the same dataset version, fewer of its images
    with pytest.raises(ValueError, match="no images left"):
        datasets.load({}, None, 8, name="skimage-samples", exclude_authors=sorted({e["author"] for e in full.entries}))


def _package(tmp_path: Path) -> tuple[dict[str, Path], str]:
    folder = bundled.package(tmp_path / "package")
    described = json.loads((folder / "dataset.json").read_text())
    return {f"dataset:{f.name}": f for f in folder.iterdir() if f.suffix in (".tar", ".jsonl")}, described["digest"]


def test_a_package_is_checked_against_its_digest_and_checksums(tmp_path: Path) -> None:
    inputs, digest = _package(tmp_path)
    assert datasets.load(inputs, digest, 8).digest == digest
    with pytest.raises(ValueError, match="does not have the digest"):
        datasets.load(inputs, "sha256:" + "0" * 64, 8)
    shard = inputs["dataset:shard-00000.tar"]
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    swapped = [(members[0][0], members[1][1]), *members[1:]]  # one image's bytes replaced by another's
    write_tar(shard, swapped)
    with pytest.raises(ValueError, match=f"{members[0][0]} in shard-00000.tar does not match"):
        datasets.load(inputs, digest, 8)
    write_tar(shard, members[1:])
    with pytest.raises(ValueError, match=f"{members[0][0]} is missing"):
        datasets.load(inputs, digest, 8)
    del inputs["dataset:shard-00000.tar"]
    with pytest.raises(ValueError, match="shard-00000.tar was not sent"):
        datasets.load(inputs, digest, 8)


def test_the_bundled_package_is_the_same_bytes_every_time(tmp_path: Path) -> None:
    first, second = bundled.package(tmp_path / "a"), bundled.package(tmp_path / "b")
    for name in ("manifest.jsonl", "shard-00000.tar", "dataset.json", "attribution.txt"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    described = json.loads((first / "dataset.json").read_text())
    assert described["origin"] == "scikit-image sample images" and described["images"] == 12
    assert described["classes"] == ["drawing", "photograph", "scientific", "texture"]
    assert "not from Wikimedia Commons" in (first / "attribution.txt").read_text()


@pytest.mark.parametrize(("plan", "fragment"), [
    ({"kind": "train", "batch_size": 0}, "job_plan.train.batch_size"),
    ({"kind": "train", "block_out_channels": [12, 16]}, "multiple of 8"),
    ({"kind": "train", "surprise": 1}, "surprise"),
    ({"kind": "sample", "checkpoint_sha256": "xyz"}, "checkpoint_sha256"),
    ({}, "job_plan"),
])
def test_plan_validation_names_the_problem(plan: dict, fragment: str) -> None:
    with pytest.raises(JobPlanError, match=fragment):
        parse_job_plan(plan)
