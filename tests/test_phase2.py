"""Phase II: an awardee's team queues further runs and sweeps on its award, each validated and checked against the
balance before it is queued; what goes beyond the call's limits becomes a change request the committee decides,
audited, the team told."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from service.models import AuditEntry, ChangeRequest, OutboxMessage, Role, Run, RunGroup, RunState
from tests.factories import TINY_TRAIN, auth_headers, award, create_call, create_proposal, create_user


def _awarded(session: Session, hours: float = 2.0):  # noqa: ANN202
    admin = create_user(session, Role.admin)
    pi = create_user(session, name="Ada Lovelace")
    proposal = create_proposal(session, pi, create_call(session, admin), job_plan=dict(TINY_TRAIN),
                               requested_gpu_hours=hours)
    granted, run = award(session, admin, proposal, gpu_hours=hours)
    return granted, run, admin, pi


def test_a_team_queues_a_changed_copy_and_a_sweep_within_its_award(lite_client: TestClient,
                                                                    lite_session: Session) -> None:
    granted, first, _, pi = _awarded(lite_session)
    headers = auth_headers(lite_session, pi)
    before = lite_client.get(f"/api/awards/{granted.id}", headers=headers).json()
    assert before["balance_gpu_hours"] == 2.0 and [r["id"] for r in before["runs"]] == [first.id]
    copy = {**first.job_plan, "steps": 4}
    queued = lite_client.post(f"/api/awards/{granted.id}/runs", headers=headers, json={"job_plan": copy})
    assert queued.status_code == 201, queued.text
    second = lite_session.get(Run, queued.json()["runs"][0]["id"])
    assert second.state == RunState.queued and second.requested_by == pi.id and second.job_plan["steps"] == 4
    assert second.job_plan["dataset_digest"] == first.job_plan["dataset_digest"]  # pinned as at submission
    assert queued.json()["change_request"] is None
    swept = lite_client.post(f"/api/awards/{granted.id}/runs", headers=headers,
                             json={"job_plan": copy, "sweep": {"field": "seed", "values": [1, 2, 3]}})
    assert swept.status_code == 201, swept.text
    lite_session.commit()  # a fresh look at what the portal wrote
    group = lite_session.get(RunGroup, swept.json()["sweep_id"])
    assert group.kind == "sweep" and group.field == "seed" and len(swept.json()["runs"]) == 3
    compared = lite_client.get(f"/api/sweeps/{group.id}", headers=headers).json()
    assert [(row["value"], lite_session.get(Run, row["run"]["id"]).job_plan["seed"]) for row in compared["rows"]] \
        == [(1, 1), (2, 2), (3, 3)]
    after = lite_client.get(f"/api/awards/{granted.id}", headers=headers).json()
    assert len(after["runs"]) == 5 and after["committed_gpu_hours"] > before["committed_gpu_hours"]
    lite_session.commit()
    entry = lite_session.exec(select(AuditEntry).where(AuditEntry.action == "phase2.queue")
                              .order_by(AuditEntry.id.desc())).first()
    assert entry.detail["sweep"] == group.id and len(entry.detail["runs"]) == 3


def test_plans_are_checked_before_anything_is_queued(lite_client: TestClient, lite_session: Session) -> None:
    granted, first, _, pi = _awarded(lite_session, hours=0.5)
    headers = auth_headers(lite_session, pi)
    url = f"/api/awards/{granted.id}/runs"
    bad = lite_client.post(url, headers=headers, json={"job_plan": {**first.job_plan, "resolution": 17}})
    assert bad.status_code == 422 and "resolution" in bad.json()["detail"]
    long = lite_client.post(url, headers=headers, json={"job_plan": {**first.job_plan, "steps": 200_000,
                                                                     "block_out_channels": [64, 128]}})
    assert long.status_code == 409 and "GPU-hours left beyond the runs it has queued" in long.json()["detail"]
    sweep = lite_client.post(url, headers=headers, json={"job_plan": first.job_plan,
                                                         "sweep": {"field": "colour", "values": [1, 2]}})
    assert sweep.status_code == 422 and "'colour' is not a field of a train plan" in sweep.json()["detail"]
    one_bad = lite_client.post(url, headers=headers, json={"job_plan": first.job_plan,
                                                           "sweep": {"field": "resolution", "values": [8, 17]}})
    assert one_bad.status_code == 422 and "sweep value 2" in one_bad.json()["detail"]
    stranger = create_user(lite_session)
    assert lite_client.post(url, headers=auth_headers(lite_session, stranger),
                            json={"job_plan": first.job_plan}).status_code == 404
    lite_session.commit()
    assert lite_session.exec(select(Run.id).where(Run.award_id == granted.id)).all() == [first.id]  # none queued


def test_a_change_beyond_the_calls_limits_goes_to_the_committee(lite_client: TestClient,
                                                                 lite_session: Session) -> None:
    granted, first, admin, pi = _awarded(lite_session)
    headers = auth_headers(lite_session, pi)
    plan = {"kind": "descriptor", "dataset": first.job_plan["dataset"], "steps": 2, "batch_size": 8}
    url = f"/api/awards/{granted.id}/runs"
    unexplained = lite_client.post(url, headers=headers, json={"job_plan": plan})
    assert unexplained.status_code == 422
    assert "another job kind: descriptor (the proposal's is train)" in unexplained.json()["detail"]
    filed = lite_client.post(url, headers=headers, json={"job_plan": plan, "reason": "a copy descriptor for ours"})
    assert filed.status_code == 201 and filed.json()["runs"] == []
    change = filed.json()["change_request"]
    assert change["state"] == "pending" and change["beyond"] == ["another job kind: descriptor (the proposal's is "
                                                                  "train)"]
    decision = f"/api/change-requests/{change['id']}/decision"
    assert lite_client.post(decision, headers=headers, json={"approve": True}).status_code == 403
    assert [c["id"] for c in lite_client.get("/api/change-requests?pending=true",
                                             headers=auth_headers(lite_session, admin)).json()] == [change["id"]]
    approved = lite_client.post(decision, headers=auth_headers(lite_session, admin),
                                json={"approve": True, "note": "fine"})
    assert approved.status_code == 200 and approved.json()["state"] == "approved"
    lite_session.commit()
    made = lite_session.get(Run, approved.json()["run_ids"][0])
    assert made.job_kind == "descriptor" and made.state == RunState.queued and made.requested_by == pi.id
    assert lite_client.post(decision, headers=auth_headers(lite_session, admin),
                            json={"approve": False}).status_code == 409  # decided once
    lite_session.commit()
    actions = [e.action for e in lite_session.exec(select(AuditEntry).where(
        AuditEntry.subject == f"change:{change['id']}").order_by(AuditEntry.id))]
    assert actions == ["change.request", "change.approve"]
    told = lite_session.exec(select(OutboxMessage).where(OutboxMessage.subject.like("Change request approved%")))
    assert [m.to_address for m in told] == [pi.email]
    # More than the call's share of the award on one run needs the committee too.
    big = lite_client.post(url, headers=headers, json={"job_plan": {**first.job_plan, "steps": 120_000,
                                                                    "block_out_channels": [64, 128]}})
    assert big.status_code == 422 and "more than 50% of the award's 2" in big.json()["detail"], big.text
    lite_session.commit()
    assert [c.state for c in lite_session.exec(select(ChangeRequest))] == ["approved"]  # nothing filed
