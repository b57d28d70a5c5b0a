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
