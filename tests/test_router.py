"""The router of a family: p(cluster | x_t, t) learnt from noised images, measured on held-out images per tenth of
the noise schedule; and its plan pinned to a recorded partition of its dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jobs import clusters, partition
from jobs import router as routing
from jobs.config import RouterConfig
from tests.looks import looks, package


def test_the_router_tells_the_clusters_apart_at_low_noise_and_not_at_high(tmp_path: Path) -> None:
    records, pngs, _ = looks(20, seed=3)  # 60 images, 12 held out
    digest, inputs = package(tmp_path / "data", records, pngs)
    cut = clusters.make(digest, records, clusters.descriptors(pngs), 3, seed=0)
    (tmp_path / "partition.json").write_bytes(partition.encode(cut))
    cfg = RouterConfig(dataset="looks", dataset_digest=digest, partition=cut["digest"], resolution=16,
                       num_train_timesteps=1000, steps=300, batch_size=32, channels=16, seed=1)
    metrics = routing.main(cfg, tmp_path / "out", {**inputs, "partition_sha256": tmp_path / "partition.json"})
    accuracy, chance = metrics["accuracy_by_noise_decile"], metrics["chance"]
    print(f"router held-out accuracy by noise decile {accuracy}, chance {chance}")
    assert metrics["held_out_images"] == 12 and chance >= 1 / 3
    assert accuracy[0] >= chance + 0.3  # the least noise: the image still shows its cluster
    assert accuracy[-1] <= chance + 0.15  # the most: hardly anything of the image is left
    written = json.loads((tmp_path / "out" / "outputs.json").read_text())["outputs"]
    assert {o["name"] for o in written} == {"router.pt", "metrics.json", "accuracy.png"}
    loaded, payload = routing.load(tmp_path / "out" / "router.pt", torch.device("cpu"))
    assert payload["partition"] == cut["digest"] and payload["clusters"] == 3
    weights = routing.weights(loaded, torch.zeros(4, 3, 16, 16), torch.tensor([0, 10, 500, 999]))
    assert weights.shape == (4, 3) and torch.allclose(weights.sum(dim=1), torch.ones(4))
    # The same plan again gives the same router.
    again = routing.main(cfg, tmp_path / "again", {**inputs, "partition_sha256": tmp_path / "partition.json"})
    assert again["accuracy_by_noise_decile"] == accuracy


def test_the_router_refuses_a_partition_that_is_not_its_plans(tmp_path: Path) -> None:
    records, pngs, _ = looks(3)
    digest, inputs = package(tmp_path / "data", records, pngs)
    cut = clusters.make(digest, records, clusters.descriptors(pngs), 3, seed=0)
    (tmp_path / "partition.json").write_bytes(partition.encode(cut))
    cfg = RouterConfig(dataset="looks", dataset_digest=digest, partition="sha256:" + "8" * 64, steps=1)
    with pytest.raises(ValueError, match="not the plan's"):
        routing.main(cfg, tmp_path / "out", {**inputs, "partition_sha256": tmp_path / "partition.json"})
    with pytest.raises(ValueError, match="was not sent"):
        routing.main(cfg, tmp_path / "out", inputs)
