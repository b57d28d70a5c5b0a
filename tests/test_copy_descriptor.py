"""The learned copy descriptor: the edits it is trained against, the muAP it is measured by, the `descriptor` job
(trained here on natural pictures cut from the test photographs), and the copy tests that use it: a mirrored copy of
a training picture, which no pixel distance sees, is flagged by the learned descriptor alone."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jobs.analysis import augment, copy_eval, learned, planted
from jobs.analysis.replication import analyse
from jobs.config import DescriptorConfig, DuplicationConfig, ReplicationConfig, TrainConfig
from jobs.descriptor import main as descriptor_main
from jobs.package import INPUT_PREFIX
from jobs.train import main as train_main

PHOTOS = Path(__file__).resolve().parent / "data" / "photos"


def _inputs(package: Path) -> dict[str, Path]:
    return {f"{INPUT_PREFIX}{n}": package / n for n in ("manifest.jsonl", "shard-00000.tar")}


def test_the_copy_edits_are_seeded_keep_the_size_and_change_the_picture() -> None:
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    once = augment.copy_edits(images, torch.Generator().manual_seed(1))
    again = augment.copy_edits(images, torch.Generator().manual_seed(1))
    other = augment.copy_edits(images, torch.Generator().manual_seed(2))
    assert once.shape == images.shape and torch.equal(once, again) and not torch.equal(once, other)
    assert float(once.min()) >= 0 and float(once.max()) <= 1
    assert all(float((once[i] - images[i]).abs().mean()) > 0.01 for i in range(6))
    mirrored = augment.crop_shift_flip(images[:1], torch.Generator().manual_seed(0), flip=1.0)
    assert mirrored.shape == (1, 3, 16, 16)


def test_micro_average_precision_ranks_all_queries_together() -> None:
    truth = np.array([0, 1, -1])  # two copies of references 0 and 1, one distractor
    perfect = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.3]])
    assert copy_eval.micro_average_precision(perfect, truth)[0] == pytest.approx(1.0)
    # The distractor's best match outscores the second true copy: the ranking reads right, wrong, right.
    mixed = np.array([[0.9, 0.1], [0.2, 0.7], [0.8, 0.3]])
    muap, threshold, recall = copy_eval.micro_average_precision(mixed, truth, per_query=1)
    assert muap == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert threshold == pytest.approx(0.9) and recall == pytest.approx(0.5)  # 90% precise down to the first alone
    # Query by query each true copy ranks first; micro-averaged, a confident false match still costs.
    assert copy_eval.micro_average_precision(np.array([[0.1, 0.2], [0.1, 0.05], [0.9, 0.1]]), truth,
                                             per_query=1)[1] is None


@pytest.fixture(scope="module")
def natural_set(tmp_path_factory) -> Path:
    """160 natural pictures cut from the test photographs, as a dataset package."""
    return planted.package(tmp_path_factory.mktemp("natural") / "package", distinct=160, planted=0, copies=1,
                           photos=PHOTOS)


@pytest.fixture(scope="module")
def descriptor(natural_set: Path, tmp_path_factory) -> tuple[Path, dict]:
    """A descriptor trained by the job on the natural set (a minute or so on two cores)."""
    digest = json.loads((natural_set / "dataset.json").read_text())["digest"]
    out = tmp_path_factory.mktemp("descriptor")
    metrics = descriptor_main(DescriptorConfig(dataset="planted-copies", dataset_digest=digest, steps=120,
                                               batch_size=64), _inputs(natural_set), out)
    return out / "descriptor.pt", metrics


@pytest.mark.slow
def test_the_descriptor_job_learns_copies_and_measures_itself_on_images_it_held_out(natural_set: Path,
                                                                                  descriptor) -> None:
    path, metrics = descriptor
    declared = json.loads((path.parent / "outputs.json").read_text())
    assert {o["name"] for o in declared["outputs"]} == {"descriptor.pt", "metrics.json", "attribution.json"}
    model, meta = learned.load(path)
    learned_eval, structure_eval = metrics["evaluation"]["learned"], metrics["evaluation"]["structure"]
    assert learned_eval["queries"] == 32 and learned_eval["references"] == 16 == structure_eval["references"]
    print(f"held-out copy detection: learned muAP {learned_eval['muap']:.3f}, structure {structure_eval['muap']:.3f}")
    assert learned_eval["muap"] > structure_eval["muap"]
    assert meta["threshold"] == metrics["threshold"] and 0 < meta["threshold"] <= 1
    assert meta["dataset_digest"] == json.loads((natural_set / "dataset.json").read_text())["digest"]
    attribution = json.loads((path.parent / "attribution.json").read_text())
    assert len(attribution["images"]) == meta["images"] == 128
    assert all(image["author"] and image["license"] for image in attribution["images"])
    # An edited copy stays nearer its original than any other picture does.
    records = [json.loads(line) for line in (natural_set / "manifest.jsonl").read_text().splitlines()][:40]
    with tarfile.open(natural_set / "shard-00000.tar") as tar:
        pictures = np.stack([np.asarray(Image.open(io.BytesIO(tar.extractfile(r["member"]).read())).convert("RGB"),
                                        dtype=np.float32) / 255 for r in records])
    mirrored = np.ascontiguousarray(pictures[:, :, ::-1])
    similarity = learned.embed(model, mirrored) @ learned.embed(model, pictures).T
    assert (similarity.argmax(axis=1) == np.arange(len(pictures))).mean() >= 0.8
    with pytest.raises(ValueError, match="not a copy descriptor"):
        learned.load(_not_a_descriptor(path.parent))


def _not_a_descriptor(folder: Path) -> Path:
    path = folder / "other.pt"
    torch.save({"format": "something else"}, path)
    return path


def _grid(images: np.ndarray, path: Path) -> None:
    """Pictures side by side, as a sample run's samples.png holds them."""
    side = images.shape[1]
    sheet = Image.new("RGB", (side * len(images), side))
    for n, image in enumerate(images):
        sheet.paste(Image.fromarray((image * 255).round().astype(np.uint8)), (n * side, 0))
    sheet.save(path)


