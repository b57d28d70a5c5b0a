"""Withdrawn images: recorded by admins, traced to the versions that trained on them, and honoured by rebuilding a
family: only the expert whose cluster held them and the router train again, the next version is registered without
them, and the old version's weights are served to admins alone."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

import jobs.partition as partition_format
from service.archive.service import read_object, store_for
from service.datasets import partitions
from service.datasets.service import find
from service.errors import DomainError
from service.modelcards import families
from service.modelcards import service as models
from service.models import Role, Run, RunGroup, RunState
from service.proposals.service import validate_job_plan
from tests.factories import TINY_TRAIN, archive_outputs, auth_headers, award, create_call, create_proposal, create_user

PNG = b"\x89PNG\r\n\x1a\n"


def _finish(session: Session, settings, run: Run, records: list[dict], withdrawn: set[str]) -> None:  # type: ignore[no-untyped-def]
    """The run as its job would end it: an expert's attribution lists its cluster's images, less the withdrawn."""
    if run.job_kind == "router":
        files = {"router.pt": b"router %d" % run.id, "accuracy.png": PNG,
                 "metrics.json": json.dumps({"accuracy_by_noise_decile": [0.8] * 10, "chance": 0.4}).encode()}
    else:
        mine = [r for n, r in enumerate(records) if n % 3 == run.job_plan["cluster"]
                and r["image_sha256"] not in withdrawn]
        files = {"checkpoint.pt": b"expert %d" % run.id, "samples.png": PNG, "training_images.png": PNG,
                 "metrics.json": b"{}", "attribution.json": json.dumps({"images": mine}).encode()}
    archive_outputs(session, settings, run, files)
    run.state = RunState.succeeded
    session.add(run)
    session.commit()


def test_three_withdrawn_images_in_one_cluster_retrain_one_expert_and_the_router(
        lite_session: Session, lite_settings, lite_client: TestClient) -> None:
    store = store_for(lite_settings)
    version = find(lite_session, "skimage-samples")
    records = partitions.manifest_records(store, version)
    assignment = {r["image_sha256"]: n % 3 for n, r in enumerate(records)}
    made = {"dataset_digest": version.digest, "k": 3, "seed": 0, "assignment": assignment,
            "digest": partition_format.digest_of(version.digest, 3, 0, assignment)}
    partitions.register(lite_session, store, version, partition_format.encode(made))
    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    _, first = award(lite_session, admin, create_proposal(lite_session, pi, create_call(lite_session, admin),
                                                          job_plan={**TINY_TRAIN, "dataset": "skimage-samples",
                                                                    "experts": 3}))
    old_group = lite_session.get(Run, first.id).group_id
    old_runs = list(lite_session.exec(select(Run).where(Run.group_id == old_group).order_by(Run.id)))
    for run in old_runs:
        _finish(lite_session, lite_settings, run, records, set())
    fam1 = families.register_family(lite_session, store, actor=admin, group_id=old_group, name="fam")
    lite_session.commit()

    # Three images of cluster 1 are withdrawn, one of them by its Commons page id where it has one.
    admin_headers, pi_headers = auth_headers(lite_session, admin), auth_headers(lite_session, pi)
    gone = [r for n, r in enumerate(records) if n % 3 == 1][:3]
    assert lite_client.post("/api/withdrawals", headers=pi_headers, json={
        "image_sha256": gone[0]["image_sha256"], "reason": "deleted"}).status_code == 403
    for record in gone:
        answer = lite_client.post("/api/withdrawals", headers=admin_headers, json={
            "image_sha256": record["image_sha256"], "reason": "author_request", "note": "by mail"})
        assert answer.status_code == 201, answer.text
    assert lite_client.post("/api/withdrawals", headers=admin_headers, json={
        "image_sha256": "0" * 64, "reason": "deleted"}).status_code == 404
    assert lite_client.post("/api/withdrawals", headers=admin_headers, json={"reason": "deleted"}).status_code == 422
    listed = lite_client.get("/api/withdrawals", headers=admin_headers).json()
    assert len(listed["withdrawals"]) == 3
    assert listed["affected"] == [{"model": "fam@1", "images": 3, "clusters": [1]}]

    # One action rebuilds: exactly one expert (cluster 1) and the router train again.
    rebuilt = lite_client.post("/api/models/fam/1/rebuild", headers=admin_headers)
    assert rebuilt.status_code == 202, rebuilt.text
    group = lite_session.get(RunGroup, rebuilt.json()["family_id"])
    new_runs = list(lite_session.exec(select(Run).where(Run.group_id == group.id).order_by(Run.id)))
    assert [(r.job_kind, r.job_plan.get("cluster")) for r in new_runs] == [("train", 1), ("router", None)]
    withdrawn = {r["image_sha256"] for r in gone}
    assert all(set(r.job_plan["withdrawn_images"]) == withdrawn for r in new_runs)
    assert sorted(group.kept) == ["0", "2"]
    assert lite_client.post("/api/models/fam/1/rebuild", headers=admin_headers).json()["family_id"] == group.id
    assert families.finish_rebuild(lite_session, store, group.id) is None  # not done yet
    for run in new_runs:
        _finish(lite_session, lite_settings, run, records, withdrawn)
    fam2 = families.finish_rebuild(lite_session, store, group.id)
    lite_session.commit()

    # fam@2: the kept experts as they were, the new expert and router; no trace of the withdrawn images.
    assert (fam2.name, fam2.version, fam2.images) == ("fam", 2, len(records) - 3)
    experts = {e["cluster"]: e["run_id"] for e in fam2.family["experts"]}
    assert experts == {0: old_runs[0].id, 1: new_runs[0].id, 2: old_runs[2].id}
    attribution = read_object(store, fam2.attribution_sha256).decode()
    card = lite_client.get("/api/models/fam/2").text + lite_client.get("/models/fam/2").text
    for image in withdrawn:
        assert image not in attribution and image not in card
    # fam@1 is withdrawn, says why and by what it was replaced; its weights go to admins alone.
    lite_session.refresh(fam1)
    assert fam1.withdrawn_at is not None and fam1.replaced_by_id == fam2.id
    old_card = lite_client.get("/api/models/fam/1").json()
    assert old_card["replaced_by"] == "fam@2" and "3 withdrawn image(s) (3 author_request)" in old_card[
        "withdrawn_reason"]
    assert "Withdrawn" in lite_client.get("/models/fam/1").text
    # Once the exclusive period is over anyone may download a run's outputs, but not withdrawn weights.
    from datetime import timedelta

    from service.models import Award
    from service.timeutil import utcnow

    held = lite_session.get(Award, old_runs[0].award_id)
    held.exclusive_until = utcnow() - timedelta(days=1)
    lite_session.add(held)
    lite_session.commit()
    for run, name, expected in ((old_runs[1], "checkpoint.pt", 403), (old_runs[3], "router.pt", 403),
                                (old_runs[0], "checkpoint.pt", 200), (old_runs[1], "samples.png", 200)):
        url = f"/api/runs/{run.id}/artifacts/{name}"
        for headers in (pi_headers, {}):
            got = lite_client.get(url, headers=headers)
            assert got.status_code == expected, (run.id, name, got.text)
        assert lite_client.get(url, headers=admin_headers).status_code == 200
    assert "withheld: fam@1 was withdrawn" in lite_client.get(
        f"/api/runs/{old_runs[1].id}/artifacts/checkpoint.pt").json()["detail"]
    # Nobody samples the withdrawn version; its replacement is sampled whole.
    with pytest.raises(DomainError, match="withdrawn"):
        validate_job_plan(lite_session, pi, {"kind": "sample", "model": "fam@1"})
    plan = validate_job_plan(lite_session, pi, {"kind": "sample", "model": "fam@2"})
    assert plan.expert_checkpoints[1] != fam1.family["experts"][1]["checkpoint_sha256"]
    assert models.find(lite_session, "fam").version == 2
    # Every new training plan leaves out what was withdrawn, and the job does.
    from jobs import dataset as job_dataset

    fresh = validate_job_plan(lite_session, pi, {**TINY_TRAIN, "dataset": "skimage-samples"})
    assert set(fresh.withdrawn_images) == withdrawn
    later = award(lite_session, admin, create_proposal(lite_session, pi, create_call(lite_session, admin), job_plan={
        **TINY_TRAIN, "dataset": "skimage-samples", "experts": 3}))[1]
    later_runs = lite_session.exec(select(Run).where(Run.group_id == lite_session.get(Run, later.id).group_id)).all()
    assert len(later_runs) == 4 and all(set(r.job_plan["withdrawn_images"]) == withdrawn for r in later_runs)
    loaded = job_dataset.load({}, None, 8, name="skimage-samples", withdrawn=withdrawn)
    assert len(loaded.entries) == len(records) - 3 and not withdrawn & {e["image_sha256"] for e in loaded.entries}
