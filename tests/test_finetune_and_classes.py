"""Plans name registered things and are pinned when accepted (dataset version and digest, the base model's
checkpoint); fine-tuning starts from a registered model version; a class-conditional model draws by class and
seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from sqlmodel import Session, select

from jobs.config import SampleConfig, TrainConfig
from jobs.model import build_unet, load_checkpoint
from jobs.sample import main as sample_main
from jobs.train import load_base
from jobs.train import main as train_main
from service.models import DatasetVersion, Role, Run, RunState
from tests.factories import (
    TINY_TRAIN,
    archive_outputs,
    auth_headers,
    award,
    create_call,
    create_proposal,
    create_user,
)


def _bundled(session: Session) -> DatasetVersion:
    return session.exec(select(DatasetVersion).where(DatasetVersion.name == "skimage-samples")).one()


def _registered_model(client: TestClient, session: Session, settings, tmp_path: Path, **plan) -> tuple[str, Path]:
    """Train a tiny model for real, archive it as a succeeded run's outputs and register it as tiny@N."""
    admin = create_user(session, Role.admin)
    _, run = award(session, admin, create_proposal(session, create_user(session), create_call(session, admin),
                                                   job_plan={**TINY_TRAIN, **plan}))
    run = session.get(Run, run.id)
    out = tmp_path / f"run-{run.id}"
    train_main(TrainConfig.model_validate(run.job_plan), out)
    archive_outputs(session, settings, run, {name: (out / name).read_bytes() for name in
                                             ("checkpoint.pt", "samples.png", "training_images.png", "metrics.json",
                                              "attribution.json")})
    run.state = RunState.succeeded
    session.add(run)
    session.commit()
    made = client.post("/api/models", headers=auth_headers(session, admin), json={"run_id": run.id, "name": "tiny"})
    assert made.status_code == 201, made.text
    return made.json()["ref"], out / "checkpoint.pt"


def test_a_plan_is_pinned_to_the_dataset_version_it_names(lite_client: TestClient, lite_session: Session) -> None:
    researcher = create_user(lite_session)
    call = create_call(lite_session, create_user(lite_session, Role.admin))
    headers = auth_headers(lite_session, researcher)
    body = {"title": "T", "abstract": "A", "justification": "J", "requested_gpu_hours": 1.0, "submit": False}
    made = lite_client.post(f"/api/calls/{call.id}/proposals", headers=headers,
                            json={**body, "job_plan": {**TINY_TRAIN, "dataset": "skimage-samples",
                                                       "dataset_digest": "sha256:" + "0" * 64}})
    assert made.status_code == 422 and "skimage-samples is sha256:" in made.json()["detail"]
    made = lite_client.post(f"/api/calls/{call.id}/proposals", headers=headers,
                            json={**body, "job_plan": {**TINY_TRAIN, "dataset": "skimage-samples"}})
    assert made.status_code == 201, made.text
    plan = made.json()["job_plan"]
    bundled = _bundled(lite_session)
    assert plan["dataset"] == "skimage-samples@1" and plan["dataset_digest"] == bundled.digest
    assert bundled.origin == "scikit-image sample images" and len(bundled.authors) == 10
    for plan, message in [
        ({"dataset": "commons-trees@3"}, "no dataset version 'commons-trees@3'"),
        ({"exclude_authors": ["Nobody"]}, "no image in skimage-samples@1 is by 'Nobody'"),
        ({"exclude_authors": bundled.authors}, "leaves no image"),
        ({"base_model": "tiny@1"}, "no model version 'tiny@1'"),
        ({"conditioning": "both"}, "conditioning"),
    ]:
        response = lite_client.post(f"/api/calls/{call.id}/proposals", headers=headers,
                                    json={**body, "job_plan": {**TINY_TRAIN, **plan}})
        assert response.status_code == 422 and message in response.json()["detail"], (plan, response.text)


