"""The leave-out ablation: an award trains a plan's twin without some authors, with the same seeds; the ablation
analysis compares the twins against the left-out images and a control neither saw, with bootstrap intervals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from jobs.analysis.ablation import main as ablation_main
from jobs.config import AblationConfig, TrainConfig
from jobs.dataset import local_inputs
from jobs.train import main as train_main
from service.models import Role, Run
from tests.factories import TINY_TRAIN, auth_headers, award, create_call, create_proposal, create_user, registered_model

PLAN = {**TINY_TRAIN, "resolution": 16, "exclude_authors": ["Lav Varshney"],
        "leave_out_authors": ["Stefan van der Walt"]}


def test_an_award_trains_the_plan_and_its_twin(lite_session: Session, lite_client: TestClient) -> None:
    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    call = create_call(lite_session, admin)
    _, first = award(lite_session, admin, create_proposal(lite_session, pi, call, job_plan=PLAN))
    runs = lite_session.exec(select(Run).where(Run.award_id == first.award_id).order_by(Run.id)).all()
    assert [r.job_plan["exclude_authors"] for r in runs] == [["Lav Varshney"], ["Lav Varshney", "Stefan van der Walt"]]
    assert all(r.job_plan["leave_out_authors"] == [] for r in runs)
    assert {key: value for key, value in runs[0].job_plan.items() if key != "exclude_authors"} == \
        {key: value for key, value in runs[1].job_plan.items() if key != "exclude_authors"}  # seeds and all
    refused = lite_client.post(f"/api/calls/{call.id}/proposals", headers=auth_headers(lite_session, pi), json={
        "title": "t", "abstract": "a", "justification": "j", "requested_gpu_hours": 1, "submit": False,
        "job_plan": {**PLAN, "leave_out_authors": ["Nobody"]}})
    assert refused.status_code == 422 and "leave_out_authors: no image" in refused.json()["detail"]


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("twins")
    seen = TrainConfig.model_validate({**PLAN, "leave_out_authors": []})
    twin = seen.model_copy(update={"exclude_authors": ["Lav Varshney", "Stefan van der Walt"]})
    train_main(seen, out / "with")
    train_main(twin, out / "without")
    return {"with": out / "with" / "checkpoint.pt", "without": out / "without" / "checkpoint.pt"}


def test_the_ablation_gives_intervals_a_sentence_and_the_same_bytes_for_the_same_seed(
        twins: dict[str, Path], tmp_path: Path) -> None:
    inputs = local_inputs("skimage-samples", tmp_path / "package")
    cfg = AblationConfig(with_model="tiny@1", without_model="tiny@2", samples=6, inference_steps=3, bootstrap=200,
                         left_out=["Stefan van der Walt"], control=["Lav Varshney"])
    results = ablation_main(cfg, twins, inputs, tmp_path / "a")
    ablation_main(cfg, twins, inputs, tmp_path / "b")
    digests = {n: hashlib.sha256((tmp_path / n / "results.json").read_bytes()).hexdigest() for n in "ab"}
    assert digests["a"] == digests["b"]
    assert results["dataset"]["left_out_images"] == 1 and results["dataset"]["control_images"] == 1
    assert all(score["low"] <= score["high"] for score in results["scores"].values())
    effect = results["scores"]["effect"]
    s = results["scores"]
    assert effect["value"] == pytest.approx((s["left_with"]["value"] - s["control_with"]["value"])
                                            - (s["left_without"]["value"] - s["control_without"]["value"]), abs=1e-5)
    assert "Stefan van der Walt" in results["sentence"] and "95% interval" in results["sentence"]
    page = (tmp_path / "a" / "report.html").read_text()
    assert 'id="sentence"' in page and "closeness with 95% intervals" in page and "<script" not in page


def _registered(client: TestClient, session: Session, settings, checkpoint: Path, plan: dict, admin) -> str:
    return registered_model(client, session, settings, admin, checkpoint.read_bytes(), plan, name="twin")[0]


def test_an_ablation_plan_names_twins_trained_alike(lite_client: TestClient, lite_session: Session, lite_settings,
                                                    twins: dict[str, Path]) -> None:
    admin = create_user(lite_session, Role.admin)
    seen_plan = {**PLAN, "leave_out_authors": []}
    seen = _registered(lite_client, lite_session, lite_settings, twins["with"], seen_plan, admin)
    twin = _registered(lite_client, lite_session, lite_settings, twins["without"],
                       {**seen_plan, "exclude_authors": ["Lav Varshney", "Stefan van der Walt"]}, admin)
    other = _registered(lite_client, lite_session, lite_settings, twins["without"], {**seen_plan, "steps": 3}, admin)
    researcher = create_user(lite_session)
    call = create_call(lite_session, admin)
    headers = auth_headers(lite_session, researcher)
    body = {"title": "t", "abstract": "a", "justification": "j", "requested_gpu_hours": 1, "submit": False}

    def propose(**plan):  # type: ignore[no-untyped-def]
        return lite_client.post(f"/api/calls/{call.id}/proposals", headers=headers,
                                json={**body, "job_plan": {"kind": "ablation", **plan}})

    made = propose(with_model=seen, without_model=twin)
    assert made.status_code == 201, made.text
    plan = made.json()["job_plan"]
    assert plan["left_out"] == ["Stefan van der Walt"] and plan["control"] == ["Lav Varshney"]
    assert plan["dataset"] == "skimage-samples@1"
    assert plan["with_checkpoint_sha256"] != plan["without_checkpoint_sha256"]
    for refused, message in [(propose(with_model=seen, without_model=seen), "two different model versions"),
                             (propose(with_model=twin, without_model=seen), "must leave out every author"),
                             (propose(with_model=seen, without_model=other), "differ in steps")]:
        assert refused.status_code == 422 and message in refused.json()["detail"], refused.text


def test_a_class_can_be_left_out_like_an_author(lite_client: TestClient, lite_session: Session, lite_settings,
                                                twins: dict[str, Path], tmp_path: Path) -> None:
    """The subset a twin leaves out may be a class (a Commons category) as well as an author: the award trains the
    twin without it, the ablation plan pins it, and the analysis compares the twins on that class's images."""
    from jobs.dataset import load

    plan = {**TINY_TRAIN, "resolution": 16, "exclude_classes": ["drawing"], "leave_out_classes": ["texture"]}
    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    call = create_call(lite_session, admin)
    _, first = award(lite_session, admin, create_proposal(lite_session, pi, call, job_plan=plan))
    runs = lite_session.exec(select(Run).where(Run.award_id == first.award_id).order_by(Run.id)).all()
    assert [r.job_plan["exclude_classes"] for r in runs] == [["drawing"], ["drawing", "texture"]]
    everything = load({}, None, 16, name="skimage-samples", conditional=True)
    twin_data = load({}, None, 16, name="skimage-samples", conditional=True, exclude_classes=["Drawing", "texture"])
    left = {e["title"] for e in everything.entries} - {e["title"] for e in twin_data.entries}
    assert left and all(e["class"] in ("drawing", "texture") for e in everything.entries if e["title"] in left)
    assert twin_data.classes == everything.classes  # a conditional twin keeps every class's embedding
    refused = lite_client.post(f"/api/calls/{call.id}/proposals", headers=auth_headers(lite_session, pi), json={
        "title": "t", "abstract": "a", "justification": "j", "requested_gpu_hours": 1, "submit": False,
        "job_plan": {**plan, "leave_out_classes": ["portraits"]}})
    assert refused.status_code == 422 and "leave_out_classes: no image" in refused.json()["detail"]
    assert "its classes are drawing, photograph, scientific, texture" in refused.json()["detail"]

    seen_plan = {**plan, "leave_out_classes": []}
    seen = _registered(lite_client, lite_session, lite_settings, twins["with"], seen_plan, admin)
    twin = _registered(lite_client, lite_session, lite_settings, twins["without"],
                       {**seen_plan, "exclude_classes": ["drawing", "texture"]}, admin)
    made = lite_client.post(f"/api/calls/{call.id}/proposals", headers=auth_headers(lite_session, pi), json={
        "title": "t", "abstract": "a", "justification": "j", "requested_gpu_hours": 1, "submit": False,
        "job_plan": {"kind": "ablation", "with_model": seen, "without_model": twin}})
    assert made.status_code == 201, made.text
    pinned = made.json()["job_plan"]
    assert (pinned["left_out_classes"], pinned["control_classes"]) == (["texture"], ["drawing"])
    assert pinned["left_out"] == [] and pinned["control"] == []
    results = ablation_main(AblationConfig.model_validate({**pinned, "samples": 4, "inference_steps": 2,
                                                           "bootstrap": 100}), twins,
                            local_inputs("skimage-samples", tmp_path / "package"), tmp_path / "a")
    textures = sum(e["class"] == "texture" for e in everything.entries)
    assert results["dataset"]["left_out_images"] == textures and "class texture" in results["sentence"]