@pytest.mark.slow
def test_a_mirrored_copy_is_flagged_by_the_learned_descriptor_and_missed_by_the_distance(
        natural_set: Path, descriptor, tmp_path: Path) -> None:
    path, _ = descriptor
    digest = json.loads((natural_set / "dataset.json").read_text())["digest"]
    train_main(TrainConfig(dataset="planted-copies", dataset_digest=digest, steps=1, batch_size=4,
                           block_out_channels=[8, 16], sample_count=1, sample_inference_steps=1),
               tmp_path / "model", _inputs(natural_set))
    records = [json.loads(line) for line in (natural_set / "manifest.jsonl").read_text().splitlines()]
    with tarfile.open(natural_set / "shard-00000.tar") as tar:
        first = np.asarray(Image.open(io.BytesIO(tar.extractfile(records[0]["member"]).read())).convert("RGB"),
                           dtype=np.float32) / 255
    noise = np.random.default_rng(0).random((3, 16, 16, 3)).astype(np.float32)
    _grid(np.concatenate([first[None, :, ::-1], noise]), tmp_path / "samples.png")
    (tmp_path / "metrics.json").write_text(json.dumps({"images": [{"seed": s} for s in range(4)]}))
    inputs = {**_inputs(natural_set), "samples_sha256": tmp_path / "samples.png",
              "samples_metrics_sha256": tmp_path / "metrics.json"}
    cfg = ReplicationConfig(model="m@1", dataset_digest=digest, samples_from=None)
    plain, _ = analyse(cfg, tmp_path / "model" / "checkpoint.pt", inputs)
    assert not plain["samples"][0]["copy"] and plain["descriptor"] == {"name": "structure", "decides": False}
    learned_cfg = cfg.model_copy(update={"descriptor": "copy@1"})
    with pytest.raises(ValueError, match="its file was not sent"):
        analyse(learned_cfg, tmp_path / "model" / "checkpoint.pt", inputs)
    found, _ = analyse(learned_cfg, tmp_path / "model" / "checkpoint.pt", {**inputs, "descriptor_sha256": path})
    mirrored = found["samples"][0]
    t = found["thresholds"]
    print(f"mirrored copy: ratio {mirrored['ratio']:.3f} (threshold {t['ratio']:.3f}), learned similarity "
          f"{mirrored['similarity'][0]['similarity']:.3f} (threshold {t['descriptor']:.3f})")
    assert mirrored["copy"] and mirrored["by"] == ["descriptor"]
    assert mirrored["copy_of"]["title"] == records[0]["title"]
    assert [s["copy"] for s in found["samples"][1:]] == [False] * 3
    assert found["summary"]["copies_by_descriptor_alone"] == 1 and found["descriptor"]["decides"]
    assert found["thresholds"]["descriptor"] >= found["descriptor"]["operating_threshold"]


@pytest.mark.slow
def test_the_duplication_audit_lists_mirrored_copies_the_learned_descriptor_finds(natural_set: Path, descriptor,
                                                                                 tmp_path: Path) -> None:
    from jobs.analysis.duplication import audit

    path, _ = descriptor
    records = [json.loads(line) for line in (natural_set / "manifest.jsonl").read_text().splitlines()]
    with tarfile.open(natural_set / "shard-00000.tar") as tar:
        first = Image.open(io.BytesIO(tar.extractfile(records[0]["member"]).read())).convert("RGB")
    mirrored = planted.package(tmp_path / "package", distinct=160, planted=0, copies=1, photos=PHOTOS)
    data = io.BytesIO()
    first.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(data, format="PNG")
    _add_image(mirrored, data.getvalue(), "mirrored first picture")
    digest = json.loads((mirrored / "dataset.json").read_text())["digest"]
    cfg = DuplicationConfig(dataset="planted-copies", dataset_digest=digest, resolution=16)
    plain, _ = audit(cfg, _inputs(mirrored))
    assert plain["summary"]["descriptor_pairs"] == 0 and plain["summary"]["near_duplicate_pairs"] == 0
    found, _ = audit(cfg.model_copy(update={"descriptor": "copy@1"}), {**_inputs(mirrored),
                                                                        "descriptor_sha256": path})
    pairs = {(p["a"]["title"], p["b"]["title"]) for p in found["descriptor_pairs"]}
    assert (records[0]["title"], "mirrored first picture") in pairs


def _add_image(package: Path, data: bytes, title: str) -> None:
    """One more image in a package (its manifest and shard rewritten, its digest recomputed)."""
    import hashlib

    from jobs.package import MANIFEST, write_manifest, write_tar

    records = [json.loads(line) for line in (package / MANIFEST).read_text().splitlines()]
    with tarfile.open(package / "shard-00000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    sha = hashlib.sha256(data).hexdigest()
    members[f"{sha}.png"] = data
    records.append({**records[0], "title": title, "image_sha256": sha, "member": f"{sha}.png"})
    write_tar(package / "shard-00000.tar", sorted(members.items()))
    described = json.loads((package / "dataset.json").read_text())
    described["digest"] = write_manifest(package / MANIFEST, records)
    (package / "dataset.json").write_text(json.dumps(described))