def test_fine_tuning_starts_from_the_registered_version(lite_client: TestClient, lite_session: Session,
                                                       lite_settings, tmp_path: Path) -> None:
    ref, checkpoint = _registered_model(lite_client, lite_session, lite_settings, tmp_path)
    researcher = create_user(lite_session)
    call = create_call(lite_session, create_user(lite_session, Role.admin))
    headers = auth_headers(lite_session, researcher)
    body = {"title": "T", "abstract": "A", "justification": "J", "requested_gpu_hours": 1.0, "submit": False}
    wrong = lite_client.post(f"/api/calls/{call.id}/proposals", headers=headers,
                             json={**body, "job_plan": {**TINY_TRAIN, "base_model": ref, "resolution": 16}})
    assert wrong.status_code == 422 and "keeps its base's architecture; change resolution 16" in \
        wrong.json()["detail"]
    made = lite_client.post(f"/api/calls/{call.id}/proposals", headers=headers,
                            json={**body, "job_plan": {**TINY_TRAIN, "base_model": ref}})
    assert made.status_code == 201, made.text
    plan = made.json()["job_plan"]
    base_sha = lite_client.get(f"/api/models/{ref.replace('@', '/')}").json()["checkpoint_sha256"]
    assert plan["base_checkpoint_sha256"] == base_sha

    # A sample plan names the version too; the proposal form offers the versions for both.
    sample = lite_client.post(f"/api/calls/{call.id}/proposals", headers=headers, json={
        **body, "job_plan": {"kind": "sample", "model": ref, "seeds": [1, 2, 3]}})
    assert sample.status_code == 201 and sample.json()["job_plan"]["checkpoint_sha256"] == base_sha
    assert sample.json()["job_plan"]["count"] == 3
    by_class = lite_client.post(f"/api/calls/{call.id}/proposals", headers=headers, json={
        **body, "job_plan": {"kind": "sample", "model": ref, "classes": ["texture"]}})
    assert by_class.status_code == 422 and f"{ref} is not class-conditional" in by_class.json()["detail"]
    form = lite_client.get(f"/calls/{call.id}/propose", headers=headers).text
    assert f'<option value="{ref}"' in form and "none: train from scratch" in form
    assert '<option value="skimage-samples@1"' in form

    # The job starts from the base's weights: one step at a negligible learning rate stays on them.
    base, _, _ = load_checkpoint(checkpoint, torch.device("cpu"))
    tuned_plan = TrainConfig.model_validate({**plan, "steps": 1, "learning_rate": 1e-12, "ema_decay": 0})
    train_main(tuned_plan, tmp_path / "tuned", {"base_checkpoint_sha256": checkpoint})
    tuned, _, meta = load_checkpoint(tmp_path / "tuned" / "checkpoint.pt", torch.device("cpu"))
    scratch_plan = tuned_plan.model_copy(update={"base_model": None, "base_checkpoint_sha256": None})
    train_main(scratch_plan, tmp_path / "scratch")
    scratch, _, _ = load_checkpoint(tmp_path / "scratch" / "checkpoint.pt", torch.device("cpu"))
    for (name, a), b in zip(base.state_dict().items(), tuned.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    assert any(not torch.allclose(a, c, atol=1e-3) for a, c in zip(base.state_dict().values(),
                                                                    scratch.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="plan fine-tunes a base model, but its checkpoint was not sent"):
        train_main(tuned_plan, tmp_path / "no-base")

    # Registered, the fine-tune names its parent on its card.
    admin = create_user(lite_session, Role.admin)
    _, run = award(lite_session, admin, _submit(lite_client, headers, made.json()["id"], lite_session))
    run = lite_session.get(Run, run.id)
    archive_outputs(lite_session, lite_settings, run, {name: (tmp_path / "tuned" / name).read_bytes() for name in
                                                       ("checkpoint.pt", "samples.png", "training_images.png",
                                                        "metrics.json", "attribution.json")})
    run.state = RunState.succeeded
    lite_session.add(run)
    lite_session.commit()
    card = lite_client.post("/api/models", headers=auth_headers(lite_session, admin),
                            json={"run_id": run.id, "name": "tiny"}).json()
    assert card["ref"] == "tiny@2" and card["parent"] == ref and card["dataset"] == "skimage-samples@1"
    assert card["dataset_origin"] == "scikit-image sample images"
    page = lite_client.get("/models/tiny/2").text
    assert f"Fine-tuned from <a href=\"/models/tiny/1\">{ref}</a>" in page and "scikit-image sample images" in page


def _submit(client: TestClient, headers: dict[str, str], proposal_id: int, session: Session):
    from service.models import Proposal

    assert client.post(f"/api/proposals/{proposal_id}/submit", headers=headers).status_code == 200
    session.rollback()
    return session.get(Proposal, proposal_id)


def test_the_base_must_have_the_dataset_s_classes(tmp_path: Path) -> None:
    unconditional = TrainConfig.model_validate(TINY_TRAIN)
    train_main(unconditional, tmp_path / "base")
    conditional = TrainConfig.model_validate({**TINY_TRAIN, "conditioning": "class"})
    with pytest.raises(ValueError, match=r"base model's classes \(none\) are not this dataset's \(drawing, photo"):
        load_base(build_unet(conditional, 4), tmp_path / "base" / "checkpoint.pt",
                  ["drawing", "photograph", "scientific", "texture"])


def test_a_class_conditional_model_draws_by_class_and_seed(tmp_path: Path) -> None:
    cfg = TrainConfig.model_validate({**TINY_TRAIN, "conditioning": "class"})
    train_main(cfg, tmp_path / "train")
    checkpoint = tmp_path / "train" / "checkpoint.pt"
    _, _, meta = load_checkpoint(checkpoint, torch.device("cpu"))
    assert meta["classes"] == ["drawing", "photograph", "scientific", "texture"]

    def draw(name: str, **plan) -> torch.Tensor:
        out = tmp_path / name
        sample_main(SampleConfig(checkpoint_sha256="0" * 64, inference_steps=3, **plan), checkpoint, out)
        return torch.from_numpy(np.asarray(Image.open(out / "samples.png"), dtype=np.float32))

    pair = draw("pair", seeds=[3, 4], classes=["texture"])
    alone = draw("alone", seeds=[3], classes=["texture"])
    other = draw("other", seeds=[3], classes=["photograph"])
    side = alone.shape[0]  # the grid of one image is that image (with its border)
    assert torch.equal(pair[:side, :side], alone)  # seed 3 as texture: the same image in any batch
    assert not torch.equal(alone, other)  # the class changes it
    with pytest.raises(ValueError, match="no class 'trees'"):
        draw("unknown", seeds=[1], classes=["trees"])

    train_main(TrainConfig.model_validate(TINY_TRAIN), tmp_path / "plain")
    with pytest.raises(ValueError, match="not class-conditional"):
        sample_main(SampleConfig(checkpoint_sha256="0" * 64, seeds=[1], classes=["texture"]),
                    tmp_path / "plain" / "checkpoint.pt", tmp_path / "x")


def test_sample_plans_name_seeds_consistently() -> None:
    assert SampleConfig(model="tiny@1", seeds=[7, 9]).count == 2
    assert SampleConfig(model="tiny@1", seed=5, count=3).image_seeds == [5, 6, 7]
    with pytest.raises(ValueError, match="count 4 differs from the 2 seeds"):
        SampleConfig(model="tiny@1", seeds=[7, 9], count=4)
    with pytest.raises(ValueError, match="name a model version"):
        SampleConfig()
