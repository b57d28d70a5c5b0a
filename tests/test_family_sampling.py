"""Sampling a family: the router's weights mix the experts' noise predictions (all of them, or the top k), and the
same seeds give the same images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jobs import family
from jobs import router as routing
from jobs.config import RouterConfig, SampleConfig, TrainConfig
from jobs.model import build_noise_scheduler, build_unet, draw_samples, load_checkpoint, save_checkpoint
from jobs.sample import main as sample_main
from tests.factories import TINY_TRAIN

PLAN = TrainConfig.model_validate(TINY_TRAIN)


def _experts(folder: Path, count: int = 2) -> list[Path]:
    paths = []
    for index in range(count):
        torch.manual_seed(100 + index)
        unet = build_unet(PLAN)
        paths.append(folder / f"expert-{index}.pt")
        save_checkpoint(paths[-1], unet, build_noise_scheduler(PLAN), {"cluster": index})
    return paths


def _router(folder: Path, bias: list[float]) -> Path:
    """A router that ignores the image: its weights come from the head's bias alone."""
    cfg = RouterConfig(dataset="skimage-samples", partition="sha256:" + "0" * 64, resolution=PLAN.resolution,
                       num_train_timesteps=PLAN.num_train_timesteps, channels=8)
    router = routing.Router(len(bias), cfg.channels, cfg.num_train_timesteps)
    with torch.no_grad():
        router.head.weight.zero_()
        router.head.bias.copy_(torch.tensor(bias))
    routing.save(folder / "router.pt", router, cfg, len(bias), {})
    return folder / "router.pt"


def test_top_one_routing_to_one_expert_draws_that_experts_images(tmp_path: Path) -> None:
    experts = _experts(tmp_path)
    fam, scheduler, _ = family.load(experts, _router(tmp_path, [-9.0, 9.0]), torch.device("cpu"), top_k=1)
    alone, alone_scheduler, _ = load_checkpoint(experts[1], torch.device("cpu"))
    seeds = [3, 4, 5]
    assert torch.equal(draw_samples(fam, scheduler, seeds, 5, torch.device("cpu"), sampler="ddim"),
                       draw_samples(alone, alone_scheduler, seeds, 5, torch.device("cpu"), sampler="ddim"))
    assert fam.last_weights.tolist() == [[0.0, 1.0]] * 3


def test_the_full_mixture_is_the_weighted_sum_of_the_experts_predictions(tmp_path: Path) -> None:
    experts = _experts(tmp_path, 3)
    fam, _, meta = family.load(experts, _router(tmp_path, [0.0, 0.0, 0.0]), torch.device("cpu"))
    assert [m["cluster"] for m in meta["experts"]] == [0, 1, 2]
    images, step = torch.randn(2, 3, PLAN.resolution, PLAN.resolution), torch.tensor(7)
    mixed = fam(images, step).sample
    each = [load_checkpoint(path, torch.device("cpu"))[0](images, step).sample for path in experts]
    assert torch.allclose(mixed, sum(each) / 3, atol=1e-6)
    two = family.Family(fam.experts, fam.router, top_k=2)
    assert torch.allclose(two.weights(images, step).sum(dim=1), torch.ones(2))
    assert ((two.weights(images, step) > 0).sum(dim=1) == 2).all()


def test_the_sample_job_draws_a_family_the_same_for_the_same_seeds(tmp_path: Path) -> None:
    experts = _experts(tmp_path)
    inputs = {"expert_checkpoints:0": experts[0], "expert_checkpoints:1": experts[1],
              "router_sha256": _router(tmp_path, [0.5, -0.5])}
    plan = SampleConfig(model="family@1", expert_checkpoints=["a" * 64, "b" * 64], router_sha256="c" * 64,
                        seeds=[1, 2, 3], inference_steps=4, sampler="ddim")
    for out in ("one", "two"):
        sample_main(plan, None, tmp_path / out, inputs)
    assert (tmp_path / "one" / "samples.png").read_bytes() == (tmp_path / "two" / "samples.png").read_bytes()
    metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert metrics["family"] == {"experts": 2, "routing": "mixture", "top_k": None}
    top = plan.model_copy(update={"routing": "top_k", "top_k": 1})
    sample_main(top, None, tmp_path / "top", inputs)
    assert (tmp_path / "top" / "samples.png").read_bytes() != (tmp_path / "one" / "samples.png").read_bytes()
    missing = {k: v for k, v in inputs.items() if k != "router_sha256"}
    with pytest.raises(ValueError, match="router_sha256"):
        sample_main(plan, None, tmp_path / "missing", missing)


