"""A family of experts as an award's run group: one expert run per cluster of the dataset's partition and a router
run, each an ordinary run; the plan refused with a reason when its partition is missing or does not fit."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

import jobs.partition as partition_format
from jobs.config import TrainConfig, estimated_seconds
from scheduler.loop import Scheduler
from service.archive.service import store_for
from service.datasets import partitions
from service.datasets.pinning import run_inputs
from service.datasets.service import find
from service.errors import DomainError
from service.models import Role, Run, RunGroup
from tests.factories import TINY_TRAIN, award, create_call, create_proposal, create_user
from tests.pools import ScriptedPool


def _partition(session: Session, settings, k: int, seed: int = 0):  # type: ignore[no-untyped-def]
    store = store_for(settings)
    version = find(session, "skimage-samples")
    records = partitions.manifest_records(store, version)
    assignment = {r["image_sha256"]: index % k for index, r in enumerate(records)}
    made = {"dataset_digest": version.digest, "k": k, "seed": seed, "assignment": assignment,
            "digest": partition_format.digest_of(version.digest, k, seed, assignment)}
    found = partitions.register(session, store, version, partition_format.encode(made))
    session.commit()
    return found


def test_a_family_award_holds_an_expert_per_cluster_and_a_router(lite_engine, lite_session: Session,
                                                                 lite_settings) -> None:
    found = _partition(lite_session, lite_settings, 3, seed=4)
    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    call = create_call(lite_session, admin)
    plan = {**TINY_TRAIN, "dataset": "skimage-samples", "experts": 3, "partition_seed": 4}
    _, first = award(lite_session, admin, create_proposal(lite_session, pi, call, job_plan=plan))
    runs = list(lite_session.exec(select(Run).where(Run.award_id == first.award_id).order_by(Run.id)))
    (group,) = lite_session.exec(select(RunGroup)).all()
    assert (group.k, group.partition, group.dataset) == (3, found.digest, "skimage-samples@1")
    assert [r.job_kind for r in runs] == ["train"] * 3 + ["router"] and {r.group_id for r in runs} == {group.id}
    assert [r.job_plan["cluster"] for r in runs[:3]] == [0, 1, 2]
    assert all(r.job_plan["partition"] == found.digest for r in runs)
    router = runs[3].job_plan
    assert (router["resolution"], router["num_train_timesteps"], router["partition_sha256"]) == (
        TINY_TRAIN["resolution"], TINY_TRAIN["num_train_timesteps"], found.file_sha256)
    for run in runs:
        assert run_inputs(lite_session, run)["partition_sha256"] == found.file_sha256
    # Each is placed like any run: four jobs for the pool.
    pool = ScriptedPool()
    assert Scheduler(lite_engine, lite_settings, pool).dispatch() == 4
    assert sorted(r.metadata["run_id"] for r in pool.requests) == sorted(str(r.id) for r in runs)
    # A family's estimate counts every expert and the router.
    single = estimated_seconds(TrainConfig.model_validate(TINY_TRAIN))
    assert estimated_seconds(TrainConfig.model_validate(plan)) > 3 * single


def test_a_family_plan_needs_its_partition_and_no_twin(lite_session: Session, lite_settings) -> None:
    _partition(lite_session, lite_settings, 2)
    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    call = create_call(lite_session, admin)
    base = {**TINY_TRAIN, "dataset": "skimage-samples", "experts": 2}
    for changes, says in (({"experts": 3}, "no partition into 3 clusters with seed 0"),
                          ({"partition_seed": 9}, "no partition into 2 clusters with seed 9"),
                          ({"partition": "sha256:" + "9" * 64}, "is sha256:"),
                          ({"leave_out_authors": ["someone"]}, "leave-out twin")):
        with pytest.raises(DomainError, match=says):
            create_proposal(lite_session, pi, call, job_plan={**base, **changes})
        lite_session.rollback()


def test_the_family_page_and_api_show_every_member_to_its_team_alone(lite_engine, lite_session: Session,
                                                                     lite_settings, lite_client) -> None:
    from tests.factories import PASSWORD, auth_headers, post_form

    found = _partition(lite_session, lite_settings, 2)
    admin, pi, stranger = create_user(lite_session, Role.admin), create_user(lite_session), create_user(lite_session)
    plan = {**TINY_TRAIN, "dataset": "skimage-samples", "experts": 2}
    _, first = award(lite_session, admin, create_proposal(lite_session, pi, create_call(lite_session, admin),
                                                          job_plan=plan))
    group_id = lite_session.get(Run, first.id).group_id
    family = lite_client.get(f"/api/families/{group_id}", headers=auth_headers(lite_session, pi))
    assert family.status_code == 200, family.text
    body = family.json()
    assert [(m["role"], m["cluster"], m["images"]) for m in body["members"]] == [
        ("expert", 0, found.sizes[0]), ("expert", 1, found.sizes[1]), ("router", None, sum(found.sizes))]
    assert body["partition"] == found.digest and body["progress"] == 0
    for who, expected in ((stranger, 404), (admin, 200)):
        assert lite_client.get(f"/api/families/{group_id}", headers=auth_headers(lite_session, who)
                               ).status_code == expected
    assert lite_client.get(f"/api/families/{group_id}").status_code == 401
    assert lite_client.get("/api/families/99999999999").status_code in (401, 422)
    signed_in = post_form(lite_client, "/login", {"email": pi.email, "password": PASSWORD, "next": "/"},
                          follow_redirects=False)
    assert signed_in.status_code == 303
    page = lite_client.get(f"/families/{group_id}")
    assert page.status_code == 200 and "expert 1" in page.text and "router" in page.text
    run_page = lite_client.get(f"/runs/{first.id}")
    assert f'href="/families/{group_id}"' in run_page.text and "expert 0 of family" in run_page.text


def _finish(session: Session, settings, run: Run, files: dict[str, bytes]) -> None:  # type: ignore[no-untyped-def]
    from tests.factories import archive_outputs

    archive_outputs(session, settings, run, files)
    run.state = "succeeded"
    session.add(run)
    session.commit()


def test_a_finished_family_registers_as_one_version_that_sampling_takes_whole(lite_session: Session, lite_settings,
                                                                             lite_client) -> None:
    import json

    from service.proposals.service import validate_job_plan
    from tests.factories import auth_headers

    found = _partition(lite_session, lite_settings, 2)
    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    plan = {**TINY_TRAIN, "dataset": "skimage-samples", "experts": 2}
    _, first = award(lite_session, admin, create_proposal(lite_session, pi, create_call(lite_session, admin),
                                                          job_plan=plan))
    group_id = lite_session.get(Run, first.id).group_id
    runs = list(lite_session.exec(select(Run).where(Run.group_id == group_id).order_by(Run.id)))
    records = partitions.manifest_records(store_for(lite_settings), find(lite_session, "skimage-samples"))
    headers = auth_headers(lite_session, admin)
    for index, run in enumerate(runs[:2]):
        mine = [r for n, r in enumerate(records) if n % 2 == index]
        _finish(lite_session, lite_settings, run, {
            "checkpoint.pt": b"expert %d" % index, "samples.png": b"\x89PNG\r\n\x1a\n", "metrics.json": b"{}",
            "training_images.png": b"\x89PNG\r\n\x1a\n",
            "attribution.json": json.dumps({"dataset": "skimage-samples@1", "images": mine}).encode()})
    early = lite_client.post("/api/models", headers=headers, json={"family_id": group_id, "name": "fam"})
    assert early.status_code == 409 and f"run {runs[2].id} is queued" in early.json()["detail"]
    _finish(lite_session, lite_settings, runs[2], {
        "router.pt": b"router", "accuracy.png": b"\x89PNG\r\n\x1a\n",
        "metrics.json": json.dumps({"accuracy_by_noise_decile": [0.9] + [0.5] * 9, "chance": 0.5}).encode()})
    both = lite_client.post("/api/models", headers=headers, json={"family_id": group_id, "run_id": runs[0].id,
                                                                  "name": "fam"})
    assert both.status_code == 422
    from tests.factories import PASSWORD, post_form

    assert post_form(lite_client, "/login", {"email": admin.email, "password": PASSWORD, "next": "/"},
                     follow_redirects=False).status_code == 303
    assert 'id="register-family"' in lite_client.get(f"/families/{group_id}").text
    lite_client.cookies.clear()
    made = lite_client.post("/api/models", headers=headers, json={"family_id": group_id, "name": "fam"})
    assert made.status_code == 201, made.text
    card = made.json()
    assert card["ref"] == "fam@1" and card["images"] == len(records) and card["family"]["k"] == 2
    assert [e["images"] for e in card["family"]["experts"]] == found.sizes
    assert card["family"]["router"]["accuracy_by_noise_decile"][0] == 0.9
    assert lite_client.post("/api/models", headers=headers, json={"family_id": group_id, "name": "fam"}
                            ).status_code == 409
    page = lite_client.get("/models/fam/1")
    assert page.status_code == 200 and "A family of 2 experts" in page.text and "cluster 1" in page.text
    # Sampling the family takes every expert and the router; so do its analyses, whole or one expert against its
    # own cluster; a family minus one expert is an ablation's twin. Fine-tunes refuse it.
    checkpoints = [e["checkpoint_sha256"] for e in card["family"]["experts"]]
    sample = validate_job_plan(lite_session, pi, {"kind": "sample", "model": "fam@1", "count": 2})
    assert sample.expert_checkpoints == checkpoints
    assert sample.router_sha256 == card["family"]["router"]["sha256"]
    whole = validate_job_plan(lite_session, pi, {"kind": "quality", "model": "fam@1"})
    assert whole.expert_checkpoints == checkpoints and whole.router_sha256 == card["family"]["router"]["sha256"]
    assert whole.partition == found.digest and whole.partition_sha256 == found.file_sha256
    one = validate_job_plan(lite_session, pi, {"kind": "replication", "model": "fam@1", "expert": 1})
    assert (one.checkpoint_sha256, one.expert_checkpoints, one.router_sha256) == (checkpoints[1], [], None)
    assert one.partition == found.digest and one.subject == "expert 1 of fam@1"
    twin = validate_job_plan(lite_session, pi, {"kind": "ablation", "with_model": "fam@1", "without_expert": 0})
    assert twin.expert_checkpoints == checkpoints and twin.without_checkpoint_sha256 is None
    assert twin.twin == "fam@1 without expert 0" and twin.dataset == "skimage-samples@1"
    for refused in ({"kind": "replication", "model": "fam@1", "expert": 2},
                    {"kind": "ablation", "with_model": "fam@1", "without_expert": 2},
                    {"kind": "ablation", "with_model": "fam@1"},
                    {**TINY_TRAIN, "base_model": "fam@1"},
                    {"kind": "sample", "checkpoint_sha256": "a" * 64, "router_sha256": "b" * 64}):
        with pytest.raises(DomainError):
            validate_job_plan(lite_session, pi, refused)
    # Nobody points a job at checkpoints by hand: what a plan says of a family's files is replaced when pinned.
    forged = validate_job_plan(lite_session, pi, {"kind": "quality", "run": runs[0].id,
                                                   "expert_checkpoints": ["f" * 64], "router_sha256": "f" * 64})
    assert (forged.expert_checkpoints, forged.router_sha256, forged.partition) == ([], None, None)
    with pytest.raises(DomainError, match="family's model version"):
        validate_job_plan(lite_session, pi, {"kind": "quality", "run": runs[0].id, "expert": 0})
    # The family's page shows the router's accuracy by noise level, its version and the analyses of it.
    _, searched = award(lite_session, admin, create_proposal(lite_session, pi, create_call(lite_session, admin),
                                                             job_plan={"kind": "replication", "model": "fam@1",
                                                                       "expert": 1, "samples": 4}))
    api = lite_client.get(f"/api/families/{group_id}", headers=headers).json()
    assert api["router_accuracy"][0] == 0.9 and api["chance"] == 0.5 and api["versions"] == ["fam@1"]
    assert post_form(lite_client, "/login", {"email": admin.email, "password": PASSWORD, "next": "/"},
                     follow_redirects=False).status_code == 303
    page = lite_client.get(f"/families/{group_id}").text
    assert 'id="router-accuracy"' in page and page.count("<rect x=") == 10 and "Lowest noise: 90%" in page
    assert 'href="/models/fam/1"' in page and f'href="/runs/{searched.id}"' in page and "(expert 1)" in page
