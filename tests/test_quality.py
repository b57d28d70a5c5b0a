"""The quality analysis: FID, KID, precision and recall, checked on sets whose answers are known, then the job on a
tiny model (deterministic, labelled as not comparable with Inception figures unless a local network is used)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.analysis import quality
from jobs.config import QualityConfig, TrainConfig
from jobs.dataset import local_inputs
from jobs.train import main as train_main
from tests.factories import TINY_TRAIN


def test_the_frechet_distance_has_its_closed_form() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (500, 6))
    assert quality.frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    shift = np.array([3.0, 0, 0, 0, 0, 4.0])
    assert quality.frechet_distance(a, a + shift) == pytest.approx(25.0, rel=1e-9)  # |mu|^2, covariances alike
    centred = a - a.mean(0)
    # b = 2a: S_b = 4 S_a, so (S_a S_b)^1/2 = 2 S_a and the trace term is tr(S_a + 4 S_a - 4 S_a) = tr(S_a).
    assert quality.frechet_distance(centred, 2 * centred) == pytest.approx(np.trace(np.cov(centred.T)), rel=1e-9)


def test_kid_is_near_zero_for_one_distribution_and_grows_apart() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, (400, 8)), rng.normal(0, 1, (400, 8))
    same, spread = quality.kernel_inception_distance(a, b, 20, np.random.default_rng(0), size=200)
    apart, _ = quality.kernel_inception_distance(a, b + 1.5, 20, np.random.default_rng(0), size=200)
    assert abs(same) < 3 * spread + 1e-3 and apart > 10 * max(abs(same), spread)


def test_precision_and_recall_tell_a_collapsed_model_from_a_good_one() -> None:
    rng = np.random.default_rng(2)
    real = np.concatenate([rng.normal(0, 0.3, (200, 4)), rng.normal(5, 0.3, (200, 4))])  # two modes
    collapsed = rng.normal(0, 0.3, (200, 4))  # samples of one mode only
    found = quality.precision_recall(real, collapsed, 3)
    assert found["precision"] > 0.9 and 0.4 < found["recall"] < 0.6
    good = np.concatenate([rng.normal(0, 0.3, (100, 4)), rng.normal(5, 0.3, (100, 4))])
    found = quality.precision_recall(real, good, 3)
    assert found["precision"] > 0.9 and found["recall"] > 0.9
    off = quality.precision_recall(real, rng.normal(20, 0.3, (200, 4)), 3)
    assert off["precision"] == 0 and off["recall"] == 0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    train_main(TrainConfig.model_validate({**TINY_TRAIN, "resolution": 16}), out)
    return out / "checkpoint.pt"


def test_the_quality_job_is_deterministic_and_says_what_its_figures_compare_with(tiny_model: Path,
                                                                                 tmp_path: Path) -> None:
    inputs = local_inputs("skimage-samples", tmp_path / "package")
    cfg = QualityConfig(model="tiny@1", dataset="skimage-samples@1", samples=16, inference_steps=3, kid_subsets=5)
    first = quality.main(cfg, tiny_model, inputs, tmp_path / "a")
    quality.main(cfg, tiny_model, inputs, tmp_path / "b")
    quality.main(cfg.model_copy(update={"seed": 1}), tiny_model, inputs, tmp_path / "c")
    digest = {n: hashlib.sha256((tmp_path / n / "results.json").read_bytes()).hexdigest() for n in "abc"}
    assert digest["a"] == digest["b"] != digest["c"]
    model, matched, floor = (first[k] for k in ("model_vs_training", "model_vs_half", "training_half_vs_half"))
    assert model["images"] == [12, 16] and matched["images"] == floor["images"] == [6, 6]  # equal sizes
    assert 0 <= model["precision"] <= 1 and 0 <= model["recall"] <= 1 and model["fid"] > 0
    assert first["features"]["comparable_with_published"] is False and first["reliable"] is False  # 12 < 212
    page = (tmp_path / "a" / "report.html").read_text()
    assert "not comparable with published FID" in page and "<script" not in page and page.count("<img") == 16 + 12
    assert "Fewer images than the 212 feature dimensions" in page


class TinyNetwork(torch.nn.Module):
    """Stands in for a local Inception network: uint8 N x 3 x H x W in, features out."""

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = images.float() / 255
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), x[:, :, ::4, ::4].flatten(1)], dim=1)


@pytest.mark.filterwarnings("ignore:`torch.jit")  # TorchScript is how such networks are shipped
def test_a_local_network_gives_the_features_and_its_file_is_named(tiny_model: Path, tmp_path: Path,
                                                                  monkeypatch) -> None:
    inputs = local_inputs("skimage-samples", tmp_path / "package")
    cfg = QualityConfig(model="tiny@1", samples=8, inference_steps=2, kid_subsets=2, features="inception")
    with pytest.raises(ValueError, match="no Inception weights file.*OBSERVATORY_INCEPTION_WEIGHTS"):
        quality.main(cfg, tiny_model, inputs, tmp_path / "none")
    weights = tmp_path / "inception.pt"
    torch.jit.script(TinyNetwork()).save(str(weights))
    monkeypatch.setenv(quality.WEIGHTS_ENV, str(weights))
    results = quality.main(cfg, tiny_model, inputs, tmp_path / "net")
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert results["features"]["name"] == "inception" and results["features"]["weights_sha256"] == sha
    assert results["features"]["dimensions"] == 3 + 3 + 3 * 16  # the network's own features, 16x16 images
    assert sha in (tmp_path / "net" / "report.html").read_text()