def test_a_family_minus_one_expert_is_the_others_routed_alone(tmp_path: Path) -> None:
    experts = _experts(tmp_path)
    fam, scheduler, _ = family.load(experts, _router(tmp_path, [0.3, -0.3]), torch.device("cpu"))
    alone, alone_scheduler, _ = load_checkpoint(experts[0], torch.device("cpu"))
    fam.leave_out = 1
    seeds = [7, 8]
    assert torch.equal(draw_samples(fam, scheduler, seeds, 4, torch.device("cpu"), sampler="ddim"),
                       draw_samples(alone, alone_scheduler, seeds, 4, torch.device("cpu"), sampler="ddim"))
    assert fam.last_weights.tolist() == [[1.0, 0.0]] * 2
    with pytest.raises(ValueError, match="no expert 2"):
        fam.leave_out = 2


def _bundled_partition(folder: Path) -> tuple[dict[str, Path], dict]:
    """The bundled set packaged as a job's inputs, and a partition of it into two clusters (alternate images)."""
    from jobs import dataset as datasets
    from jobs import partition
    from jobs.package import INPUT_PREFIX, MANIFEST, read_images

    inputs = datasets.local_inputs("skimage-samples", folder / "package")
    shards = {key.removeprefix(INPUT_PREFIX): path for key, path in inputs.items()}
    digest, records = read_images(shards[MANIFEST], shards, None)
    assignment = {record["image_sha256"]: n % 2 for n, (record, _) in enumerate(records)}
    cut = {"dataset_digest": digest, "k": 2, "seed": 0, "assignment": assignment,
           "digest": partition.digest_of(digest, 2, 0, assignment)}
    (folder / "partition.json").write_bytes(partition.encode(cut))
    return {**inputs, "partition_sha256": folder / "partition.json"}, cut


def test_the_copy_search_takes_a_family_whole_and_each_expert_against_its_own_cluster(tmp_path: Path) -> None:
    from jobs.analysis import replication
    from jobs.config import ReplicationConfig

    experts = _experts(tmp_path)
    data, cut = _bundled_partition(tmp_path)
    files = {"expert_checkpoints:0": experts[0], "expert_checkpoints:1": experts[1],
             "router_sha256": _router(tmp_path, [0.5, -0.5])}
    base = {"model": "fam@1", "samples": 3, "inference_steps": 2, "dataset": "skimage-samples@1",
            "dataset_digest": cut["dataset_digest"], "partition": cut["digest"], "partition_sha256": "d" * 64}
    whole = ReplicationConfig(**base, expert_checkpoints=["a" * 64, "b" * 64], router_sha256="c" * 64)
    found = replication.main(whole, files["router_sha256"], {**data, **files}, tmp_path / "whole")
    assert found["dataset"]["images"] == len(cut["assignment"]) and found["subject"] == "fam@1"
    one = ReplicationConfig(**base, expert=1)
    alone = replication.main(one, experts[1], data, tmp_path / "one")
    cluster = {sha for sha, c in cut["assignment"].items() if c == 1}
    assert alone["dataset"]["images"] == len(cluster) and alone["subject"] == "expert 1 of fam@1"
    neighbours = {n["image_sha256"] for s in alone["samples"] for n in s["tiled_l2"]}
    assert neighbours and neighbours <= cluster
    gone = sorted(cluster)[:2]
    withdrawn = replication.main(one.model_copy(update={"withdrawn_images": gone}), experts[1], data,
                                 tmp_path / "withdrawn")
    assert withdrawn["dataset"]["images"] == len(cluster) - 2
    shown = json.dumps({key: value for key, value in withdrawn.items() if key != "config"})
    assert not any(sha in shown for sha in gone)  # only the plan names them, by hash


def test_an_ablation_of_a_family_without_one_expert_needs_no_training(tmp_path: Path) -> None:
    from jobs.analysis import ablation
    from jobs.config import AblationConfig

    experts = _experts(tmp_path)
    data, cut = _bundled_partition(tmp_path)
    files = {"expert_checkpoints:0": experts[0], "expert_checkpoints:1": experts[1],
             "router_sha256": _router(tmp_path, [0.0, 0.0])}
    plan = AblationConfig(with_model="fam@1", without_expert=1, samples=4, inference_steps=2, bootstrap=100,
                          expert_checkpoints=["a" * 64, "b" * 64], router_sha256="c" * 64, partition=cut["digest"],
                          dataset="skimage-samples@1", dataset_digest=cut["dataset_digest"])
    results = ablation.main(plan, {"with": files["router_sha256"], "without": None}, {**data, **files},
                            tmp_path / "out")
    sizes = [sum(1 for c in cut["assignment"].values() if c == k) for k in (0, 1)]
    assert (results["dataset"]["left_out_images"], results["dataset"]["control_images"]) == (sizes[1], sizes[0])
    assert results["twin"] == "fam@1 without expert 1" and "cluster 1" in results["sentence"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "the other clusters (seen by both)" in page and "fam@1 without expert 1" in page
    assert results["scores"]["effect"]["low"] <= results["scores"]["effect"]["value"] <= \
        results["scores"]["effect"]["high"]
